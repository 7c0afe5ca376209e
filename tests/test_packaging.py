"""What a plain ``pip install dicc`` gets: the base dependencies cover everything the
main jobs import (``dicc predict photo.jpg``, ``dicc predict clip.mp4``, ``Recognizer.load()``),
optional pieces are extras whose names the error messages give, and the wheel carries the
bundled model, its card and the sample photo (``.ci/run`` also builds the wheel and checks it)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ASSETS = ROOT / "src" / "dicc" / "assets"
SAMPLE = ASSETS / "sample_face.jpg"


def _name(req: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(req).name.lower().replace("_", "-")


def _closure(names) -> set[str]:
    """The distributions ``names`` need as installed here, recursively (markers evaluated; no
    extras): what a plain install of them brings."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    todo, seen = [n.lower().replace("_", "-") for n in names], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for text in reqs:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name.lower().replace("_", "-"))
    return seen


# what the subprocess runs: the main jobs, then the distributions of every module they imported
# beyond what the interpreter had loaded before dicc was imported
_PROBE = """
import sys, json
before = set(sys.modules)
from dicc.cli import main
codes = [main(["predict", sys.argv[1], "--json"]), main(["predict", sys.argv[2], "--json"])]
import dicc
dicc.Recognizer.load()
import importlib.metadata as md
owners = md.packages_distributions()
tops = {m.split(".")[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)
print(json.dumps({"codes": codes, "dists": sorted({d for t in tops for d in owners.get(t, [])})}))
"""


def test_base_dependencies_cover_what_the_main_jobs_import(tmp_path):
    cv2 = pytest.importorskip("cv2")
    frame = cv2.imread(str(SAMPLE))
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (frame.shape[1], frame.shape[0]))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(SAMPLE), str(clip)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0]
    imported = {d.lower().replace("_", "-") for d in result["dists"]} - {"dicc"}
    base = [_name(r) for r in PYPROJECT["project"]["dependencies"]]
    assert "opencv-python-headless" in imported  # the check sees the imports that matter
    missing = sorted(imported - _closure(base))
    assert not missing, f"imported by the main jobs but not brought by the base dependencies: {missing}"


def test_optional_pieces_stay_extras_and_the_messages_name_real_ones():
    base = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    for heavy in ("onnx", "timm", "facenet-pytorch", "tensorboard"):
        assert heavy not in base, heavy
    # onnxruntime runs the bundled model's default path: a base dependency now
    assert "opencv-python-headless" in base and "onnxruntime" in base
    # every `dicc[extra]` a message or the README names exists, and [dev] holds every extra
    named = set()
    for path in [*(ROOT / "src").rglob("*.py"), ROOT / "README.md"]:
        named |= set(re.findall(r"dicc\[([a-z_]+)\]", path.read_text()))
    assert named and named <= set(extras), named - set(extras)
    dev = {_name(r) for r in extras["dev"]}
    for name, reqs in extras.items():
        assert {_name(r) for r in reqs} <= dev, name
    assert "build" in dev


def test_onnx_model_without_onnxruntime_names_the_package(tmp_path, capsys, monkeypatch):
    from dicc.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as in a base install: not importable
    (tmp_path / "m.onnx").write_bytes(b"")
    assert main(["predict", str(tmp_path / "m.onnx"), str(SAMPLE)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dicc predict: error: ") and "pip install onnxruntime" in err[0]


def test_license_is_an_spdx_expression_and_the_wheel_takes_the_assets():
    project = PYPROJECT["project"]
    assert isinstance(project["license"], str) and project["license"] == "MIT"
    assert all((ROOT / f).is_file() for f in project["license-files"])
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["dicc"]
    pkg = ROOT / "src" / "dicc"
    shipped = {p.relative_to(pkg).as_posix() for pat in patterns for p in pkg.glob(pat)}
    for name in ("default_model.pt", "MODEL_CARD.md", "sample_face.jpg", "SAMPLE_PHOTO.md"):
        assert f"assets/{name}" in shipped, name


def test_the_sample_photo_is_a_face_the_bundled_model_reads():
    from dicc import Recognizer

    rec = Recognizer.load()
    faces = rec(str(SAMPLE))
    assert len(faces) == 1
    probs = np.array(list(faces[0]["emotions"].values()))
    assert abs(probs.sum() - 1) < 1e-5 and faces[0]["dominant"] == "happy"

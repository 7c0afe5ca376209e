"""Reliability probes (issue 23): the bad inputs and faults a new user meets, each run through the
command line on tiny synthetic data in a temporary folder, with its exit status and a verdict.

    python benchmarks/reliability.py --out benchmarks/reliability.md

Verdicts: ``one clear line`` (refused with exit status 2 and one line naming the file or key),
``ok`` (what should work worked, and gave the right result), ``traceback``, ``silent-wrong``
(exit 0, or a result, where it is wrong), ``data loss`` (a file that was there, an input or an
earlier result, is changed or gone), ``unclear`` (anything else: several lines, another exit
status). Each probe checks the files it could harm. Categories: bad configs, data, checkpoints,
the Python API, OS faults, kill -9 after each write of an epoch (``tests/fault_worker.py``:
SIGKILL right after each write in turn, then ``--resume``, compared with the uninterrupted run),
Ctrl-C, concurrent runs, and prediction inputs.

Faults the OS gives only in some places are simulated in the probe's own process (this file run
as ``--run FAULT -- ARGS``, which patches and then calls ``dicc.cli.main(ARGS)``): a read-only
folder (real ``chmod 555`` unless running as root, whom permissions do not stop: then the write
calls raise ``EACCES`` as the OS would), a disk that fills up during a given write (``ENOSPC``),
a run slowed in its second epoch (so another command meets it running). Everything else is
real: symlinks, hard links, ``/dev/full``, ``kill -9``, SIGINT. Takes a few minutes on 2 cores;
reads nothing outside the temporary folder but the files the installed packages ship.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY = [
    "--set",
    "data.longtail=[24,8,24,64,32,16,48]",
    "--set",
    "model.width=4",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.threads=1",
    "--no-progress",
]
#: the small dataset-on-disk runs (4 training images per class): no long-tailed subset
DISK = ["--set", "model.width=4", "--set", "train.batch_size=32", "--set", "train.threads=1", "--no-progress"]
FLAGS = {"[tiny]": TINY, "[disk]": DISK}  # how the table writes them
VERDICTS = ("one clear line", "ok", "traceback", "silent-wrong", "data loss", "unclear")


# -- the probe's own process: faults, then the CLI ------------------------------------------------
def _shim(fault: str, args: list[str]) -> int:
    import builtins

    kind, _, arg = fault.partition(":")
    if kind == "readonly" and os.geteuid() == 0:
        root = os.path.realpath(arg)

        def inside(p) -> bool:
            try:
                return os.path.realpath(os.fspath(p)).startswith(root + os.sep)
            except TypeError:
                return False

        def refuse(p):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(p))

        real_mkdir, real_os_open, real_open = os.mkdir, os.open, builtins.open
        real_replace, real_rename = os.replace, os.rename

        def mkdir(p, *a, **k):
            return refuse(p) if inside(p) else real_mkdir(p, *a, **k)

        def os_open(p, flags, *a, **k):
            writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            return refuse(p) if writes and inside(p) else real_os_open(p, flags, *a, **k)

        def open_(p, mode="r", *a, **k):
            if isinstance(p, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and inside(p):
                refuse(p)
            return real_open(p, mode, *a, **k)

        def replace(a, b, *x, **k):
            return refuse(b) if inside(b) else real_replace(a, b, *x, **k)

        def rename(a, b, *x, **k):
            return refuse(b) if inside(b) else real_rename(a, b, *x, **k)

        os.mkdir, os.open, builtins.open, os.replace, os.rename = mkdir, os_open, open_, replace, rename
        if "predict" in args:
            import cv2

            real_imwrite = cv2.imwrite
            cv2.imwrite = lambda p, *a, **k: False if inside(p) else real_imwrite(p, *a, **k)  # as OpenCV does
    elif kind == "enospc":  # the n-th file opened for writing whose name starts with the prefix
        prefix, n = arg.rsplit(":", 1)
        real_open, seen = builtins.open, [0]

        class Full:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def open_(p, mode="r", *a, **k):
            f = real_open(p, mode, *a, **k)
            if isinstance(p, (str, os.PathLike)) and "w" in mode and Path(p).name.startswith(prefix):
                seen[0] += 1
                if seen[0] == int(n):
                    return Full(f)
            return f

        import dicc.atomic

        dicc.atomic.open = open_  # what the atomic writes open
        builtins.open = open_
    elif kind == "slow":  # the second validation never ends: the run holds its directory, epoch 1 written
        import dicc.engine as engine

        real, calls = engine._validate, [0]

        def slow(run, record):
            calls[0] += 1
            if calls[0] == 2:
                time.sleep(3600)
            return real(run, record)

        engine._validate = slow
    elif kind == "hold":  # hold a directory as a run would, until stdin closes
        from dicc.runlock import claim

        with claim(args[0]):
            print("held", flush=True)
            sys.stdin.read()
        return 0
    from dicc.cli import main

    return main(args)


# -- probes ---------------------------------------------------------------------------------------
@dataclass
class Result:
    rc: int | None
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


@dataclass
class Probe:
    category: str
    name: str
    args: list[str]  # dicc's arguments, or ["python", snippet] for an API probe
    expect: str = "refuse"  # refuse (one line, exit 2), succeed (exit 0), either
    fragments: tuple[str, ...] = ()  # the one line must name these
    fault: str = "none"
    check: Callable[[Result], str | None] | None = None  # a verdict that overrides (data loss, ...)
    shown: str | None = None  # the command as the table shows it
    note: str = ""
    group: str = ""  # probes of one group run one after the other (they share files)
    result: Result | None = None
    verdict: str = ""
    said: str = ""
    seconds: float = 0.0


def _dicc(p: Probe, cwd: Path) -> list[str]:
    if p.args[:1] == ["python"]:
        return [sys.executable, "-c", p.args[1]]
    return [sys.executable, str(Path(__file__).resolve()), "--run", p.fault, "--", *_expand(p.args)]


def _expand(args: list[str]) -> list[str]:
    return [x for a in args for x in FLAGS.get(a, [a])]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_probe(p: Probe, cwd: Path) -> None:
    t0 = time.monotonic()
    try:
        proc = subprocess.run(_dicc(p, cwd), cwd=cwd, capture_output=True, text=True, env=_env(), timeout=300)
        p.result = Result(proc.returncode, proc.stdout, proc.stderr)
    except subprocess.TimeoutExpired as err:
        p.result = Result(None, err.stdout or "", err.stderr or "")
    p.seconds = time.monotonic() - t0
    judge(p)


def judge(p: Probe) -> None:
    r = p.result
    text = r.err + r.out
    p.said = r.lines[-1] if r.lines else (r.out.strip().splitlines() or [""])[-1]
    verdict = p.check(r) if p.check is not None else None
    if "Traceback" in text:
        p.verdict = "traceback"
    elif verdict is not None:
        p.verdict = verdict
    elif p.expect == "succeed":
        p.verdict = "ok" if r.rc == 0 else "unclear"
    elif r.rc == 0 and p.expect == "refuse":
        p.verdict = "silent-wrong"
    elif r.rc == 0:
        p.verdict = "ok"
    elif r.rc == 2 and len(r.lines) == 1 and all(f in r.lines[0] for f in p.fragments):
        p.verdict = "one clear line"
    else:
        p.verdict = "unclear"


def _unchanged(*paths: Path) -> Callable[[Result], str | None]:
    """A check: 'data loss' when any of ``paths`` changed (bytes, or a folder's files)."""

    def snap(p: Path):
        if p.is_dir():
            return sorted((str(q.relative_to(p)), q.read_bytes()) for q in p.rglob("*") if q.is_file())
        return p.read_bytes() if p.exists() else None

    before = [snap(p) for p in paths]
    return lambda r: "data loss" if [snap(p) for p in paths] != before else None


def _both(*checks):
    def check(r):
        for c in checks:
            v = c(r)
            if v is not None:
                return v
        return None

    return check


# -- fixtures -------------------------------------------------------------------------------------
def _train(cwd: Path, out: str, *extra: str) -> None:
    cmd = [sys.executable, "-m", "dicc", "train", *TINY, "--out", out, *extra]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise SystemExit(f"fixture run {out} failed: {proc.stderr[-2000:]}")


def _image_folders(root: Path, splits=("train", "test", "val")) -> Path:
    import numpy as np
    from PIL import Image

    from dicc import EMOTIONS

    for s, split in enumerate(splits):
        for c, cls in enumerate(EMOTIONS):
            rng = np.random.default_rng(100 * s + c)
            for i in range(4 if split == "train" else 2):
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                px = rng.integers(0, 256, (48, 48), dtype=np.uint8)
                Image.fromarray(px).save(root / split / cls / f"{split}_{i:03d}.png")
    return root


def make_fixtures(w: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data as skdata

    _train(w, "run", "--epochs", "2")
    best = torch.load(w / "run" / "checkpoints" / "best.pt", weights_only=True)
    nan = dict(best, model={k: v.clone() for k, v in best["model"].items()})
    nan["model"]["head.bias"][0] = float("nan")
    torch.save(nan, w / "nan.pt")
    from dicc.models import create_model

    torch.save(dict(best, model=create_model("vgg_fer", 7, width=8).state_dict()), w / "w8.pt")
    shutil.copytree(w / "run", w / "wide")
    torch.save(
        dict(best, model=create_model("vgg_fer", 7, width=8).state_dict()), w / "wide" / "checkpoints" / "last.pt"
    )
    (w / "bad.yaml").write_text("train:\n  epochs: 2\n  bad: [1\n")
    (w / "afile").write_text("a file, not a folder\n")
    (w / "ro").mkdir()
    (w / "onnx_dir").mkdir()
    astronaut = skdata.astronaut()
    Image.fromarray(astronaut).save(w / "face.jpg", quality=92)
    (w / "photos").mkdir()
    shutil.copy(w / "face.jpg", w / "photos" / "y.jpg")
    shutil.copy(w / "face.jpg", w / "x.jpg")
    (w / "old.csv").write_text("file,face,box,dominant\nearlier.jpg,0,1 2 3 4,happy\n")
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    Image.fromarray(gray).save(w / "face8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(w / "face16.png")  # the same picture, 16 bits
    import cv2

    vw = cv2.VideoWriter(str(w / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (512, 512))
    for i in range(20):  # frames 8-10 black (someone stepped away)
        vw.write(np.zeros_like(astronaut) if 8 <= i <= 10 else astronaut[:, :, ::-1])
    vw.release()
    _image_folders(w / "ds_val_link", ("train", "test"))
    os.symlink("test", w / "ds_val_link" / "val")
    _image_folders(w / "ds_test_link", ("train",))
    os.symlink("train", w / "ds_test_link" / "test")
    for name, link in (("ds_file_link", os.symlink), ("ds_hard_link", os.link)):
        root = _image_folders(w / name)
        victim = root / "val" / "angry" / "val_000.png"
        victim.unlink()
        link(os.path.abspath(root / "test" / "angry" / "test_001.png"), victim)
    grid = {
        "out": "grid",
        "base": {"train": {"epochs": 1, "batch_size": 32, "threads": 1, "progress": False}, "model": {"width": 4}},
        "methods": ["ce", "balanced_softmax"],
        "seeds": [0],
        "settings": {"lt": ["data.longtail=[24,8,24,64,32,16,48]"]},
    }
    (w / "grid.yaml").write_text(json.dumps(grid))


# -- the probes -----------------------------------------------------------------------------------
def _api(code: str) -> list[str]:
    """An API probe: a ValueError is printed as one line and exits 2 (as the CLI does)."""
    body = "\n".join("    " + ln for ln in code.strip().splitlines())
    return [
        "python",
        f"import sys\ntry:\n{body}\nexcept ValueError as err:\n    print(f'error: {{err}}', file=sys.stderr)\n"
        "    sys.exit(2)\n",
    ]


def _pixels_match(snippet: str, a: str, b: str) -> list[str]:
    """A probe that loads two files with ``snippet`` (``load(path)`` -> array): ok when the 16-bit
    one gives the 8-bit one's pixels (within 1), silent-wrong otherwise."""
    return [
        "python",
        f"{snippet}\nimport numpy as np, sys\nx, y = load({a!r}).astype(int), load({b!r}).astype(int)\n"
        "d = np.abs(x - y).max()\nprint(f'max difference {d} grey levels; {100 * (y == 255).mean():.1f} % of the "
        "16-bit image white')\nsys.exit(0 if d <= 1 else 3)\n",
    ]


def probes(w: Path) -> list[Probe]:
    P = Probe
    ro_note = "read-only folder simulated (EACCES) when run as root" if os.geteuid() == 0 else ""
    out = [
        # bad configs
        P(
            "bad configs",
            "--longtail as a broken YAML list",
            ["train", "[tiny]", "--longtail", "[1,2", "--out", "x"],
            fragments=("--longtail", "[1,2"),
        ),
        P(
            "bad configs",
            "--longtail exp:-5",
            ["train", "[tiny]", "--longtail", "exp:-5", "--out", "x"],
            fragments=("data.longtail", ">= 1"),
        ),
        P(
            "bad configs",
            "a DICC option of the wrong type",
            ["train", "[tiny]", "--method", "dicc", "--set", "method.options.k_max=abc", "--out", "x"],
            fragments=("method.options.k_max", "int"),
        ),
        P(
            "bad configs",
            "a YAML syntax error in the config file",
            ["train", "-c", "bad.yaml", "--out", "x"],
            fragments=("bad.yaml", "line 4, column 1"),
        ),
        P(
            "bad configs",
            "dicc evaluate --batch-size 0",
            ["evaluate", "run", "--batch-size", "0"],
            fragments=("--batch-size", ">= 1"),
        ),
        # data
        P(
            "data",
            "ln -s test val, data.val=val",
            ["train", "[disk]", "--data", "ds_val_link", "--set", "data.val=val", "--out", "x"],
            fragments=("data.val='val'", "share"),
        ),
        P(
            "data",
            "test/ a symlink to train/",
            ["train", "[disk]", "--data", "ds_test_link", "--out", "x"],
            fragments=("data.test_split='test'", "share"),
        ),
        P(
            "data",
            "one validation file a symlink to a test file",
            ["train", "[disk]", "--data", "ds_file_link", "--set", "data.val=val", "--out", "x"],
            fragments=("val_000.png is ",),
        ),
        P(
            "data",
            "one validation file a hard link to a test file",
            ["train", "[disk]", "--data", "ds_hard_link", "--set", "data.val=val", "--out", "x"],
            fragments=("val_000.png is ",),
        ),
        P(
            "data",
            "a 16-bit PNG read for training (decode_image)",
            _pixels_match(
                "from dicc.data.decode import decode_array\nload = lambda p: decode_array(p, 64, 1)",
                "face8.png",
                "face16.png",
            ),
            expect="succeed",
            check=lambda r: "silent-wrong" if r.rc == 3 else None,
            shown="decode_array('face16.png', 64, 1) vs the same picture in 8 bits",
        ),
        # the Python API
        P(
            "python API",
            "dicc.fit with an unnamed label 7 (7 emotions)",
            _api(
                "import torch, dicc\nx = torch.zeros(8, 1, 48, 48, dtype=torch.uint8)\n"
                "dicc.fit(train=(x, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])), epochs=1, out='api7', "
                "**{'train.progress': False})"
            ),
            fragments=("label 7 is outside the class list",),
            shown="dicc.fit(train=(x, [0, 1, 2, 3, 4, 5, 6, 7]))",
        ),
        P(
            "python API",
            "dicc.fit with a label 0.5",
            _api(
                "import torch, dicc\nx = torch.zeros(3, 1, 48, 48, dtype=torch.uint8)\n"
                "dicc.fit(train=(x, torch.tensor([0.0, 0.5, 1.0])), epochs=1, out='api05', **{'train.progress': False})"
            ),
            fragments=("integer class index",),
            shown="dicc.fit(train=(x, [0.0, 0.5, 1.0]))",
        ),
        P(
            "python API",
            "dicc.evaluate on 30x30 images, 48x48 model",
            _api(
                "import torch, dicc\nfrom dicc.checkpoint import load_checkpoint, model_from_checkpoint\n"
                "m, s = model_from_checkpoint(load_checkpoint('run'))\n"
                "dicc.evaluate(m, (torch.zeros(7, 1, 30, 30, dtype=torch.uint8), torch.arange(7)), strategy=s)"
            ),
            fragments=("30x30", "48x48"),
            shown="dicc.evaluate(model_from_checkpoint(run), 30x30 images)",
        ),
        # checkpoints
        P("checkpoints", "NaN weights: dicc evaluate", ["evaluate", "nan.pt"], fragments=("nan.pt", "NaN")),
        P(
            "checkpoints",
            "NaN weights: dicc predict",
            ["predict", "nan.pt", "face.jpg", "--json"],
            fragments=("nan.pt", "NaN"),
        ),
        P(
            "checkpoints",
            "weights of another width: dicc evaluate",
            ["evaluate", "w8.pt"],
            fragments=("w8.pt", "[8, 1, 3, 3] in the file"),
        ),
        P(
            "checkpoints",
            "a last.pt of another width: --resume",
            ["train", "--out", "wide", "--resume"],
            fragments=("last.pt", "does not fit"),
            group="wide",
        ),
        # OS faults
        P(
            "OS faults",
            "a read-only --out",
            ["train", "[tiny]", "--epochs", "1", "--out", "ro/run"],
            fault="readonly:ro",
            fragments=("ro/run", "Permission denied"),
            check=_unchanged(w / "ro"),
            note=ro_note,
        ),
        P(
            "OS faults",
            "the disk fills up while epoch 2's last.pt is written",
            ["train", "[tiny]", "--epochs", "3", "--out", "full"],
            fault="enospc:.last.pt.:2",
            fragments=("No space left on device", "holds the last finished epoch", "--resume"),
            check=lambda r: None if (w / "full/checkpoints/last.pt").is_file() else "data loss",
            note="ENOSPC simulated at that write",
            group="full",
        ),
        P(
            "OS faults",
            "... then --resume once there is space",
            ["train", "--out", "full", "--resume"],
            expect="succeed",
            group="full",
        ),
        P(
            "OS faults",
            "dicc evaluate --confusion /dev/full",
            ["evaluate", "run", "--confusion", "/dev/full"],
            fragments=("/dev/full", "No space left"),
        ),
        P(
            "OS faults",
            "a 300-character --out",
            ["train", "[tiny]", "--out", "a" * 300],
            fragments=("255 bytes",),
            shown="dicc train ... --out aaaa...a (300 characters)",
        ),
        P(
            "OS faults",
            "--out an existing file",
            ["train", "[tiny]", "--out", "afile"],
            fragments=("afile", "not a directory"),
            check=_unchanged(w / "afile"),
        ),
        P(
            "OS faults",
            "--out inside a file",
            ["train", "[tiny]", "--out", "afile/run"],
            fragments=("afile/run", "Not a directory"),
            check=_unchanged(w / "afile"),
        ),
        # concurrent runs (rebalance and compare; train is run by concurrent_probes)
        P(
            "concurrent runs",
            "dicc rebalance --out the parent run",
            ["rebalance", "run", "--stage", "logit_adjust", "--out", "run"],
            fragments=("parent run",),
            check=_unchanged(w / "run" / "checkpoints"),
        ),
        P(
            "concurrent runs",
            "dicc rebalance --out another finished run",
            ["rebalance", "run", "--stage", "logit_adjust", "--out", "wide"],
            fragments=("wide", "does not write"),
            check=_unchanged(w / "wide" / "final.json"),
            group="wide",
        ),
        # prediction inputs (issue 23, items 1, 2, 7: the prediction side)
        P(
            "prediction",
            "a video whose frames 8-10 have no face",
            ["predict", "clip.avi", "--csv", "t.csv", "--no-progress"],
            expect="succeed",
            check=lambda r: _video_rows(w),
        ),
        P(
            "prediction",
            "--csv naming the input photo",
            ["predict", "x.jpg", "--csv", "x.jpg"],
            fragments=("x.jpg",),
            check=_unchanged(w / "x.jpg"),
        ),
        P(
            "prediction",
            "a missing photo with --csv of an older CSV",
            ["predict", "nope.jpg", "--csv", "old.csv"],
            fragments=("nope.jpg",),
            check=_unchanged(w / "old.csv"),
        ),
        P(
            "prediction",
            "--annotate . inside the photos' folder",
            ["predict", "y.jpg", "--annotate", "."],
            expect="either",
            check=_unchanged(w / "photos" / "y.jpg"),
            shown="cd photos && dicc predict y.jpg --annotate .",
        ),
        P("prediction", "--csv /dev/full", ["predict", "face.jpg", "--csv", "/dev/full"], fragments=("/dev/full",)),
        P(
            "prediction",
            "--annotate a read-only folder",
            ["predict", "face.jpg", "--annotate", "ro"],
            fault="readonly:ro",
            fragments=("ro",),
            note=ro_note,
        ),
        P(
            "prediction",
            "dicc export to a read-only folder",
            ["export", "run", "--onnx", "ro/m.onnx"],
            fault="readonly:ro",
            fragments=("ro/m.onnx",),
            check=_unchanged(w / "ro"),
            note=ro_note,
        ),
        P(
            "prediction",
            "dicc export --onnx an existing folder",
            ["export", "run", "--onnx", "onnx_dir"],
            fragments=("onnx_dir",),
            check=_unchanged(w / "onnx_dir"),
        ),
        P(
            "prediction",
            "a 16-bit PNG read for prediction (load_image)",
            _pixels_match("from dicc.faces.images import load_image as load", "face8.png", "face16.png"),
            expect="succeed",
            check=lambda r: "silent-wrong" if r.rc == 3 else None,
            shown="load_image('face16.png') vs the same picture in 8 bits",
        ),
    ]
    for i, p in enumerate(out):  # every refused run its own --out: one that wrongly trains harms no other probe
        p.args = [f"x{i}" if a == "x" else a for a in p.args]
    return out


def _video_rows(w: Path) -> str | None:
    """Rows for frames after the faceless gap, or 'data loss' (the rest of the video dropped)."""
    import csv

    try:
        with open(w / "t.csv") as f:
            frames = {int(row["frame"]) for row in csv.DictReader(f)}
    except (OSError, KeyError, ValueError):
        return "data loss"
    return None if frames and max(frames) > 10 else "data loss"


def concurrent_probes(w: Path) -> list[Probe]:
    """A run in progress (slowed in its second epoch), met by a second run and by a resume; then
    kill -9 of it and a resume; a rebalance --out and a compare worker meeting a held folder."""
    rows: list[Probe] = []
    first = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--run",
            "slow",
            "--",
            "train",
            *TINY,
            "--epochs",
            "3",
            "--seed",
            "1",
            "--out",
            "busy",
        ],
        cwd=w,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        while not (w / "busy" / "checkpoints" / "last.pt").exists():
            if first.poll() is not None:
                raise SystemExit(f"the slowed run died: {first.stderr.read()[-2000:]}")
            time.sleep(0.1)
        kept = _unchanged(w / "busy" / "config.yaml", w / "busy" / "checkpoints" / "last.pt")
        for name, args in (
            ("a second dicc train into a running run's --out", ["train", "[tiny]", "--seed", "2", "--out", "busy"]),
            ("dicc train --resume of a running run", ["train", "--out", "busy", "--resume"]),
        ):
            p = Probe("concurrent runs", name, args, fragments=("busy", "is using this run directory"), check=kept)
            run_probe(p, w)
            rows.append(p)
    finally:
        first.kill()  # kill -9
        first.wait()
    p = Probe(
        "concurrent runs",
        "kill -9 of the running run, then --resume",
        ["train", "--out", "busy", "--resume"],
        expect="succeed",
        check=lambda r: None if _seed(w / "busy") == 1 else "silent-wrong",
    )
    run_probe(p, w)
    rows.append(p)
    for name, held, args, check in (
        (
            "dicc rebalance --out a folder another process holds",
            "held_stage",
            ["rebalance", "run", "--stage", "logit_adjust", "--out", "held_stage"],
            None,
        ),
        (
            "dicc compare while another worker holds one of its runs",
            "grid/lt/ce/seed0",
            ["compare", "grid.yaml"],
            lambda r: None if (w / "grid/lt/balanced_softmax/seed0/final.json").is_file() else "unclear",
        ),
    ):
        (w / held).mkdir(parents=True, exist_ok=True)
        (w / held / "notes.txt").write_text("the other process's\n")
        holder = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--run", "hold", "--", held],
            cwd=w,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        try:
            assert holder.stdout.readline().strip() == "held"
            intact = _unchanged(w / held)
            p = Probe(
                "concurrent runs",
                name,
                args,
                expect="refuse" if check is None else "succeed",
                fragments=(held, "is using this run directory"),
                check=_both(intact, check) if check else intact,
            )
            run_probe(p, w)
            if check is not None and p.verdict == "ok":
                p.said = next((ln for ln in p.result.out.splitlines() if "skipped" in ln), p.said)
            rows.append(p)
        finally:
            holder.kill()
            holder.wait()
    return rows


def _seed(run: Path):
    try:
        return json.loads((run / "final.json").read_text()).get("seed")
    except (OSError, ValueError):
        return None


def ctrl_c_probe(w: Path) -> Probe:
    """Ctrl-C of a run started with SIGINT ignored (as a shell's background job starts it)."""
    p = Probe(
        "kill and Ctrl-C",
        "Ctrl-C of dicc train started with SIGINT ignored (a background job)",
        ["train", "[tiny]", "--epochs", "10000", "--out", "ctrlc"],
        expect="refuse",
        fragments=("--resume",),
        shown="(trap '' INT; dicc train [tiny] --epochs 10000 --out ctrlc) then Ctrl-C",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicc", *_expand(p.args)],
        cwd=w,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        while not (w / "ctrlc" / "checkpoints" / "last.pt").exists() and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        p.result = Result(proc.returncode, "", err)
    except subprocess.TimeoutExpired:
        p.result = Result(None, "", "(still running 60 s after Ctrl-C: SIGINT was ignored)")
    finally:
        proc.kill()
        proc.wait()
    judge(p)
    if p.result.rc == 130 and len(p.result.lines) == 1 and "--resume" in p.result.lines[0]:
        p.verdict = "one clear line"
    elif p.result.rc is None:
        p.verdict = "unclear"
    return p


def kill_probes(w: Path) -> list[Probe]:
    """tests/fault_worker.py: SIGKILL right after each write of the last epoch that wrote best.pt
    and after each of the run's last writes, then --resume; compared with the uninterrupted run."""
    import torch

    root = w / "faults"
    root.mkdir()
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fault_worker.py"), str(root), *TINY, "--epochs", "3"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    if proc.returncode != 0:
        p = Probe("kill and Ctrl-C", "kill -9 after each write", [], result=Result(proc.returncode, "", proc.stderr))
        p.verdict = "traceback" if "Traceback" in proc.stderr else "unclear"
        return [p]
    report = json.loads((root / "faults.json").read_text())
    ref = json.loads((root / "ref" / "final.json").read_text())
    rows = []
    for pt in report["points"]:
        run = root / f"k{pt['after']}"
        what = pt["write"]["file"]
        name = f"kill -9 right after write {pt['after']} ({what}, epoch {pt['write']['epoch']}), then --resume"
        p = Probe(
            "kill and Ctrl-C", name, [], shown="dicc train [tiny] (SIGKILL after that write); dicc train --resume"
        )
        try:
            final = json.loads((run / "final.json").read_text())
            best_epoch = torch.load(run / "checkpoints" / "last.pt", weights_only=True).get("best_epoch")
            best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["epoch"]
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            final, best_epoch, best = None, None, f"{err}"
        p.result = Result(pt["resume_rc"], "", "")
        if not pt["killed"] or pt["resume_rc"] != 0:
            p.verdict, p.said = "unclear", f"killed {pt['killed']}, resume exit {pt['resume_rc']}"
        elif final != ref or best_epoch != best:
            p.verdict = "silent-wrong"
            p.said = f"resumed final.json differs (test epoch {final and final.get('epoch')} vs {ref['epoch']})"
        else:
            p.verdict, p.said = "ok", f"final.json identical to the uninterrupted run's (best.pt epoch {best})"
        rows.append(p)
    return rows


# -- the report -----------------------------------------------------------------------------------
def _cell(text: str, width: int = 150) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 3] + "..."


def _shown(p: Probe) -> str:
    return p.shown or "dicc " + " ".join(a if a in FLAGS else shlex.quote(a) for a in p.args)


def write_report(rows: list[Probe], path: Path, seconds: float) -> str:
    counts = {v: sum(p.verdict == v for p in rows) for v in VERDICTS}
    summary = (
        f"{len(rows)} probes: {counts['traceback']} tracebacks, {counts['silent-wrong']} silent-wrong, "
        f"{counts['data loss']} data loss" + (f", {counts['unclear']} unclear" if counts["unclear"] else "")
    )
    md = [
        "# Reliability probes (issue 23)",
        "",
        "Regenerate: `python benchmarks/reliability.py --out benchmarks/reliability.md` (tiny synthetic data in a",
        f"temporary folder; {seconds / 60:.1f} minutes here, on 2 cores shared with other jobs). `[tiny]` stands for",
        "`--set data.longtail=[24,8,24,64,32,16,48] --set model.width=4 --set train.batch_size=32 --set",
        "train.threads=1 --no-progress` (the built-in data), `[disk]` for the same without the long-tailed subset",
        "(a folder dataset of 4 training images per class).",
        "Verdicts: **one clear line** (refused, exit 2, one line naming the file or key), **ok** (worked, right",
        "result), **traceback**, **silent-wrong**, **data loss** (a file that was there changed or gone), **unclear**.",
        "",
        f"**{summary}** ({counts['one clear line']} one clear line, {counts['ok']} ok).",
        "",
    ]
    for cat in dict.fromkeys(p.category for p in rows):
        md += [f"## {cat}", "", "| probe | command | exit | verdict | what it said |", "|---|---|---|---|---|"]
        for p in (q for q in rows if q.category == cat):
            rc = "-" if p.result is None or p.result.rc is None else str(p.result.rc)
            name = p.name + (f" ({p.note})" if p.note else "")
            md.append(f"| {_cell(name)} | `{_cell(_shown(p), 110)}` | {rc} | {p.verdict} | {_cell(p.said)} |")
        md.append("")
    path.write_text("\n".join(md))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "reliability.md"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    ap.add_argument("--jobs", type=int, default=2, help="probes run side by side (default 2)")
    args = ap.parse_args()
    t0 = time.monotonic()
    w = Path(tempfile.mkdtemp(prefix="dicc-reliability-"))
    try:
        make_fixtures(w)
        print(f"fixtures: {time.monotonic() - t0:.0f}s", flush=True)
        if os.geteuid() != 0:
            (w / "ro").chmod(0o555)
        tasks: dict[str, list[Probe]] = {}  # probes of one group run one after the other, groups side by side
        for i, p in enumerate(probes(w)):
            tasks.setdefault(p.group or f"#{i}", []).append(p)

        def run_group(group: list[Probe]) -> list[Probe]:
            for p in group:
                run_probe(p, w / "photos" if p.shown and p.shown.startswith("cd photos") else w)
                print(f"{p.verdict:<15} {p.seconds:5.1f}s {p.category}: {p.name}", flush=True)
            return group

        def run_made(make) -> list[Probe]:
            group = make(w)
            for p in group:
                print(f"{p.verdict:<15} {p.category}: {p.name}", flush=True)
            return group

        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_made, m) for m in (kill_probes, concurrent_probes, lambda w: [ctrl_c_probe(w)])]
            futures += [pool.submit(run_group, g) for g in tasks.values()]
            rows = [p for f in futures for p in f.result()]
        order = [
            "bad configs",
            "data",
            "python API",
            "checkpoints",
            "OS faults",
            "kill and Ctrl-C",
            "concurrent runs",
            "prediction",
        ]
        rows.sort(key=lambda p: order.index(p.category))
        print(write_report(rows, Path(args.out), time.monotonic() - t0))
    finally:
        if (w / "ro").exists():
            (w / "ro").chmod(0o755)
        if args.keep:
            print(f"kept {w}")
        else:
            shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--run":
        sys.exit(_shim(sys.argv[2], sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:]))
    main()

"""ONNX export: parent-class probabilities, dynamic batch, metadata, parity with PyTorch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import onnx  # noqa: E402  (the dev extra installs both)
import onnxruntime as ort  # noqa: E402

import helpers  # noqa: E402
from dicc import EMOTIONS  # noqa: E402
from dicc.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from dicc.export import (
    add_export_parser,
    export_model_onnx,
    export_onnx,  # noqa: E402
    grouped_model,
    run_export,
)
from dicc.models import create_model  # noqa: E402
from dicc.strategies import Strategy, create_strategy  # noqa: E402

COUNTS = helpers.COUNTS
NORM = {"mean": 0.45, "std": 0.3, "image_size": 48, "channels": 1}


def make_checkpoint(path: Path, method: str = "ce", **kw) -> Path:
    return helpers.make_checkpoint(path, method, mean=NORM["mean"], std=NORM["std"], **kw)


def _inputs(n: int, seed: int = 1) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 48, 48, generator=g).numpy()


def _parity(path: Path, model, strategy) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in (1, 9):  # the batch axis is dynamic
        x = _inputs(n, seed=n)
        got = session.run(None, {"input": x})[0]
        with torch.no_grad():
            want = torch.softmax(strategy.parent_logits(model(torch.from_numpy(x))), 1).numpy()
        assert got.shape == (n, 7)
        np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


@pytest.mark.parametrize(
    "method,options", [("ce", None), ("logit_adjust", None), ("ldam_drw", None), ("balanced_softmax", None)]
)
def test_export_parity_with_pytorch(tmp_path, method, options):
    ckpt_path = make_checkpoint(tmp_path / f"{method}.pt", method, options=options)
    info = export_onnx(ckpt_path, tmp_path / "m.onnx")
    assert info["merge"] == "strategy" and info["max_abs_diff"] < 1e-4
    model, strategy = model_from_checkpoint(load_checkpoint(ckpt_path))
    assert _parity(tmp_path / "m.onnx", model, strategy) < 1e-4


def test_export_graph_and_metadata(tmp_path):
    ckpt_path = make_checkpoint(tmp_path / "ce.pt")
    export_onnx(ckpt_path, tmp_path / "sub" / "m.onnx", opset=17)
    proto = onnx.load(str(tmp_path / "sub" / "m.onnx"))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == list(EMOTIONS)
    assert float(meta["mean"]) == 0.45 and float(meta["std"]) == 0.3
    assert int(meta["image_size"]) == 48 and int(meta["channels"]) == 1
    assert meta["strategy"] == "ce" and meta["format"] == "dicc-onnx"
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "input" and out.name == "probabilities"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 48, 48]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 7]
    assert not list(tmp_path.joinpath("sub").glob(".*.tmp"))  # the atomic write left nothing behind


class _IndexAddStrategy(Strategy):
    """Sub-class merge with index_add (exports as a scatter that drops repeated indices)."""

    name = "_test_index_add"
    SUB_TO_PARENT = [0, 0, 0, 1, 2, 3, 3, 4, 5, 6, 6]
    merge = "logsumexp"

    @property
    def num_outputs(self) -> int:
        return len(self.SUB_TO_PARENT)

    def parent_logits(self, z):
        idx = torch.tensor(self.SUB_TO_PARENT)
        if self.merge == "max":
            return torch.full((z.shape[0], 7), -torch.inf).scatter_reduce(1, idx.expand_as(z), z, "amax")
        m = z.max(1, keepdim=True).values
        return torch.zeros(z.shape[0], 7).index_add(1, idx, (z - m).exp()).log() + m


@pytest.mark.parametrize("merge", ["logsumexp", "max"])
def test_export_falls_back_to_a_group_matrix(tmp_path, merge):
    strategy = _IndexAddStrategy(COUNTS)
    strategy.merge = merge
    torch.manual_seed(0)
    model = create_model("vgg_fer", strategy.num_outputs, width=4).eval()
    with torch.no_grad():
        model.head.weight.mul_(50)
    info = export_model_onnx(model, strategy, tmp_path / "g.onnx", class_names=EMOTIONS, normalization=NORM)
    assert info["num_outputs"] == 11
    if merge == "logsumexp":
        assert info["merge"] == "grouped-logsumexp"  # index_add did not export faithfully
    assert info["max_abs_diff"] < 1e-4
    assert _parity(tmp_path / "g.onnx", model, strategy) < 1e-4


def test_group_matrix_reproduces_an_offset_and_refuses_what_it_cannot():
    class Shifted(_IndexAddStrategy):
        def parent_logits(self, z):
            return super().parent_logits(z) - torch.arange(7.0)

    model = torch.nn.Identity()
    g = grouped_model(model, Shifted(COUNTS), 11, 7)
    z = torch.randn(5, 11)
    torch.testing.assert_close(g(z), torch.softmax(Shifted(COUNTS).parent_logits(z), 1))

    class Mixing(_IndexAddStrategy):
        def parent_logits(self, z):
            return z[:, :7] * z[:, 7:8]

    with pytest.raises(ValueError, match="cannot be rebuilt"):
        grouped_model(model, Mixing(COUNTS), 11, 7)


@pytest.mark.parametrize("merge", ["logsumexp", "max"])
@pytest.mark.parametrize("split", [False, True])
def test_export_with_the_dicc_strategy(tmp_path, merge, split):
    """DICC's head has more outputs than classes; before the first split only one row per class
    is live, after it every sub-class row is."""
    counts = [400, 40, 100, 900, 300, 200, 600]
    state = {"split": True, "pseudo": torch.zeros(1, dtype=torch.long)} if split else None
    ckpt_path = make_checkpoint(tmp_path / "dicc.pt", "dicc", counts=counts, options={"merge": merge}, state=state)
    model, strategy = model_from_checkpoint(load_checkpoint(ckpt_path))
    assert strategy.num_outputs > 7 and strategy.split == split
    info = export_onnx(ckpt_path, tmp_path / "dicc.onnx")
    assert info["num_outputs"] == strategy.num_outputs
    assert _parity(tmp_path / "dicc.onnx", model, strategy) < 1e-4
    # the matrix fallback reproduces DICC's merge too (dead rows before the split included)
    g = grouped_model(torch.nn.Identity(), strategy, strategy.num_outputs, 7)
    z = torch.randn(16, strategy.num_outputs) * 5
    torch.testing.assert_close(g(z), torch.softmax(strategy.parent_logits(z), 1), atol=1e-5, rtol=1e-5)


def test_recognizer_from_onnx_matches_checkpoint(tmp_path):
    cv2 = pytest.importorskip("cv2")  # noqa: F841
    skdata = pytest.importorskip("skimage.data")
    from dicc.predict import Recognizer

    ckpt_path = make_checkpoint(tmp_path / "ce.pt")
    export_onnx(ckpt_path, tmp_path / "m.onnx")
    a = Recognizer.from_checkpoint(ckpt_path, device="cpu")
    b = Recognizer.from_onnx(tmp_path / "m.onnx")
    assert b.class_names == tuple(EMOTIONS) and (b.mean, b.std, b.image_size, b.channels) == (0.45, 0.3, 48, 1)
    img = skdata.astronaut()
    fa, fb = a(img), b(img)
    assert len(fa) == len(fb) == 1 and fa[0]["box"] == fb[0]["box"] and fa[0]["dominant"] == fb[0]["dominant"]
    np.testing.assert_allclose(list(fa[0]["emotions"].values()), list(fb[0]["emotions"].values()), atol=1e-5)
    faces = np.random.default_rng(0).integers(0, 256, (70, 48, 48), dtype=np.uint8)  # > one batch of 64
    pa = a.predict_batch(list(faces), detect=False)
    pb = Recognizer.load(tmp_path / "m.onnx", batch_size=16).predict_batch(list(faces), detect=False)
    diff = max(abs(x[0]["emotions"][n] - y[0]["emotions"][n]) for x, y in zip(pa, pb) for n in EMOTIONS)
    assert diff < 1e-4


def test_from_onnx_without_metadata_is_a_clear_error(tmp_path):
    from dicc.predict import Recognizer

    export_model_onnx(
        create_model("vgg_fer", 7, width=4),
        create_strategy("ce", COUNTS),
        tmp_path / "plain.onnx",
        class_names=EMOTIONS,
        normalization=NORM,
        check=False,
    )
    proto = onnx.load(str(tmp_path / "plain.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="dicc export"):
        Recognizer.from_onnx(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_text("junk")
    with pytest.raises(ValueError, match="junk.onnx"):
        Recognizer.from_onnx(tmp_path / "junk.onnx")


def _cli(argv) -> int:
    parser = argparse.ArgumentParser(prog="dicc")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    return run_export(parser.parse_args(["export", *map(str, argv)]))


def test_export_cli(tmp_path, capsys):
    ckpt_path = make_checkpoint(tmp_path / "ce.pt")
    assert _cli([ckpt_path, "--onnx", tmp_path / "cli.onnx"]) == 0
    out = capsys.readouterr().out
    assert "cli.onnx" in out and "max |onnxruntime - torch|" in out
    assert (tmp_path / "cli.onnx").is_file()
    with pytest.raises(FileNotFoundError):
        _cli([tmp_path / "missing.pt", "--onnx", tmp_path / "x.onnx"])
    # the file to write is named once: OUT.onnx or --onnx (before: --onnx was required, SystemExit)
    assert _cli([ckpt_path]) == 2 and "name the ONNX file to write" in capsys.readouterr().err
    assert _cli([ckpt_path, tmp_path / "a.onnx", "--onnx", tmp_path / "b.onnx"]) == 2
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def test_export_is_wired_into_dicc_main(tmp_path, capsys):
    from dicc import cli

    ckpt_path = make_checkpoint(tmp_path / "ce.pt")
    assert cli.main(["export", str(ckpt_path), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert cli.main(["export", str(tmp_path / "nope.pt"), "--onnx", str(tmp_path / "n.onnx")]) == 2
    assert "nope.pt" in capsys.readouterr().err


# -- output faults: one line naming the file, nothing half-written ----------------------
def _export_main(argv) -> int:
    from dicc import cli

    return cli.main(["export", *map(str, argv)])


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_export_to_an_existing_folder_is_one_line(tmp_path, capsys):
    ckpt_path = make_checkpoint(tmp_path / "ce.pt")
    folder = tmp_path / "models"
    folder.mkdir()
    assert _export_main([ckpt_path, "--onnx", folder]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == f"dicc export: error: cannot write {folder}: it is a folder; name the .onnx file to write"
    assert list(folder.iterdir()) == []


def test_export_to_a_read_only_folder_is_one_line_and_leaves_no_file(tmp_path, capsys):
    from helpers import read_only

    ckpt_path = make_checkpoint(tmp_path / "ce.pt")
    folder = tmp_path / "ro"
    with read_only(folder):
        rc = _export_main([ckpt_path, "--onnx", folder / "m.onnx"])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and line.startswith(f"dicc export: error: cannot write {folder / 'm.onnx'}: ")
    assert line.endswith(("Permission denied", "Read-only file system"))
    assert list(folder.iterdir()) == []


def test_export_with_a_name_too_long_is_one_line(tmp_path, capsys):
    ckpt_path = make_checkpoint(tmp_path / "ce.pt")
    target = tmp_path / ("m" * 300 + ".onnx")
    assert _export_main([ckpt_path, "--onnx", target]) == 2
    assert _one_line(capsys.readouterr().err) == f"dicc export: error: cannot write {target}: File name too long"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ce.pt"]


# -- the input kind: pixels 0..255 with the normalisation in the graph, or normalised --
def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 48, 48), dtype=np.uint8)


def _torch_probs(model, strategy, pixels: np.ndarray) -> np.ndarray:
    from dicc.data.transforms import normalize

    with torch.no_grad():
        x = normalize(torch.from_numpy(pixels), NORM["mean"], NORM["std"])
        return torch.softmax(strategy.parent_logits(model(x)), 1).numpy()


@pytest.mark.parametrize("kind", ["pixels", "normalized"])
@pytest.mark.parametrize("method", ["ce", "dicc"])
def test_onnx_equals_pytorch_on_the_same_faces_for_both_input_kinds(tmp_path, kind, method):
    ckpt_path = make_checkpoint(tmp_path / "m.pt", method)
    info = export_onnx(ckpt_path, tmp_path / "m.onnx", input=kind)
    assert info["input"] == kind and info["max_abs_diff"] < 1e-5
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["input"] == kind and float(meta["mean"]) == NORM["mean"] and float(meta["std"]) == NORM["std"]
    model, strategy = model_from_checkpoint(load_checkpoint(ckpt_path))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        faces = _pixels(n, seed=n)
        if kind == "pixels":  # the graph takes the pixels as they are
            x = faces.astype(np.float32)
        else:
            x = ((faces.astype(np.float32) / 255 - NORM["mean"]) / NORM["std"]).astype(np.float32)
        got = session.run(None, {"input": x})[0]
        np.testing.assert_allclose(got, _torch_probs(model, strategy, faces), atol=1e-5, rtol=0)
    # the recognizer reads the kind from the file and feeds the graph what it takes
    from dicc.predict import Recognizer

    rec = Recognizer.from_onnx(tmp_path / "m.onnx")
    assert rec.input_kind == kind
    faces = _pixels(5, seed=9)
    ref = Recognizer.from_checkpoint(ckpt_path, device="cpu")
    np.testing.assert_allclose(rec.classify(faces), ref.classify(faces), atol=1e-5, rtol=0)
    np.testing.assert_allclose(rec.classify(faces), _torch_probs(model, strategy, faces), atol=1e-5, rtol=0)


def test_pixel_input_with_the_group_matrix_fallback(tmp_path):
    strategy = _IndexAddStrategy(COUNTS)
    torch.manual_seed(0)
    model = create_model("vgg_fer", strategy.num_outputs, width=4).eval()
    info = export_model_onnx(
        model, strategy, tmp_path / "g.onnx", class_names=EMOTIONS, normalization=NORM, input="pixels"
    )
    assert info["merge"] == "grouped-logsumexp" and info["max_abs_diff"] < 1e-5
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    faces = _pixels(4)
    got = session.run(None, {"input": faces.astype(np.float32)})[0]
    np.testing.assert_allclose(got, _torch_probs(model, strategy, faces), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="input must be one of pixels, normalized, got 'raw'"):
        export_model_onnx(model, strategy, tmp_path / "x.onnx", class_names=EMOTIONS, normalization=NORM, input="raw")


def test_a_file_without_the_input_key_is_normalized_and_a_bad_one_is_named(tmp_path):
    from dicc.predict import Recognizer

    ckpt_path = make_checkpoint(tmp_path / "m.pt")
    export_onnx(ckpt_path, tmp_path / "m.onnx", input="normalized")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != "input"]
    del proto.metadata_props[:]
    for key, value in kept:  # as a file exported before the key existed
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp_path / "old.onnx"))
    rec = Recognizer.from_onnx(tmp_path / "old.onnx")
    faces = _pixels(3)
    assert rec.input_kind == "normalized"
    np.testing.assert_allclose(
        rec.classify(faces), Recognizer.from_checkpoint(ckpt_path, device="cpu").classify(faces), atol=1e-5
    )
    entry = proto.metadata_props.add()
    entry.key, entry.value = "input", "raw"
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(ValueError, match=r"bad\.onnx: the ONNX metadata says input='raw'"):
        Recognizer.from_onnx(tmp_path / "bad.onnx")


def test_export_cli_writes_pixels_by_default_and_takes_the_output_as_an_argument(tmp_path, capsys):
    ckpt_path = make_checkpoint(tmp_path / "ce.pt")
    assert _export_main([ckpt_path, tmp_path / "p.onnx"]) == 0
    assert "input pixels" in capsys.readouterr().out
    assert _export_main([ckpt_path, tmp_path / "n.onnx", "--input", "normalized"]) == 0
    for name, kind in (("p.onnx", "pixels"), ("n.onnx", "normalized")):
        meta = {p.key: p.value for p in onnx.load(str(tmp_path / name)).metadata_props}
        assert meta["input"] == kind

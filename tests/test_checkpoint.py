"""dicc.checkpoint: a checkpoint that lacks a key, is of a newer format, is cut short, holds NaN
weights or another width's is one line naming the file and the problem (evaluate and resume)."""

import torch

from dicc.atomic import save_atomic
from helpers import _cli, _one_error_line, TINY


def test_checkpoint_problems_are_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(["train", *TINY, "--epochs", "1", "--out", str(out)], capsys)[0] == 0
    good = out / "checkpoints" / "best.pt"
    ckpt = torch.load(good, weights_only=True)
    cases = {}
    missing = dict(ckpt)
    del missing["model_spec"]
    cases["missing"] = (save_atomic(missing, tmp_path / "missing.pt"), ["lacks model_spec"])
    newer = dict(ckpt, version=99)
    cases["version"] = (save_atomic(newer, tmp_path / "v99.pt"), ["format version 99", "reads versions 1 to 1"])
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated"] = (cut, ["cut.pt", "truncated or corrupt"])
    nan = dict(ckpt, model={k: v.clone() for k, v in ckpt["model"].items()})
    nan["model"]["head.bias"][2] = float("nan")
    nan["model"]["body.0.0.weight"][0, 0, 0, 0] = float("inf")
    cases["nan"] = (save_atomic(nan, tmp_path / "nan.pt"), ["nan.pt: body.0.0.weight (and 1 more tensors)", "NaN"])
    from dicc.models import create_model

    wide = dict(ckpt, model=create_model("vgg_fer", 7, width=8).state_dict())
    cases["width"] = (
        save_atomic(wide, tmp_path / "w8.pt"),
        ["w8.pt: the weights do not fit", "(vgg_fer, width 4)", "is [8, 1, 3, 3] in the file, [4, 1, 3, 3] in the"],
    )
    for name, (path, fragments) in cases.items():
        code, _, err = _cli(["evaluate", str(path)], capsys)
        assert code == 2, name
        _one_error_line(err, *fragments)
    code, _, err = _cli(["evaluate", str(out), "--batch-size", "0"], capsys)
    assert code == 2
    _one_error_line(err, "--batch-size: expected an integer >= 1, got 0")
    # a resume from a checkpoint of another width names the file and the first tensor
    save_atomic(dict(wide, optimizer=ckpt["optimizer"]), out / "checkpoints" / "last.pt")
    code, _, err = _cli(["train", "--out", str(out), "--resume"], capsys)
    assert code == 2
    _one_error_line(err, "last.pt: does not fit this run's model (body.0.0.weight is [8, 1, 3, 3] in the file")

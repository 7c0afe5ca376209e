"""train.amp / train.channels_last: what ``auto`` resolves to on each kind of machine, the refusal
of bf16 on a CPU that would emulate it, and a bf16 CPU training step that stays fp32 outside the
forward pass."""

import json

import pytest
import torch

import dicc.precision as precision
from dicc.checkpoint import load_checkpoint
from dicc.cli import main
from dicc.engine import fit
from dicc.precision import Precision, normalize_choice, resolve_precision


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend the CPU does (True) or does not (False) compute bf16 natively."""

    def set_(value: bool):
        monkeypatch.setenv("DICC_CPU_BF16", "1" if value else "0")
        precision.cpu_has_native_bf16.cache_clear()

    yield set_
    precision.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("native, dtype", [(True, torch.bfloat16), (False, None)])
def test_auto_on_cpu_follows_the_bf16_capability(cpu_bf16, native, dtype):
    cpu_bf16(native)
    p = resolve_precision("auto", "auto", "cpu", convolutional=True)
    assert p.dtype is dtype and p.channels_last and p.device_type == "cpu"
    assert resolve_precision("off", "off", "cpu").dtype is None
    assert not resolve_precision("auto", "auto", "cpu", convolutional=False).channels_last
    assert not resolve_precision("auto", "off", "cpu").channels_last


def test_amp_on_without_native_bf16_is_refused_naming_the_setting(cpu_bf16):
    cpu_bf16(False)
    with pytest.raises(ValueError, match=r"train.amp=on: this CPU has no native bf16"):
        resolve_precision("on", "auto", "cpu")
    cpu_bf16(True)
    assert resolve_precision("on", "auto", "cpu").dtype is torch.bfloat16


@pytest.mark.parametrize("bf16_gpu, dtype", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda_is_bf16_or_fp16_with_a_scaler(monkeypatch, bf16_gpu, dtype):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    for amp in ("auto", "on"):
        p = resolve_precision(amp, "auto", torch.device("cuda", 0), convolutional=True)
        assert p.dtype is dtype and p.channels_last and p.needs_scaler == (dtype is torch.float16)
    assert resolve_precision("off", "auto", torch.device("cuda", 0)).dtype is None


def test_cpu_capability_check_reads_the_flags(monkeypatch):
    monkeypatch.delenv("DICC_CPU_BF16", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    for flags, expect in (({"avx2", "avx512f"}, False), ({"avx512f", "avx512_bf16"}, True), ({"amx_bf16"}, True)):
        monkeypatch.setattr(precision, "_cpuinfo_flags", lambda f=flags: f)
        precision.cpu_has_native_bf16.cache_clear()
        assert precision.cpu_has_native_bf16() is expect, flags
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: set())
    precision.cpu_has_native_bf16.cache_clear()
    assert precision.cpu_has_native_bf16()
    precision.cpu_has_native_bf16.cache_clear()


def test_config_values_yaml_reads_as_booleans():
    assert normalize_choice(True, "train.amp") == "on" and normalize_choice(False, "train.amp") == "off"
    assert normalize_choice("AUTO", "x") == "auto"
    with pytest.raises(ValueError, match="train.channels_last: expected one of auto, on, off"):
        normalize_choice("fast", "train.channels_last")


def test_bf16_cpu_training_keeps_fp32_parameters_and_checkpoints(tiny_config, cpu_bf16):
    cpu_bf16(True)  # emulated here if the CPU lacks it: slower, but the same code path
    cfg = tiny_config("train.amp=on", "train.channels_last=on", "train.epochs=1")
    res = fit(cfg, log=lambda *a: None)
    assert res.precision == Precision("cpu", torch.bfloat16, True)
    for name, p in res.model.named_parameters():
        assert p.dtype is torch.float32 and torch.isfinite(p).all(), name
    ckpt = load_checkpoint(res.run_dir / "checkpoints" / "last.pt")
    for name, t in ckpt["model"].items():
        if t.is_floating_point():
            assert t.dtype is torch.float32 and t.is_contiguous(), name
    for state in ckpt["optimizer"]["state"].values():
        assert all(v.dtype is torch.float32 for v in state.values() if torch.is_tensor(v) and v.is_floating_point())
    env = json.loads((res.run_dir / "environment.json").read_text())
    assert env["precision"] == "bf16" and env["memory_format"] == "channels_last"
    assert res.final["precision"] == "bf16"
    # the checkpoint loads and evaluates on a machine without bf16 (fp32 there)
    cpu_bf16(False)
    from dicc.checkpoint import model_from_checkpoint

    model, strategy = model_from_checkpoint(ckpt)
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(2, 1, 48, 48))).all()


def test_the_log_line_says_what_precision_ran(tiny_config, cpu_bf16):
    cpu_bf16(False)
    lines = []
    res = fit(tiny_config("train.epochs=1"), log=lines.append)
    assert any("(fp32, channels_last)" in line for line in lines), lines
    env = json.loads((res.run_dir / "environment.json").read_text())
    assert env["precision"] == "fp32" and env["memory_format"] == "channels_last"


def test_cli_amp_on_without_bf16_is_one_line_and_writes_nothing(tmp_path, capsys, cpu_bf16):
    cpu_bf16(False)
    out = tmp_path / "run"
    assert main(["train", "--set", "train.amp=on", "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.amp=on" in err[0] and "bf16" in err[0]
    assert not out.exists()


def test_recognizer_follows_amp_and_off_gives_the_fp32_numbers(tiny_config, cpu_bf16, capsys):
    from dicc.predict import Recognizer

    cpu_bf16(False)
    res = fit(tiny_config("train.epochs=1"), log=lambda *a: None)
    faces = (torch.rand(5, 1, 48, 48, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    fp32 = Recognizer.load(str(res.run_dir)).classify(faces)
    cpu_bf16(True)  # a CPU with native bf16: `auto` runs the .pt model in bf16, `off` in fp32
    auto = Recognizer.load(str(res.run_dir))
    off = Recognizer.load(str(res.run_dir), amp="off")
    assert auto.backend.precision.dtype is torch.bfloat16 and off.backend.precision.dtype is None
    assert off.classify(faces) == pytest.approx(fp32, abs=1e-6)
    p = auto.classify(faces)
    assert p.sum(1) == pytest.approx(1.0, abs=1e-5) and p == pytest.approx(fp32, abs=2e-2)
    assert not (p == fp32).all()  # bf16 really ran
    # dicc predict --amp on, where the CPU would emulate bf16: one line, exit status 2
    cpu_bf16(False)
    assert main(["predict", str(res.run_dir), str(res.run_dir), "--amp", "on", "--no-detect"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.amp=on" in err[0], err

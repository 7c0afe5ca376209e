"""Numeric precision and memory format of a run: ``train.amp`` and ``train.channels_last``.

``amp`` (``auto`` | ``on`` | ``off``):

- CUDA: bf16 autocast where the GPU supports bf16, otherwise fp16 autocast with a gradient
  scaler; ``auto`` and ``on`` mean the same there.
- CPU: bf16 autocast when the CPU computes bf16 natively (AVX-512 BF16 or AMX on x86, the
  BF16 extension on ARM: a capability check, :func:`cpu_has_native_bf16`). Without it, bf16
  is emulated and several times *slower* than fp32 (measured in benchmarks/train_speed.md), so
  ``auto`` stays in fp32 and ``on`` is refused with one line saying what the CPU lacks.

``channels_last`` (``auto`` | ``on`` | ``off``): NHWC tensors for the convolutional backbones.
``auto`` turns it on for convolutional models (``FERModel.convolutional``) on CUDA and on the
CPU: measured faster in both precisions on the CPUs benchmarked (benchmarks/train_speed.md).

Only the forward (and its backward) runs in reduced precision: losses, metrics, k-means,
optimizer state and checkpoints stay fp32 (the model's parameters are never cast).
"""

from __future__ import annotations

import functools
import os
import platform
from contextlib import nullcontext
from dataclasses import dataclass

import torch

CHOICES = ("auto", "on", "off")


def normalize_choice(value, key: str) -> str:
    """``auto``/``on``/``off`` from a config value (YAML reads ``on``/``off`` as booleans)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    text = {"true": "on", "false": "off", "yes": "on", "no": "off", "1": "on", "0": "off"}.get(text, text)
    if text not in CHOICES:
        raise ValueError(f"{key}: expected one of {', '.join(CHOICES)}, got {value!r}")
    return text


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (``DICC_CPU_BF16=0/1`` overrides the check).

    x86: AVX-512 BF16 or AMX (torch's own cpuinfo checks, else ``/proc/cpuinfo`` flags
    ``avx512_bf16`` / ``amx_bf16``); ARM: the ``bf16`` feature."""
    env = os.environ.get("DICC_CPU_BF16")
    if env is not None:
        return env.strip().lower() in ("1", "true", "yes", "on")
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, name, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # noqa: BLE001 - a private helper that may change: fall back to the flags
            pass
    flags = _cpuinfo_flags()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def cpu_description() -> str:
    """A short name of what the CPU offers, for error messages and environment.json."""
    flags = _cpuinfo_flags()
    simd = [f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2", "bf16", "asimd") if f in flags]
    return f"{platform.machine()} ({', '.join(simd) or 'no SIMD flags read'})"


@dataclass(frozen=True)
class Precision:
    """What a run computes in: autocast dtype (None = fp32), memory format, gradient scaling."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def memory_format(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    @property
    def needs_scaler(self) -> bool:
        return self.dtype is torch.float16

    def autocast(self):
        """The autocast context of the forward pass (a no-op in fp32)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model in this memory format (in place; parameters stay fp32)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def describe(self) -> str:
        amp = f"{self.name} autocast" if self.dtype is not None else "fp32"
        return f"{amp}, {self.memory_format}"

    def to_dict(self) -> dict:
        return {"precision": self.name, "memory_format": self.memory_format}


def resolve_precision(amp, channels_last, device: torch.device | str, convolutional: bool = True) -> Precision:
    """The :class:`Precision` for the settings ``amp`` and ``channels_last`` on ``device``.

    Raises ``ValueError`` for ``amp=on`` on a CPU without native bf16 (naming the setting and
    what the CPU lacks)."""
    amp = normalize_choice(amp, "train.amp")
    cl = normalize_choice(channels_last, "train.channels_last")
    device = torch.device(device)
    dtype = None
    if device.type == "cuda":
        if amp != "off":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif device.type == "cpu":
        if amp == "on" and not cpu_has_native_bf16():
            raise ValueError(
                f"train.amp=on: this CPU has no native bf16 ({cpu_description()}; needs AVX-512 BF16 "
                "or AMX on x86, BF16 on ARM) and emulated bf16 is slower than fp32; use "
                "train.amp=auto or off"
            )
        if amp != "off" and cpu_has_native_bf16():
            dtype = torch.bfloat16
    elif amp == "on":
        raise ValueError(f"train.amp=on: no mixed precision on device type {device.type!r}; use auto or off")
    use_cl = cl == "on" or (cl == "auto" and convolutional and device.type in ("cpu", "cuda"))
    return Precision(device.type, dtype, use_cl)


__all__ = ["CHOICES", "Precision", "cpu_description", "cpu_has_native_bf16", "normalize_choice", "resolve_precision"]

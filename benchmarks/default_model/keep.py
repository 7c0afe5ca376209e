"""Keep a teacher's weights in git: a run's best checkpoint, slimmed (no optimizer state, fp16
weights) into ``benchmarks/default_model/weights/NAME.pt``, which ``distill.teacher`` and
``choose.py teachers`` take like any checkpoint.

    python benchmarks/default_model/keep.py --run benchmarks/default_model/teacher_w48_strong_r3 --name w48_strong

Run directories keep their checkpoints out of git, so every move to a fresh machine lost the
teachers (twice); a kept file survives in the clone. fp16 halves the size (a width-48 teacher is
5 MB); the weights load back as fp32 (``dicc.checkpoint.model_from_checkpoint``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from package import KEEP  # noqa: E402


def slim(ckpt: dict) -> dict:
    """The checkpoint without optimizer, scheduler or RNG state, its float weights in fp16."""
    out = {k: ckpt[k] for k in KEEP if k in ckpt}
    out["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    return out


def main() -> None:
    from dicc.checkpoint import load_checkpoint, save_atomic

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run directory (its checkpoints/best.pt) or a .pt file")
    ap.add_argument("--name", required=True, help="the kept file's name, without .pt")
    ap.add_argument("--out-dir", default=str(HERE / "weights"))
    args = ap.parse_args()
    ckpt = load_checkpoint(args.run)
    out = Path(args.out_dir) / f"{args.name}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(slim(ckpt), out)
    print(f"{out}: epoch {ckpt.get('epoch')} of {ckpt['_path']}, {out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

import os

import pytest
import torch

from dicc.config import load_config

# Tests compare the engine, a .pt Recognizer and DDP against fp32 references (hand computations,
# ONNX Runtime, single-process evaluation) to 1e-6, so `auto` must mean fp32 on every machine: on
# a CPU with native bf16 (CI's) it would otherwise mean bf16. Tests of the bf16 paths set
# DICC_CPU_BF16=1 themselves (tests/test_precision.py); subprocesses (torchrun) inherit this.
os.environ["DICC_CPU_BF16"] = "0"

# the models and batches in tests are tiny: one thread is as fast and never oversubscribes
torch.set_num_threads(1)

# a small long-tailed draw from the built-in synthetic data, so engine tests take seconds
TINY_COUNTS = "[24,8,24,64,32,16,48]"


@pytest.fixture
def tiny_config(tmp_path):
    """A config for a fast run on a small subset of the built-in data (width-4 CNN)."""

    def make(*overrides, out="run"):
        return load_config(
            None,
            [
                f"data.longtail={TINY_COUNTS}",
                "data.val=holdout",
                "model.width=4",
                "train.epochs=2",
                "train.batch_size=32",
                "train.progress=false",
                "optim.lr=0.05",
                f"train.out={tmp_path / out}",
                *overrides,
            ],
        )

    return make

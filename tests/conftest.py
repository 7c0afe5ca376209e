import pytest
import torch

from dicc.config import load_config

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

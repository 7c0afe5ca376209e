"""Tests that check learning, not just plumbing: every registered method, trained briefly on the
built-in data, beats chance by a clear margin; DICC's sub-classes agree with the built-in data's
hidden styles better than k-means on the pixels does."""

import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from dicc.checkpoint import load_checkpoint
from dicc.clustering import SubclassClusterer
from dicc.config import load_config
from dicc.data.build import build_run_data
from dicc.engine import fit
from dicc.strategies import available_strategies

CHANCE = 1 / 7
# the whole built-in training split (3,222 faces after the hold-out), 3 epochs: about 20 s a method
BASE = ["model.width=8", "train.epochs=3", "train.batch_size=64", "train.progress=false", "optim.lr=0.05"]
OPTIONS = {"dicc": ["method.options.warmup_epochs=1", "method.options.n_init=1"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(available_strategies()))
def test_every_method_learns(name, tmp_path):
    cfg = load_config(None, [*BASE, f"method.name={name}", *OPTIONS.get(name, []), f"train.out={tmp_path / name}"])
    res = fit(cfg, log=lambda *a: None)
    # the test split of the built-in data is balanced (100 faces per class); chance is 1/7 = 0.143 and
    # one standard error of a chance-level score about 0.013: 0.243 is far out of its reach
    assert res.final["mean_class_accuracy"] > 1.7 * CHANCE, res.final["mean_class_accuracy"]


def test_dicc_subclasses_find_the_hidden_styles_better_than_pixels(tmp_path):
    """The built-in faces come in hidden styles per expression (extras["style"]); with one
    sub-class per style for happy and neutral (size=270), DICC's pseudo-labels match the styles
    better than the same per-class k-means on the raw pixels."""
    cfg = load_config(
        None,
        [
            "model.width=8",
            "train.epochs=6",
            "train.batch_size=64",
            "train.progress=false",
            "method.name=dicc",
            "method.options.size=270",
            "method.options.warmup_epochs=2",
            "method.options.n_init=2",
            "data.test_split=null",
            f"train.out={tmp_path / 'd'}",
        ],
    )
    fit(cfg, log=lambda *a: None)
    state = load_checkpoint(tmp_path / "d" / "checkpoints" / "last.pt")["strategy"]["state"]
    train = build_run_data(cfg.data, need_test=False).train
    labels, styles, pseudo = train.labels, train.extras["style"], state["pseudo"]
    from dicc.clustering import SubclassPlan

    plan = SubclassPlan.from_dict(state["plan"])
    pixels = train.images.flatten(1).float()
    pixels = torch.nn.functional.normalize(pixels - pixels.mean(1, keepdim=True), dim=1)
    pix = SubclassClusterer(plan, n_init=3, seed=0).fit(pixels, labels).labels_
    dicc_ari, pix_ari = [], []
    for c in plan.split_classes:
        m = labels == c
        dicc_ari.append(adjusted_rand_score(styles[m].numpy(), pseudo[m].numpy()))
        pix_ari.append(adjusted_rand_score(styles[m].numpy(), pix[m].numpy()))
    assert sum(dicc_ari) / len(dicc_ari) > sum(pix_ari) / len(pix_ari) + 0.05, (dicc_ari, pix_ari)

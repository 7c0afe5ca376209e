"""Sub-class supervised contrastive loss against a hand computation (loops over anchors and
positives), its reduction to plain SupCon with one sub-class per class, and the projection head."""

import math

import pytest
import torch
import torch.nn.functional as F

from dicc.contrastive import ProjectionHead, subclass_supcon

from helpers import interrupt_after_epoch_1


def _by_hand(z, sub, cls, t, tb, w):
    z = z.tolist()
    m = len(z)
    total = 0.0
    for i in range(m):
        sims = [sum(a * b for a, b in zip(z[i], z[j])) / t for j in range(m)]
        denom = math.log(sum(math.exp(sims[k]) for k in range(m) if k != i))
        logp = {j: sims[j] - denom for j in range(m) if j != i}
        ps = [j for j in logp if sub[j] == sub[i]]
        pc = [j for j in logp if cls[j] == cls[i]]
        li = 0.0
        if ps:
            li -= (t / tb) * sum(logp[j] for j in ps) / len(ps)
        if pc:
            li -= w * sum(logp[j] for j in pc) / len(pc)
        total += li
    return total / m


def _batch():
    g = torch.Generator().manual_seed(0)
    # 4 images x 2 views; class 0 split into sub-classes 0 and 1 (sub-class 1 has ONE image),
    # class 1 is one sub-class (2) with two images, plus a class-2 singleton (sub-class 3)
    z = F.normalize(torch.randn(8, 5, generator=g), dim=1)
    sub = torch.tensor([0, 1, 2, 2, 0, 1, 2, 2])
    cls = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    return z, sub, cls


def test_loss_equals_a_hand_computation():
    z, sub, cls = _batch()
    got = subclass_supcon(z, sub, cls, temperature=0.5, base_temperature=0.07, class_weight=0.25)
    assert got.item() == pytest.approx(_by_hand(z, sub.tolist(), cls.tolist(), 0.5, 0.07, 0.25), rel=1e-5)
    # a singleton with one view only has no positive: its terms add nothing (no NaN)
    one = subclass_supcon(z[:5], torch.tensor([0, 1, 2, 2, 9]), torch.tensor([0, 0, 1, 1, 5]), temperature=0.5)
    assert math.isfinite(one.item())
    assert one.item() == pytest.approx(_by_hand(z[:5], [0, 1, 2, 2, 9], [0, 0, 1, 1, 5], 0.5, 0.07, 0.25), rel=1e-5)


def test_one_subclass_per_class_is_scaled_plain_supcon():
    z, _, cls = _batch()
    t, tb, w = 0.1, 0.07, 0.25
    plain = _by_hand(z, cls.tolist(), cls.tolist(), t, 1.0 * t, 0.0)  # SupCon: -mean log p over class positives
    got = subclass_supcon(z, cls, cls, temperature=t, base_temperature=tb, class_weight=w)
    assert got.item() == pytest.approx((t / tb + w) * plain, rel=1e-5)


def test_contrast_set_with_offset_equals_the_whole_batch_split_in_two():
    # DDP: each rank's anchors against every rank's rows give the same mean as one process
    z, sub, cls = _batch()
    whole = subclass_supcon(z, sub, cls)
    halves = [
        subclass_supcon(z[a:b], sub[a:b], cls[a:b], contrast=(z, sub, cls), offset=a) for a, b in ((0, 4), (4, 8))
    ]
    assert ((halves[0] + halves[1]) / 2).item() == pytest.approx(whole.item(), rel=1e-6)


def test_gradients_pull_positives_together():
    z, sub, cls = _batch()
    z = z.clone().requires_grad_(True)
    loss = subclass_supcon(z, sub, cls)
    loss.backward()
    step = F.normalize(z - 0.5 * z.grad, dim=1).detach()
    assert subclass_supcon(step, sub, cls).item() < loss.item()


def test_projection_head_is_normalised_and_two_layers():
    head = ProjectionHead(16, 128)
    out = head(torch.randn(3, 16))
    assert out.shape == (3, 128)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-6)
    assert [type(m).__name__ for m in head.net] == ["Linear", "ReLU", "Linear"]


# -- DICC's contrastive option -------------------------------------------------------------------
FER_IF100 = [387, 43, 1077, 4300, 1796, 139, 2997]


def test_sbcl_sizing_rule_gives_tail_sized_subclasses_without_a_cap():
    from dicc.clustering import plan_subclasses

    p = plan_subclasses(FER_IF100, size="sbcl", min_size_floor=20, k_max=4)
    # s = max(n_min = 43, 20) = 43; k_c = n_c // 43, at least 1, no k_max cap
    assert p.size == 43 and p.k == [387 // 43, 1, 1077 // 43, 100, 1796 // 43, 139 // 43, 2997 // 43]
    assert p.k_max == 100 and p.size_rule == "sbcl"
    assert plan_subclasses([30, 5, 50], size="sbcl", min_size_floor=10).k == [3, 1, 5]  # s = max(5, 10)


def test_option_shapes_the_model_views_and_head():
    from dicc.strategies import create_strategy

    plain = create_strategy("dicc", FER_IF100)
    assert plain.views == 1 and plain.projection_dim is None and plain.num_outputs == plain.plan.S
    con = create_strategy("dicc", FER_IF100, {"contrastive": 0.5, "head": "parent", "parent_loss": "balanced_softmax"})
    assert con.views == 2 and con.projection_dim == 128
    assert con.num_outputs == 7  # a class head; the sub-classes only feed the contrastive term
    z = torch.randn(4, 7)
    assert torch.equal(con.parent_logits(z), z)
    for bad, msg in (
        ({"head": "both"}, "unknown head"),
        ({"contrastive": -1}, "contrastive must be"),
        ({"con_temperature": 0}, "con_temperature must be"),
        ({"projection_dim": 0}, "projection_dim"),
    ):
        with pytest.raises(ValueError, match=msg):
            create_strategy("dicc", FER_IF100, bad)


def test_embedding_loss_uses_pseudo_labels_and_with_kmax1_is_scaled_supcon():
    from dicc.strategies import create_strategy

    counts = [6, 2, 4]
    z = F.normalize(torch.randn(8, 5, generator=torch.Generator().manual_seed(3)), dim=1)
    idx = torch.tensor([0, 3, 6, 9, 0, 3, 6, 9])  # two views of four images
    y = torch.tensor([0, 0, 1, 2, 0, 0, 1, 2])
    one = create_strategy("dicc", counts, {"contrastive": 2.0, "k_max": 1})
    t, tb, w = 0.1, 0.07, 0.25
    want = 2.0 * (t / tb + w) * _by_hand(z, y.tolist(), y.tolist(), t, t, 0.0)
    assert one.embedding_loss(z, y, idx).item() == pytest.approx(want, rel=1e-5)
    # split: the sub-class positives are the pseudo-labels of the dataset indices
    split = create_strategy("dicc", counts, {"contrastive": 1.0, "size": 3})
    split.split = True
    split.pseudo = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4])
    sub = split.pseudo[idx]
    assert split.embedding_loss(z, y, idx).item() == pytest.approx(
        _by_hand(z, sub.tolist(), y.tolist(), t, tb, w), rel=1e-5
    )
    assert create_strategy("dicc", counts).embedding_loss(z, y, idx) is None


def test_training_sees_two_views_and_resumes_exactly(tiny_config, monkeypatch):
    from dicc.engine import fit
    from dicc.strategies.dicc import DICC

    opts = [
        "method.name=dicc",
        "method.options.contrastive=0.5",
        "method.options.head=parent",
        "method.options.parent_loss=balanced_softmax",
        "method.options.size=sbcl",
        "method.options.size_floor=8",
        "method.options.warmup_epochs=1",
        "train.epochs=3",
    ]
    seen = []
    real_loss = DICC.embedding_loss

    def spy(self, z, targets, indices):
        seen.append((z.shape, indices.clone()))
        return real_loss(self, z, targets, indices)

    monkeypatch.setattr(DICC, "embedding_loss", spy)
    full = fit(tiny_config(*opts, out="full"), log=lambda *a: None)
    shape, idx = seen[0]
    half = len(idx) // 2
    assert shape == (len(idx), 128) and torch.equal(idx[:half], idx[half:])  # the same images, twice
    ckpt = torch.load(full.run_dir / "checkpoints/last.pt", weights_only=True)
    assert ckpt["model_spec"]["projection_dim"] == 128 and "projector.net.0.weight" in ckpt["model"]
    assert ckpt["model"]["head.weight"].shape[0] == 7
    monkeypatch.setattr(DICC, "embedding_loss", real_loss)

    cfg = tiny_config(*opts, out="cut")
    interrupt_after_epoch_1(cfg, monkeypatch)
    resumed = fit(cfg, resume=True, log=lambda *a: None)
    b = torch.load(resumed.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    for k in ckpt["model"]:
        assert torch.equal(ckpt["model"][k], b[k]), k
    assert resumed.final["confusion_matrix"] == full.final["confusion_matrix"]
    # what predicts is the class head alone (the projector is only for training)
    from dicc.checkpoint import load_checkpoint, model_from_checkpoint

    model, strategy = model_from_checkpoint(load_checkpoint(full.run_dir))
    assert model.projection_dim == 128 and strategy.num_outputs == 7


def test_mixup_with_the_contrastive_term_is_refused():
    from dicc.config import load_config
    from dicc.validate import check_config

    cfg = load_config(None, ["method.name=dicc", "method.options.contrastive=1", "augment.mixup=0.2"])
    with pytest.raises(ValueError, match="augment.mixup with method.options.contrastive"):
        check_config(cfg)


@pytest.mark.slow
def test_under_ddp_embeddings_are_gathered_with_their_gradients_and_ranks_agree(tmp_path):
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    run = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    overrides = [
        "data.longtail=[24,8,24,64,32,16,48]",
        "model.width=4",
        "train.epochs=2",
        "train.batch_size=16",
        "train.progress=false",
        "method.name=dicc",
        "method.options.contrastive=0.5",
        "method.options.warmup_epochs=1",
        "method.options.n_init=1",
    ]
    cmd = [*run, "--standalone", "--nproc_per_node=2", str(here / "ddp_contrastive_worker.py"), str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run([*cmd, *overrides], env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-4000:]
    f0, f1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert f0["world_size"] == 2 and (f0["offset"], f1["offset"]) == (0, 4)
    assert f0["grad_matches"] and f1["grad_matches"], (f0["grad_max_diff"], f1["grad_max_diff"])
    assert f0["weights"] == f1["weights"]

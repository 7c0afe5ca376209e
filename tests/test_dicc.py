"""The ``dicc`` strategy: plan, warm-up, head split, pseudo-labels, losses, merge, checkpoints."""

from __future__ import annotations

import json
import math

import pytest

from dicc.strategies.base import build_options
import torch
import torch.nn.functional as F

from dicc.models import create_model
from dicc.strategies import EpochContext, available_strategies, create_strategy

FER_IF100 = [387, 43, 1077, 4300, 1796, 139, 2997]


def synthetic_features(counts, styles, dim=16, seed=0):
    """L2-normalised features with ``styles[c]`` well-separated hidden styles in class ``c``."""
    g = torch.Generator().manual_seed(seed)
    feats, labels = [], []
    for c, (n, s) in enumerate(zip(counts, styles)):
        center = 2.0 * torch.randn(dim, generator=g)
        offs = 1.5 * torch.randn(s, dim, generator=g)
        x = center + offs[torch.arange(n) % s] + 0.2 * torch.randn(n, dim, generator=g)
        feats.append(x)
        labels.append(torch.full((n,), c))
    return F.normalize(torch.cat(feats), dim=1), torch.cat(labels)


class FakeRun:
    """Stands in for the engine: a model, synthetic 'extracted' features, a log."""

    def __init__(self, counts, styles, num_outputs, seed=0):
        torch.manual_seed(seed)
        self.model = create_model("vgg_fer", num_outputs, width=4)
        self.model.eval()
        self.features, self.labels = synthetic_features(counts, styles, seed=seed)
        self.records: list[dict] = []
        self.extractions = 0

    def extract(self, indices=None):
        self.extractions += 1
        if indices is not None:
            return self.features[indices].clone(), self.labels[indices].clone()
        return self.features.clone(), self.labels.clone()

    def ctx(self, epoch, epochs=20, rank=0, world_size=1, broadcast=None):
        kw = {} if broadcast is None else {"broadcast": broadcast}
        return EpochContext(
            epoch=epoch,
            epochs=epochs,
            model=self.model,
            device=torch.device("cpu"),
            extract_features=self.extract,
            log=self.records.append,
            rank=rank,
            world_size=world_size,
            **kw,
        )


SMALL_COUNTS = [120, 40, 90]  # median 90 -> k = [1, 1, 1]; with size=40: k = [3, 1, 2]
SMALL_STYLES = [3, 1, 2]


# the clean feature pass (FakeRun hands out features), hard targets: what these tests check by hand
SMALL_OPTS = {"size": 40, "warmup_epochs": 2, "n_init": 2, "feature_source": "clean", "soft_sibling": 0.0}


def small(options=None, seed=0):
    opts = dict(SMALL_OPTS)
    opts.update(options or {})
    strat = create_strategy("dicc", SMALL_COUNTS, opts)
    run = FakeRun(SMALL_COUNTS, SMALL_STYLES, strat.num_outputs, seed=seed)
    return strat, run


def images(n=6, seed=0):
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


# -- plan, registration, presentation ---------------------------------------------------------
def test_registered_with_plan_from_counts():
    assert "dicc" in available_strategies()
    strat = create_strategy("dicc", FER_IF100)
    assert strat.plan.k == [1, 1, 1, 3, 1, 1, 2]
    assert strat.num_outputs == 10 and strat.num_classes == 7
    assert strat.head_type == "linear"
    for key in ("base_loss", "parent_loss"):  # refused when the options are built, before training
        with pytest.raises(ValueError, match=f"unknown {key} 'ldam'"):
            build_options(type(strat), {key: "ldam"})
    with pytest.raises(ValueError, match="unknown merge 'mean'; valid: logsumexp, max"):
        build_options(type(strat), {"merge": "mean"})
    strat.class_names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    text = strat.describe()
    assert "happy" in text and "S = 10" in text
    rec = strat.plan_record()
    json.dumps(rec)  # plain values only
    assert rec["plan"]["k"] == strat.plan.k and rec["options"]["size"] == "median"


def test_option_errors():
    with pytest.raises(ValueError, match="valid:.*k_max"):
        create_strategy("dicc", FER_IF100, {"kmax": 3})
    with pytest.raises(ValueError, match="logsumexp, max"):
        create_strategy("dicc", FER_IF100, {"merge": "mean"})
    with pytest.raises(ValueError, match="torch, sklearn"):
        create_strategy("dicc", FER_IF100, {"backend": "faiss"})
    with pytest.raises(ValueError, match="unknown base_loss .nope."):
        create_strategy("dicc", FER_IF100, {"base_loss": "nope"})
    with pytest.raises(ValueError, match="unknown sampler 'even'; valid: none, balanced, sqrt, subclass"):
        create_strategy("dicc", FER_IF100, {"sampler": "even"})


# -- warm-up --------------------------------------------------------------------------------
def test_warmup_uses_only_the_first_row_of_each_class():
    strat, run = small()
    assert strat.plan.k == [3, 1, 2] and strat.plan.offsets.tolist() == [0, 3, 4]
    logits = torch.randn(5, 6)
    assert torch.equal(strat.parent_logits(logits), logits[:, [0, 3, 4]])
    # no gradient reaches the dead rows during warm-up
    model = run.model
    model.train()
    y = torch.tensor([0, 1, 2, 0, 2, 1])
    loss = strat.loss(model(images()), y, torch.arange(6))
    loss.backward()
    g = model.head.weight.grad
    dead = [1, 2, 5]
    assert g[dead].abs().sum() == 0 and g[[0, 3, 4]].abs().sum() > 0
    assert model.head.bias.grad[dead].abs().sum() == 0


def test_schedule_clusters_exactly_at_the_scheduled_epochs():
    strat, run = small({"warmup_epochs": 3, "recluster_every": 2})
    for epoch in range(10):
        strat.on_epoch_start(run.ctx(epoch))
    assert [r["epoch"] for r in run.records] == [4, 6, 8, 10]  # 1-based: the epoch each one starts
    assert run.extractions == 4
    assert [strat.is_cluster_epoch(e) for e in range(6)] == [False, False, False, True, False, True]
    rec = run.records[1]
    assert rec["event"] == "recluster" and set(rec["sizes"]) == {"0", "2"}
    assert set(rec["nmi"]) == {"0", "2"} and rec["nmi"]["0"] > 0.99
    for key in ("inertia", "time_features", "time_cluster"):
        assert key in rec
    assert run.records[0]["first_split"] and not run.records[1]["first_split"]
    # recluster_every=0: once, at the end of warm-up
    strat, run = small({"warmup_epochs": 1, "recluster_every": 0})
    for epoch in range(5):
        strat.on_epoch_start(run.ctx(epoch))
    assert [r["epoch"] for r in run.records] == [2]
    # calling the hook twice for one epoch (resume) clusters once
    strat.on_epoch_start(run.ctx(1))
    assert len(run.records) == 1


# -- the split ------------------------------------------------------------------------------
@pytest.mark.parametrize("merge", ["logsumexp", "max"])
def test_split_keeps_parent_predictions(merge):
    strat, run = small({"merge": merge})
    model, x = run.model, images()
    with torch.no_grad():
        before_sub = model(x)
        before = strat.parent_logits(before_sub)
    # the dead rows are random: merging all rows now would change the parent logits
    full = torch.stack([before_sub[:, 0:3].logsumexp(1), before_sub[:, 3], before_sub[:, 4:6].logsumexp(1)], 1)
    assert not torch.allclose(full, before, atol=1e-3)
    strat.on_epoch_start(run.ctx(2))
    assert strat.split
    with torch.no_grad():
        after_sub = model(x)
        after = strat.parent_logits(after_sub)
    assert torch.allclose(before, after, atol=1e-5)
    assert torch.equal(before.argmax(1), after.argmax(1))
    w, b = model.head.weight, model.head.bias
    for rows in ([0, 1, 2], [4, 5]):
        assert torch.equal(w[rows[1:]], w[rows[0]].expand(len(rows) - 1, -1))
        assert torch.equal(b[rows[1:]], b[rows[0]].expand(len(rows) - 1))
    if merge == "logsumexp":
        assert torch.allclose(after_sub[:, 0], before_sub[:, 0] - math.log(3), atol=1e-5)


def test_head_rewritten_in_place():
    strat, run = small({"recluster_every": 1})
    head = run.model.head
    ids = (id(head), id(head.weight), id(head.bias))
    ptrs = (head.weight.data_ptr(), head.bias.data_ptr())
    for epoch in range(5):
        strat.on_epoch_start(run.ctx(epoch))
    assert len(run.records) == 3
    assert run.model.head is head
    assert (id(run.model.head), id(head.weight), id(head.bias)) == ids
    assert (head.weight.data_ptr(), head.bias.data_ptr()) == ptrs
    # re-clustering after the split leaves the head alone
    w = head.weight.detach().clone()
    strat.on_epoch_start(run.ctx(5))
    assert torch.equal(head.weight, w)


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_split_copies_the_parent_rows_optimizer_state(opt):
    """After warm-up steps (dead rows: no loss gradient, only weight decay), the split gives
    the sibling rows the parent row's optimizer state, so a step on a parent-level loss (which
    treats identical sibling rows alike) keeps them identical, as if the parent had been split
    into equal shares from the start."""
    strat, run = small({"parent_weight": 0.0})
    model = run.model
    model.train()
    optimizer = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        if opt == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=5e-4)
    )
    x, y = images(12), torch.tensor([0, 1, 2] * 4)
    idx = torch.arange(12)

    def step(loss_fn):
        optimizer.zero_grad()
        loss_fn(model(x)).backward()
        optimizer.step()

    for _ in range(3):  # warm-up: the base loss on the live rows only
        step(lambda z: strat.loss(z, y, idx))
    w = model.head.weight
    st = optimizer.state[w]
    key = "momentum_buffer" if opt == "sgd" else "exp_avg_sq"
    assert not torch.allclose(st[key][1], st[key][0])  # the dead row's state is its own
    ctx = EpochContext(
        epoch=2, epochs=20, model=model, device=torch.device("cpu"), extract_features=run.extract, optimizer=optimizer
    )
    model.eval()
    strat.on_epoch_start(ctx)
    model.train()
    for p in (w, model.head.bias):
        for name, t in optimizer.state[p].items():
            if torch.is_tensor(t) and t.shape == p.shape:
                for rows in ([0, 1, 2], [4, 5]):
                    assert torch.equal(t[rows[1:]], t[rows[0]].expand(len(rows) - 1, *t.shape[1:])), name
    step(lambda z: F.cross_entropy(strat.parent_logits(z), y))
    for rows in ([0, 1, 2], [4, 5]):
        assert torch.allclose(w[rows[1:]], w[rows[0]].expand(len(rows) - 1, -1), atol=1e-7)


def _chi2_uniform(groups: torch.Tensor, n: int) -> float:
    observed = torch.bincount(groups, minlength=n).double()
    expected = len(groups) / n
    return float(((observed - expected) ** 2 / expected).sum())


def test_sampler_options_draw_classes_then_subclasses_evenly():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(SMALL_COUNTS)])
    plain, _ = small()
    assert torch.equal(
        plain.epoch_indices(labels, 3, seed=1), create_strategy("ce", SMALL_COUNTS).epoch_indices(labels, 3, seed=1)
    )  # "none": the shuffle
    balanced, _ = small({"sampler": "balanced"})
    resample = create_strategy("resample", SMALL_COUNTS)
    for epoch in (0, 4):  # the resample method's draw, before and after the split
        assert torch.equal(balanced.epoch_indices(labels, epoch, seed=2), resample.epoch_indices(labels, epoch, seed=2))

    strat, run = small({"sampler": "subclass"})
    draws = torch.cat([strat.epoch_indices(labels, e, seed=3) for e in range(30)])  # warm-up: over classes
    assert len(strat.epoch_indices(labels, 0, seed=3)) == len(labels)
    assert _chi2_uniform(labels[draws], 3) < 13.82  # chi-square, 2 dof, p = 0.001
    strat.on_epoch_start(run.ctx(2))  # split into 3 + 1 + 2 sub-classes
    draws = torch.cat([strat.epoch_indices(labels, e, seed=3) for e in range(30)])
    assert _chi2_uniform(strat.pseudo[draws], 6) < 20.52  # 5 dof, p = 0.001
    # which neither the shuffle nor the class-balanced draw passes (the check can fail)
    for other in (plain, balanced):
        drawn = torch.cat([other.epoch_indices(labels, e, seed=3) for e in range(30)])
        assert _chi2_uniform(strat.pseudo[drawn], 6) > 20.52
    # ranks share one draw
    full = strat.epoch_indices(labels, 5, seed=3)
    shards = [strat.epoch_indices(labels, 5, seed=3, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.stack(shards, 1).flatten()[: len(full)], full)


def test_head_size_mismatch_is_an_error():
    strat, run = small()
    run.model = create_model("vgg_fer", 3, width=4)
    with pytest.raises(ValueError, match="6"):
        strat.on_epoch_start(run.ctx(2))


def test_pseudo_labels_stay_in_their_parent_and_find_the_styles():
    strat, run = small()
    strat.on_epoch_start(run.ctx(2))
    pseudo = strat.pseudo
    assert pseudo.shape == (sum(SMALL_COUNTS),) and pseudo.dtype == torch.long
    assert torch.equal(strat.plan.sub_to_parent[pseudo], run.labels)
    for c in (0, 2):
        r = strat.plan.subclass_range(c)
        got = pseudo[run.labels == c]
        assert got.min() >= r.start and got.max() < r.stop
        sizes = torch.bincount(got - r.start, minlength=len(r))
        assert (sizes == SMALL_COUNTS[c] // len(r)).all()  # the hidden styles, exactly
    assert strat.sub_counts.tolist() == [40, 40, 40, 40, 45, 45]


def test_label_mismatch_is_an_error():
    strat = create_strategy("dicc", [100, 40, 90], {"size": 40, "warmup_epochs": 0})
    run = FakeRun(SMALL_COUNTS, SMALL_STYLES, strat.num_outputs)
    with pytest.raises(ValueError, match="class counts"):
        strat.on_epoch_start(run.ctx(0))


# -- losses ---------------------------------------------------------------------------------
@pytest.mark.parametrize("loss,method", [("ce", "ce"), ("balanced_softmax", "balanced_softmax")])
@pytest.mark.parametrize("parent_weight", [1.0, 0.5])
def test_kmax1_is_exactly_the_base_method(loss, method, parent_weight):
    """With no class split, DICC's loss and its gradients are the base method's: the parent term
    only re-weights the same loss, (l + w l) / (1 + w) = l."""
    counts = [120, 40, 90]
    dicc = create_strategy(
        "dicc",
        counts,
        {"k_max": 1, "base_loss": loss, "parent_loss": loss, "parent_weight": parent_weight, "feature_source": "clean"},
    )
    base = create_strategy(method, counts)
    assert dicc.num_outputs == base.num_outputs == 3
    g = torch.Generator().manual_seed(1)
    run = FakeRun([120, 40, 90], [1, 1, 1], 3)
    idx = torch.randperm(250, generator=g)[:32]
    y = run.labels[idx]
    for epoch in (0, 3):  # warm-up, then past the (trivial) split
        dicc.on_epoch_start(run.ctx(epoch, epochs=10))
        a = torch.randn(32, 3, generator=g, requires_grad=True)
        b = a.detach().clone().requires_grad_(True)
        la, lb = dicc.loss(a, y, idx), base.loss(b, y, idx)
        la.backward()
        lb.backward()
        assert torch.allclose(la, lb, rtol=1e-6, atol=1e-7), (epoch, la, lb)
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-8), epoch
    assert dicc.split  # the clustering ran (every class has one sub-class)


def test_loss_is_subclass_ce_plus_parent_ce():
    strat, run = small({"parent_weight": 0.5})
    g = torch.Generator().manual_seed(0)
    idx = torch.tensor([0, 5, 130, 170, 200, 249])
    y = run.labels[idx]
    logits = torch.randn(6, 6, generator=g, requires_grad=True)
    # warm-up: the live rows are a 3-way classifier
    z = logits[:, [0, 3, 4]]
    expect = (F.cross_entropy(z, y) + 0.5 * F.cross_entropy(z, y)) / 1.5
    assert torch.allclose(strat.loss(logits, y, idx), expect, atol=1e-6)
    # after the split: (CE on pseudo-labels + 0.5 CE on logsumexp-merged parents) / 1.5
    strat.on_epoch_start(run.ctx(2))
    t = strat.pseudo[idx]
    parent = torch.stack([logits[:, 0:3].logsumexp(1), logits[:, 3], logits[:, 4:6].logsumexp(1)], 1)
    expect = (F.cross_entropy(logits, t) + 0.5 * F.cross_entropy(parent, y)) / 1.5
    got = strat.loss(logits, y, idx)
    assert torch.allclose(got, expect, atol=1e-6)
    got.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # no parent term
    strat0, run0 = small({"parent_weight": 0.0})
    strat0.on_epoch_start(run0.ctx(2))
    assert torch.allclose(strat0.loss(logits, y, idx), F.cross_entropy(logits, strat0.pseudo[idx]), atol=1e-6)


def test_base_and_parent_losses_use_their_counts():
    strat, run = small({"base_loss": "balanced_softmax", "parent_loss": "balanced_softmax"})
    strat.on_epoch_start(run.ctx(2))
    idx = torch.arange(0, 250, 10)
    y = run.labels[idx]
    logits = torch.randn(len(idx), 6)
    sub_prior = torch.tensor([40.0, 40, 40, 40, 45, 45]).log()
    cls_prior = torch.tensor([120.0, 40, 90]).log()
    parent = torch.stack([logits[:, 0:3].logsumexp(1), logits[:, 3], logits[:, 4:6].logsumexp(1)], 1)
    expect = (F.cross_entropy(logits + sub_prior, strat.pseudo[idx]) + F.cross_entropy(parent + cls_prior, y)) / 2
    assert torch.allclose(strat.loss(logits, y, idx), expect, atol=1e-5)


def test_soft_sibling_targets():
    eps = 0.3
    strat, run = small({"soft_sibling": eps, "parent_weight": 0.0})
    strat.on_epoch_start(run.ctx(2))
    idx = torch.arange(0, 250, 7)
    y = run.labels[idx]
    logits = torch.randn(len(idx), 6)
    t = strat.pseudo[idx]
    q = torch.zeros(len(idx), 6)
    for i, (ti, yi) in enumerate(zip(t.tolist(), y.tolist())):
        r = strat.plan.subclass_range(yi)
        if len(r) == 1:
            q[i, ti] = 1.0
        else:
            q[i, list(r)] = eps / (len(r) - 1)
            q[i, ti] = 1.0 - eps
    expect = -(q * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(strat.loss(logits, y, idx), expect, atol=1e-6)


def test_max_merge():
    strat, run = small({"merge": "max"})
    logits = torch.randn(4, 6)
    assert torch.equal(strat.parent_logits(logits), logits[:, [0, 3, 4]])
    strat.on_epoch_start(run.ctx(2))
    expect = torch.stack([logits[:, 0:3].amax(1), logits[:, 3], logits[:, 4:6].amax(1)], 1)
    assert torch.equal(strat.parent_logits(logits), expect)
    assert torch.equal(strat.parent_merge_module()(logits), expect)


# -- checkpoints ----------------------------------------------------------------------------
def test_state_round_trip_weights_only(tmp_path):
    strat, run = small()
    strat.on_epoch_start(run.ctx(2))
    strat.on_epoch_start(run.ctx(3))
    path = tmp_path / "state.pt"
    torch.save({"strategy": strat.state_dict()}, path)
    state = torch.load(path, weights_only=True)["strategy"]
    fresh = create_strategy("dicc", SMALL_COUNTS, SMALL_OPTS)
    assert not fresh.split
    fresh.load_state_dict(state)
    assert fresh.split and fresh.rounds == 2 and fresh.last_cluster_epoch == 3
    assert torch.equal(fresh.pseudo, strat.pseudo)
    assert torch.equal(fresh.centroids, strat.centroids)
    assert fresh.plan.k == strat.plan.k and torch.equal(fresh.plan.offsets, strat.plan.offsets)
    logits, idx = torch.randn(5, 6), torch.tensor([0, 1, 150, 200, 249])
    y = run.labels[idx]
    assert torch.equal(fresh.parent_logits(logits), strat.parent_logits(logits))
    assert torch.allclose(fresh.loss(logits, y, idx), strat.loss(logits, y, idx))
    # resuming continues with the same sub-classes: the next round is warm-started and matched
    fresh.on_epoch_start(run.ctx(3))  # already done for epoch 3: nothing happens
    assert fresh.rounds == 2
    fresh.on_epoch_start(run.ctx(4))
    assert torch.equal(fresh.pseudo, strat.pseudo)
    assert run.records[-1]["nmi"] == {"0": 1.0, "2": 1.0}
    # another plan is refused
    other = create_strategy("dicc", SMALL_COUNTS, {"size": 60})
    with pytest.raises(ValueError, match="plan"):
        other.load_state_dict(state)
    # a state saved during warm-up loads too
    warm = create_strategy("dicc", SMALL_COUNTS, {"size": 40})
    torch.save(warm.state_dict(), path)
    again = create_strategy("dicc", SMALL_COUNTS, {"size": 40})
    again.load_state_dict(torch.load(path, weights_only=True))
    assert not again.split and again.pseudo is None


def test_ranks_share_rank0_clustering():
    """Rank 0 clusters and broadcasts; another rank only receives (simulated broadcast)."""
    strat0, run = small()
    sent = []

    def send(t, src=0):
        sent.append(t.clone())
        return t

    strat0.on_epoch_start(run.ctx(2, rank=0, world_size=2, broadcast=send))
    strat1 = create_strategy("dicc", SMALL_COUNTS, SMALL_OPTS)
    received = iter(sent)

    def receive(t, src=0):
        t.copy_(next(received))
        return t

    n_records = len(run.records)
    strat1.on_epoch_start(run.ctx(2, rank=1, world_size=2, broadcast=receive))
    assert torch.equal(strat1.pseudo, strat0.pseudo) and torch.equal(strat1.centroids, strat0.centroids)
    assert len(run.records) == n_records  # only rank 0 logs


# -- gallery --------------------------------------------------------------------------------
def test_gallery_png(tmp_path):
    from PIL import Image

    from dicc.gallery import draw_gallery, nearest_members

    strat, run = small()
    strat.on_epoch_start(run.ctx(2))
    n = len(run.labels)
    imgs = torch.randint(0, 256, (n, 1, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = draw_gallery(
        imgs,
        run.features,
        run.labels,
        strat.pseudo,
        strat.plan,
        ["a", "b", "c"],
        tmp_path / "g" / "gallery.png",
        per_subclass=4,
    )
    assert out.exists()
    rows = 3 + 2  # class a: 3 sub-classes, class c: 2
    assert Image.open(out).size == (int((4 + 3.5) * 48), rows * 48)
    picks = nearest_members(run.features, strat.pseudo, strat.plan, per_subclass=4)
    assert sorted(picks) == [0, 1, 2, 4, 5]
    for j, idx in picks.items():
        assert len(idx) == 4 and (strat.pseudo[idx] == j).all()
    with pytest.raises(ValueError, match="another class"):
        bad = strat.pseudo.clone()
        bad[0] = 3 if int(run.labels[0]) != 1 else 0
        draw_gallery(imgs, run.features, run.labels, bad, strat.plan, ["a", "b", "c"], tmp_path / "x.png")

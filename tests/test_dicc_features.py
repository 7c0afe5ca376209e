"""DICC's ``feature_source="train"``: the clustering uses the penultimate features the training
forward passes computed, kept per dataset index, instead of an extra clean pass."""

from __future__ import annotations

import json
import threading

import pytest
import torch
import torch.nn.functional as F

from dicc.models import create_model
from dicc.strategies import EpochContext, create_strategy

COUNTS = [12, 4, 8]  # size=4 -> k = [3, 1, 2]
N = sum(COUNTS)
LABELS = torch.tensor([c for c, n in enumerate(COUNTS) for _ in range(n)])


def make(options=None, dropout=0.0, seed=0):
    opts = {"size": 4, "warmup_epochs": 2, "n_init": 1, "feature_source": "train"}
    opts.update(options or {})
    strat = create_strategy("dicc", COUNTS, opts)
    torch.manual_seed(seed)
    model = create_model("vgg_fer", strat.num_outputs, width=4, dropout=dropout)
    return strat, model


class Ctx:
    """The engine's side: clean features on request (recording which were asked for)."""

    def __init__(self, model, images):
        self.model, self.images, self.calls, self.records = model, images, [], []

    def extract(self, indices=None):
        idx = torch.arange(N) if indices is None else torch.as_tensor(indices).long()
        self.calls.append(idx.clone())
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            f = F.normalize(self.model.features(self.images[idx]), dim=1)
        self.model.train(was)
        return f, LABELS[idx]

    def __call__(self, epoch, **kw):
        return EpochContext(
            epoch=epoch,
            epochs=10,
            model=self.model,
            device=torch.device("cpu"),
            extract_features=self.extract,
            log=self.records.append,
            **kw,
        )


def train_epoch(strat, model, ctx, epoch, order, batch_size=5, drop_last=True):
    """What the engine does in one epoch (without the optimiser): epoch hook, forward (with the
    features when the strategy wants them), loss. Returns {index: expected feature} of the
    (augmented) batches it trained on."""
    strat.on_epoch_start(ctx(epoch))
    model.train()
    seen = {}
    batches = list(order.split(batch_size))
    if drop_last and len(batches[-1]) < batch_size:
        batches = batches[:-1]
    g = torch.Generator().manual_seed(100 + epoch)
    for idx in batches:
        x = ctx.images[idx] + 0.1 * torch.randn(ctx.images[idx].shape, generator=g)  # "augmented"
        if strat.wants_features:
            logits, feats = model(x, return_features=True)
            strat.observe_features(feats.detach(), LABELS[idx], idx)
        else:
            logits = model(x)
        strat.loss(logits, LABELS[idx], idx).backward()
        with torch.no_grad():  # the same batch again, same train mode: the reference features
            ref = F.normalize(model.features(x), dim=1)
        seen.update({int(i): r for i, r in zip(idx, ref)})
    return seen


def images(seed=0):
    return torch.rand(N, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_kept_features_are_the_penultimate_features_of_the_augmented_batch():
    strat, model = make(dropout=0.5)  # kept before dropout, not the head's dropped input
    ctx = Ctx(model, images())
    order = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    seen = train_epoch(strat, model, ctx, 0, order)
    assert len(seen) == 20  # 24 samples, batches of 5, drop_last: 4 left over
    bank = strat.bank
    for i, ref in seen.items():
        assert torch.allclose(bank.feats[i], ref, atol=1e-5)
        assert int(bank.epochs[i]) == 0 and int(bank.labels[i]) == int(LABELS[i])
    left = [i for i in range(N) if i not in seen]
    assert (bank.epochs[left] == -1).all()


def test_every_index_gets_a_feature_newest_first_then_clean():
    strat, model = make()
    ctx = Ctx(model, images())
    g = torch.Generator().manual_seed(1)
    # batches of 5 with drop_last: 20 of the 24 indices are trained on per epoch; index 0 is
    # left over in both epochs, index 1 only in epoch 1
    rest = torch.randperm(N - 2, generator=g) + 2
    seen0 = train_epoch(strat, model, ctx, 0, torch.cat([rest[:19], torch.tensor([1]), rest[19:], torch.tensor([0])]))
    rest = torch.randperm(N - 2, generator=g) + 2
    seen1 = train_epoch(strat, model, ctx, 1, torch.cat([rest[:20], torch.tensor([0, 1]), rest[20:]]))
    assert len(seen0) == len(seen1) == 20
    assert 0 not in seen0 and 0 not in seen1 and 1 in seen0 and 1 not in seen1
    never = [i for i in range(N) if i not in seen0 and i not in seen1]
    ctx.calls.clear()
    feats, labels, counts = strat.bank.for_clustering(ctx(2))
    assert feats.shape == (N, model.head.in_features) and torch.equal(labels, LABELS)
    assert counts == {"train": 20, "older": N - 20 - len(never), "clean": len(never)}
    assert len(ctx.calls) == 1 and ctx.calls[0].tolist() == never  # a clean pass over those only
    for i in range(N):
        want = seen1.get(i, seen0.get(i))
        if want is None:
            want = ctx.extract(torch.tensor([i]))[0][0]
        assert torch.allclose(feats[i], want, atol=1e-5), i
    assert torch.allclose(feats.norm(dim=1), torch.ones(N), atol=1e-5)
    # the clustering itself: every index has a pseudo-label inside its class, logged sources
    strat.on_epoch_start(ctx(2))
    assert strat.split and strat.pseudo.shape == (N,)
    assert torch.equal(strat.plan.sub_to_parent[strat.pseudo], LABELS)
    rec = [r for r in ctx.records if r.get("event") == "recluster"][-1]
    assert sum(rec["features"].values()) == N
    json.dumps(rec)


def test_head_rewritten_in_place_and_no_clean_pass_once_every_index_was_seen():
    strat, model = make({"recluster_every": 1})
    ctx = Ctx(model, images())
    head = model.head
    ids = (id(head), id(head.weight), id(head.bias), head.weight.data_ptr(), head.bias.data_ptr())
    for epoch in range(5):
        order = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))
        train_epoch(strat, model, ctx, epoch, order)
    strat.on_epoch_start(ctx(5))
    assert model.head is head
    assert (id(model.head), id(head.weight), id(head.bias), head.weight.data_ptr(), head.bias.data_ptr()) == ids
    recs = [r for r in ctx.records if r.get("event") == "recluster"]
    assert [r["epoch"] for r in recs] == [3, 4, 5, 6]  # 1-based: the epoch each re-clustering starts
    # after the first split no clean images are needed: indices dropped in an epoch keep older rows
    assert all(r["features"]["clean"] == 0 for r in recs[1:])
    assert all(sum(r["features"].values()) == N for r in recs)


def test_state_round_trips_and_a_resumed_run_starts_from_a_clean_pass(tmp_path):
    strat, model = make()
    ctx = Ctx(model, images())
    for epoch in range(3):
        train_epoch(strat, model, ctx, epoch, torch.randperm(N, generator=torch.Generator().manual_seed(epoch)))
    state = strat.state_dict()
    assert set(state) == {
        "plan",
        "split",
        "rounds",
        "last_cluster_epoch",
        "merge",
        "pseudo",
        "centroids",
        "sub_counts",
    }  # the kept features are not saved
    torch.save({"strategy": state}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["strategy"]
    fresh, _ = make()
    fresh.load_state_dict(loaded)
    assert fresh.split and torch.equal(fresh.pseudo, strat.pseudo) and torch.equal(fresh.centroids, strat.centroids)
    logits, idx = torch.randn(4, fresh.num_outputs), torch.tensor([0, 5, 13, 20])
    assert torch.allclose(fresh.loss(logits, LABELS[idx], idx), strat.loss(logits, LABELS[idx], idx))
    ctx.calls.clear()
    fresh.on_epoch_start(ctx(3))  # resumed: nothing kept yet, a clean pass over all
    assert len(ctx.calls) == 1 and ctx.calls[0].tolist() == list(range(N))
    assert ctx.records[-1]["features"] == {"train": 0, "older": 0, "clean": N}
    assert fresh.rounds == 2 and torch.equal(fresh.plan.sub_to_parent[fresh.pseudo], LABELS)


def test_options_and_capture_lifetime():
    with pytest.raises(ValueError, match="feature_source.*clean, train"):
        create_strategy("dicc", COUNTS, {"feature_source": "augmented"})
    # the default keeps the training features; the clean pass has no hook on the model
    assert create_strategy("dicc", COUNTS).options.feature_source == "train"
    strat = create_strategy("dicc", COUNTS, {"size": 4, "warmup_epochs": 1, "n_init": 1, "feature_source": "clean"})
    assert strat.options.feature_source == "clean"
    model = create_model("vgg_fer", strat.num_outputs, width=4)
    ctx = Ctx(model, images())
    train_epoch(strat, model, ctx, 0, torch.arange(N))
    assert not strat.wants_features and strat.bank.empty
    # clustering once (recluster_every=0): nothing is kept after the split
    strat, model = make({"recluster_every": 0, "warmup_epochs": 1})
    ctx = Ctx(model, images())
    train_epoch(strat, model, ctx, 0, torch.arange(N))
    assert strat.wants_features and not strat.bank.empty
    train_epoch(strat, model, ctx, 1, torch.arange(N))
    assert strat.split and not strat.wants_features and strat.bank.empty


def test_ranks_gather_their_kept_rows_by_index():
    """Two simulated ranks train on disjoint halves; the gathered features are the same on both
    and hold every rank's rows (a thread barrier stands in for the collective)."""
    imgs = images()
    runs = [make(seed=0) for _ in range(2)]
    runs[1][1].load_state_dict(runs[0][1].state_dict())
    ctxs = [Ctx(m, imgs) for _, m in runs]
    g = torch.Generator().manual_seed(3)
    for epoch in range(2):  # each rank trains 10 of its 12-index shard: 4 indices left per epoch
        perm = torch.randperm(N, generator=g)
        last = [
            train_epoch(s, m, ctxs[r], epoch, perm[r::2][:10], batch_size=5, drop_last=False)
            for r, (s, m) in enumerate(runs)
        ]
    runs[1][1].load_state_dict(runs[0][1].state_dict())  # same BatchNorm statistics for clean passes
    barrier, box, out = threading.Barrier(2), {}, [None, None]

    def gather(rank):
        def fn(values, indices, n):
            box[rank] = (values, indices)
            barrier.wait()
            res = values.new_zeros((n,) + tuple(values.shape[1:]))
            for v, i in (box[0], box[1]):
                res[i] = v
            barrier.wait()
            return res

        return fn

    def work(rank):
        s, m = runs[rank]
        out[rank] = s.bank.for_clustering(ctxs[rank](2, rank=rank, world_size=2, gather=gather(rank)))

    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (f0, l0, c0), (f1, l1, c1) = out
    assert torch.equal(f0, f1) and torch.equal(l0, l1) and torch.equal(l0, LABELS) and c0 == c1
    assert c0["train"] == 20 and sum(c0.values()) == N
    for r in range(2):  # the last epoch's rows of each rank
        for i, want in last[r].items():
            assert torch.allclose(f0[i], want, atol=1e-5)


def test_engine_extract_features_of_a_subset():
    from dicc.data.synthetic import make_synthetic
    from dicc.engine import extract_features

    ds = make_synthetic("val", counts=[3] * 7)
    model = create_model("vgg_fer", 7, width=4)
    full, labels = extract_features(model, ds, batch_size=8)
    pick = torch.tensor([20, 3, 7, 0])
    part, plabels = extract_features(model, ds, batch_size=8, indices=pick)
    assert torch.allclose(part, full[pick], atol=1e-5) and torch.equal(plabels, labels[pick])
    shards = [extract_features(model, ds, batch_size=8, indices=pick, rank=r, world_size=2)[0] for r in range(2)]
    assert torch.allclose(shards[0] + shards[1], full[pick], atol=1e-5)  # each rank its strided share


def test_engine_run_with_train_features(tiny_config):
    from dicc.engine import fit

    cfg = tiny_config(
        "method.name=dicc", "method.options.warmup_epochs=1", "method.options.feature_source=train", "train.epochs=3"
    )
    res = fit(cfg, log=lambda *a: None)
    recs = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    clusters = [r for r in recs if r.get("event") == "recluster"]
    assert [r["epoch"] for r in clusters] == [2, 3]
    n = sum([24, 8, 24, 64, 32, 16, 48])
    for r in clusters:
        assert sum(r["features"].values()) == n and r["features"]["train"] > 0
    assert clusters[1]["features"]["clean"] < clusters[0]["features"]["clean"]

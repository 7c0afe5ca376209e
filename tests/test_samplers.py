"""Rank-aware index orders and the single-process behaviour of the distributed helpers.

Sharding semantics (``dicc.samplers.shard``, as ``torch.utils.data.DistributedSampler``): the
epoch's order (identical on every rank) is padded by wrapping around to ``ceil(n / W) * W``
entries and rank ``r`` takes entries ``r, r + W, ...``. So every rank gets the same number of
indices (DDP needs equal step counts), the shards cover the order, and they are disjoint except
for the ``ceil(n / W) * W - n < W`` padding entries, which repeat the first entries of the order.
Evaluation uses ``eval_shard`` instead: no padding, every sample exactly once.
"""

import os

import pytest
import torch

from dicc import distributed
from dicc.data.base import FERDataset
from dicc.engine import evaluate, extract_features
from dicc.models import create_model
from dicc.samplers import shard, shuffled_indices, weighted_indices
from dicc.strategies import available_strategies, create_strategy

COUNTS = [24, 8, 24, 64, 32, 16, 48]


def _labels(counts=COUNTS):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])[
        torch.randperm(sum(counts), generator=torch.Generator().manual_seed(0))
    ]


@pytest.mark.parametrize("n", [1, 5, 12, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_pads_then_strides(n, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shards = [shard(order, r, world) for r in range(world)]
    per_rank = -(-n // world)
    assert all(len(s) == per_rank for s in shards)
    padded = order.repeat(world)[: per_rank * world]
    for r, s in enumerate(shards):
        assert torch.equal(s, padded[r::world])
    everything = torch.cat(shards)
    assert set(everything.tolist()) == set(range(n))  # covering
    counts = torch.bincount(everything, minlength=n)
    pad = per_rank * world - n
    assert pad < world and int((counts - 1).sum()) == pad  # disjoint up to the padding
    assert set(torch.nonzero(counts > 1).flatten().tolist()) == set(order[:pad].tolist())
    if n % world == 0:
        assert counts.eq(1).all()


def test_shuffled_indices_seeded_per_epoch_and_consistent_across_ranks():
    n, world = 23, 3
    full = shuffled_indices(n, epoch=4, seed=7)
    assert torch.equal(full, shuffled_indices(n, epoch=4, seed=7))  # reproducible
    assert sorted(full.tolist()) == list(range(n))
    assert not torch.equal(full, shuffled_indices(n, epoch=5, seed=7))  # new order each epoch
    assert not torch.equal(full, shuffled_indices(n, epoch=4, seed=8))  # and per seed
    for r in range(world):  # every rank shards the same permutation
        assert torch.equal(shuffled_indices(n, 4, 7, r, world), shard(full, r, world))


def test_weighted_indices_same_draw_on_every_rank():
    labels = _labels()
    w = 1.0 / torch.bincount(labels).double()
    full = weighted_indices(labels, w, epoch=2, seed=3)
    assert len(full) == len(labels)
    assert torch.equal(full, weighted_indices(labels, w, epoch=2, seed=3))
    assert not torch.equal(full, weighted_indices(labels, w, epoch=3, seed=3))
    for r in range(4):
        assert torch.equal(weighted_indices(labels, w, 2, 3, r, 4), shard(full, r, 4))
    # class-balanced: every class drawn about equally often (216 draws, 7 classes)
    drawn = torch.bincount(labels[weighted_indices(labels, w, epoch=0, seed=0, num_samples=7000)], minlength=7)
    assert drawn.min() > 800 and drawn.max() < 1200


@pytest.mark.parametrize("name", sorted(available_strategies()))
def test_every_strategy_shards_one_epoch_order(name):
    """Whatever a strategy's order (shuffle or resampling), the ranks split one common order into
    equal-sized shards (the number of DDP steps must match), seeded per epoch."""
    labels = _labels()
    s = create_strategy(name, COUNTS)
    world = 3
    full = s.epoch_indices(labels, 1, 0, 0, 1)
    shards = [s.epoch_indices(labels, 1, 0, r, world) for r in range(world)]
    assert len({len(x) for x in shards}) == 1
    for r, x in enumerate(shards):
        assert torch.equal(x, shard(full, r, world))
    assert torch.equal(full, s.epoch_indices(labels, 1, 0, 0, 1))
    assert not torch.equal(full, s.epoch_indices(labels, 2, 0, 0, 1))


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_eval_shard_sees_every_sample_once(n, world):
    parts = [distributed.eval_shard(n, r, world) for r in range(world)]
    assert sorted(torch.cat(parts).tolist()) == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_gather_by_index_single_process():
    idx = torch.tensor([4, 0, 2])
    vals = torch.tensor([[4.0, 40.0], [0.0, 0.5], [2.0, 20.0]])
    out = distributed.gather_by_index(vals, idx, 6)
    assert out.shape == (6, 2)
    assert torch.equal(out[idx], vals)
    assert out[[1, 3, 5]].eq(0).all()  # rows nobody holds stay zero
    empty = distributed.gather_by_index(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 3)
    assert empty.shape == (3, 2) and empty.eq(0).all()
    with pytest.raises(ValueError, match="2 rows for 3 indices"):
        distributed.gather_by_index(vals[:2], idx, 6)


def test_single_process_helpers_are_no_ops(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    info = distributed.setup("cpu")
    assert (info.rank, info.world_size, info.enabled, info.owns_group) == (0, 1, False, False)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]
    distributed.check_same(1, "anything")
    distributed.raise_if_any(None)
    with pytest.raises(KeyError):
        distributed.raise_if_any(KeyError("mine"))
    t = torch.ones(2)
    assert distributed.all_reduce_sum(t) is t and distributed.broadcast(t) is t
    distributed.barrier()


def test_device_and_threads_per_rank():
    with pytest.raises(ValueError, match="one GPU"):
        distributed.resolve_device("cuda:1", local_rank=0, world_size=2)
    assert distributed.resolve_device("cpu", 3, 4) == torch.device("cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert distributed.default_threads(distributed.DistInfo(world_size=2, local_world_size=2)) == max(1, cores // 2)
    assert distributed.default_threads(distributed.DistInfo(world_size=64, local_world_size=64)) >= 1


def test_rank_shards_of_evaluation_and_features_add_up():
    """Run the per-rank code paths one rank at a time in one process: the confusion matrices of
    the shards sum to the whole split's (also with more ranks than samples, so some shards are
    empty), and the feature shards, placed by index, are the whole split's features."""
    torch.manual_seed(0)
    n = 5
    ds = FERDataset(
        labels=torch.tensor([0, 3, 3, 6, 1]), images=torch.randint(0, 256, (n, 1, 48, 48), dtype=torch.uint8)
    )
    strategy = create_strategy("dicc", COUNTS, {"warmup_epochs": 0})
    model = create_model("vgg_fer", strategy.num_outputs, width=4).eval()
    whole = evaluate(model, strategy, ds, batch_size=2)
    feats, _ = extract_features(model, ds, batch_size=2)
    for world in (2, 8):
        cms = [
            torch.tensor(evaluate(model, strategy, ds, batch_size=2, rank=r, world_size=world)["confusion_matrix"])
            for r in range(world)
        ]
        assert torch.equal(sum(cms), torch.tensor(whole["confusion_matrix"]))
        parts = [extract_features(model, ds, batch_size=2, rank=r, world_size=world)[0] for r in range(world)]
        torch.testing.assert_close(sum(parts), feats, rtol=1e-5, atol=1e-6)

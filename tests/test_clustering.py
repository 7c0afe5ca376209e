"""The sub-class plan, the torch k-means (against scikit-learn's) and the per-class clusterer."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from dicc.clustering import SubclassClusterer, SubclassPlan, enforce_min_size, kmeans, nearest, plan_subclasses

FER_IF100 = [387, 43, 1077, 4300, 1796, 139, 2997]  # angry disgust fear happy sad surprise neutral


def blobs(n_per: list[int], dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised Gaussian blobs: ``spread`` is the noise scale relative to the distance
    between blob centres (small = well separated)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(len(n_per), dim, generator=g), dim=1)
    y = torch.repeat_interleave(torch.arange(len(n_per)), torch.tensor(n_per))
    x = centers[y] + spread * torch.randn(len(y), dim, generator=g) / math.sqrt(dim)
    return torch.nn.functional.normalize(x, dim=1), y


def styled_classes(
    counts: list[int], styles: list[int], dim: int = 32, seed: int = 0, style_spread: float = 0.6, noise: float = 0.25
):
    """Features of classes that each hold ``styles[c]`` hidden styles: a class centre plus a
    style offset plus noise; returns features, labels and the global style id of each sample."""
    g = torch.Generator().manual_seed(seed)
    feats, labels, style_ids = [], [], []
    sid = 0
    for c, (n, s) in enumerate(zip(counts, styles)):
        center = torch.randn(dim, generator=g) * 2.0
        offsets = torch.randn(s, dim, generator=g) * style_spread * 2.0
        st = torch.arange(n) % s
        x = center + offsets[st] + noise * torch.randn(n, dim, generator=g)
        feats.append(x)
        labels.append(torch.full((n,), c))
        style_ids.append(sid + st)
        sid += s
    perm = torch.randperm(sum(counts), generator=g)
    f = torch.nn.functional.normalize(torch.cat(feats), dim=1)[perm]
    return f, torch.cat(labels)[perm], torch.cat(style_ids)[perm]


# -- plan -----------------------------------------------------------------------------------
def test_plan_fer2013_if100_median():
    plan = plan_subclasses(FER_IF100)
    s = sorted(FER_IF100)[len(FER_IF100) // 2]
    assert s == 1077 and plan.size == 1077
    expected = [min(max(n // s, 1), 4) for n in FER_IF100]
    assert plan.k == expected
    assert plan.k == [1, 1, 1, 3, 1, 1, 2]  # happy 3 (floor(4300/1077)), neutral 2, sad 1
    assert plan.S == 10
    assert plan.offsets.tolist() == [0, 1, 2, 3, 6, 7, 8]
    assert plan.sub_to_parent.tolist() == [0, 1, 2, 3, 3, 3, 4, 5, 6, 6]
    assert plan.split_classes == [3, 6]
    assert plan.sub_to_parent.dtype == torch.long and plan.offsets.dtype == torch.long


def test_plan_rules_and_errors():
    # min rule: max(min count, floor)
    p = plan_subclasses(FER_IF100, size="min", min_size_floor=100, k_max=4)
    assert p.size == 100 and p.k == [min(max(n // 100, 1), 4) for n in FER_IF100]
    p = plan_subclasses(FER_IF100, size="min", min_size_floor=10, k_max=100)
    assert p.size == 43 and p.k == [n // 43 for n in FER_IF100]
    # fixed integer, and the cap
    p = plan_subclasses(FER_IF100, size=1000, k_max=2)
    assert p.k == [1, 1, 1, 2, 1, 1, 2]
    # even number of classes: the mean of the two middle counts
    assert plan_subclasses([10, 20, 40, 100]).size == 30
    with pytest.raises(ValueError, match="median, min"):
        plan_subclasses(FER_IF100, size="mean")
    with pytest.raises(ValueError, match="positive"):
        plan_subclasses([10, 0, 5])
    with pytest.raises(ValueError, match="k_max"):
        plan_subclasses(FER_IF100, k_max=0)


def test_plan_round_trip_and_table():
    plan = plan_subclasses(FER_IF100)
    again = SubclassPlan.from_dict(plan.to_dict())
    assert again.k == plan.k and again.counts == plan.counts and again.size == plan.size
    assert torch.equal(again.offsets, plan.offsets) and torch.equal(again.sub_to_parent, plan.sub_to_parent)
    rows = plan.table(["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"])
    happy = rows[3]
    assert happy["class"] == "happy" and happy["count"] == 4300 and happy["k"] == 3
    assert happy["subclass_size"] == pytest.approx(4300 / 3, abs=0.05)
    assert "happy" in plan.format_table([r["class"] for r in rows])


# -- k-means --------------------------------------------------------------------------------
@pytest.mark.parametrize("spread,k,seed", [(0.2, 4, 0), (1.5, 3, 1), (3.0, 4, 2)])
def test_torch_kmeans_matches_sklearn_inertia(spread, k, seed):
    """Well separated (0.2) and overlapping (1.5, 3.0) blobs: same objective, same quality."""
    x, _ = blobs([300, 200, 150, 100][:k], dim=32, spread=spread, seed=seed)
    c, a, inertia = kmeans(x, k, n_init=5, generator=seed)
    km = KMeans(n_clusters=k, n_init=5, random_state=seed).fit(x.numpy())
    assert inertia == pytest.approx(km.inertia_, rel=0.01)
    # returned values are consistent with each other
    assert torch.equal(a, nearest(x, c))
    assert inertia == pytest.approx(float(((x - c[a]) ** 2).sum()), rel=1e-5)


def test_kmeans_deterministic_with_seed():
    x, _ = blobs([100, 100, 100], 16, 1.0, seed=3)
    r1 = kmeans(x, 3, n_init=2, generator=torch.Generator().manual_seed(7))
    r2 = kmeans(x, 3, n_init=2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(r1[1], r2[1]) and torch.equal(r1[0], r2[0])


def test_warm_start_converges_to_same_solution():
    x, _ = blobs([200, 150, 100], 16, 0.8, seed=4)
    c, a, inertia = kmeans(x, 3, n_init=3, generator=0)
    c2, a2, inertia2 = kmeans(x, 3, init=c)
    assert torch.equal(a, a2) and inertia2 == pytest.approx(inertia, rel=1e-6)
    # from slightly perturbed centroids it still comes back to the same partition
    g = torch.Generator().manual_seed(1)
    c3, a3, inertia3 = kmeans(x, 3, init=c + 0.02 * torch.randn(c.shape, generator=g))
    assert adjusted_rand_score(a.numpy(), a3.numpy()) > 0.99
    assert inertia3 == pytest.approx(inertia, rel=1e-3)


def test_empty_cluster_is_reseeded():
    x, _ = blobs([100, 100, 100], 16, 0.3, seed=5)
    good, _, best = kmeans(x, 3, n_init=3, generator=0)
    init = good.clone()
    init[2] = 100.0  # no point is nearest to it: empty at the first step
    c, a, inertia = kmeans(x, 3, init=init)
    sizes = torch.bincount(a, minlength=3)
    assert (sizes > 0).all()
    assert torch.isfinite(c).all() and c.abs().max() < 10
    # two clusters start on one blob, the re-seeded one takes the farthest points: the result
    # is still a proper 3-clustering
    assert inertia < 1.5 * best


def test_min_cluster_size():
    x, _ = blobs([200, 200, 4], 16, 0.2, seed=6)
    c, a, _ = kmeans(x, 3, n_init=3, generator=0)
    assert int(torch.bincount(a, minlength=3).min()) == 4
    c2, a2, _ = kmeans(x, 3, n_init=3, generator=0, min_size=30)
    assert int(torch.bincount(a2, minlength=3).min()) >= 30
    # enforce_min_size never asks for more than n // k
    c3, a3 = enforce_min_size(x[:9], c2, nearest(x[:9], c2), 100)
    assert (torch.bincount(a3, minlength=3) == 3).all()


def test_kmeans_argument_errors():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="k=6"):
        kmeans(x, 6)
    with pytest.raises(ValueError, match="init has shape"):
        kmeans(x, 2, init=torch.zeros(3, 3))


# -- the per-class clusterer ----------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_clusterer_recovers_hidden_styles(backend):
    counts = [600, 120, 900]
    plan = SubclassPlan(counts=counts, k=[2, 1, 3], size=300.0)
    x, y, style = styled_classes(counts, styles=[2, 1, 3], seed=0)
    cl = SubclassClusterer(plan, backend=backend, n_init=3, seed=0).fit(x, y)
    assert cl.assign_.shape == (sum(counts),)
    assert (plan.sub_to_parent[cl.assign_] == y).all()  # stays inside the parent
    assert (cl.assign_[y == 1] == plan.offsets[1]).all()  # unsplit class: its one id
    for c in plan.split_classes:
        m = y == c
        ari = adjusted_rand_score(style[m].numpy(), cl.assign_[m].numpy())
        assert ari >= 0.9, (c, ari)
    assert cl.centroids_.shape == (plan.S, x.shape[1])
    assert cl.sizes_.tolist() == torch.bincount(cl.assign_, minlength=plan.S).tolist()
    assert cl.nmi_ == {} and cl.time_ >= 0 and cl.inertia_ > 0
    # first clustering: sub-class 0 is the largest of its class
    for c in plan.split_classes:
        r = plan.subclass_range(c)
        s = cl.sizes_[r.start : r.stop]
        assert int(s[0]) == int(s.max())


def test_backends_reach_the_same_inertia():
    counts = [800, 500]
    plan = SubclassPlan(counts=counts, k=[4, 3], size=200.0)
    # overlapping styles: a harder case
    x, y, _ = styled_classes(counts, styles=[4, 3], seed=1, style_spread=0.25, noise=0.4)
    a = SubclassClusterer(plan, backend="torch", n_init=5, seed=0).fit(x, y)
    b = SubclassClusterer(plan, backend="sklearn", n_init=5, seed=0).fit(x, y)
    for c in (0, 1):
        assert a.class_inertia_[c] == pytest.approx(b.class_inertia_[c], rel=0.01)


def test_stable_matching_gives_back_previous_ids():
    counts = [600, 900]
    plan = SubclassPlan(counts=counts, k=[3, 4], size=200.0)
    x, y, _ = styled_classes(counts, styles=[3, 4], seed=2)
    first = SubclassClusterer(plan, seed=0).fit(x, y)
    # relabel the previous clustering with permuted ids inside each class
    perm = torch.tensor([2, 0, 1, 5, 3, 6, 4])  # global old id -> new id (within-class permutations)
    prev = SimpleNamespace(assign_=perm[first.assign_], centroids_=torch.empty_like(first.centroids_))
    prev.centroids_[perm] = first.centroids_
    again = SubclassClusterer(plan, init=prev.centroids_, previous_labels=prev.assign_, seed=123).fit(x, y)
    assert torch.equal(again.assign_, prev.assign_)
    assert torch.allclose(again.centroids_, prev.centroids_, atol=1e-5)
    assert again.nmi_ == {0: pytest.approx(1.0), 1: pytest.approx(1.0)}
    assert again.agreement_ == {0: 1.0, 1: 1.0}


def test_matching_follows_drifting_features():
    """Features move a little between epochs: ids follow their clusters, NMI stays high."""
    counts = [900]
    plan = SubclassPlan(counts=counts, k=[3], size=300.0)
    x, y, style = styled_classes(counts, styles=[3], seed=3)
    first = SubclassClusterer(plan, seed=0).fit(x, y)
    g = torch.Generator().manual_seed(0)
    x2 = torch.nn.functional.normalize(x + 0.01 * torch.randn(x.shape, generator=g), dim=1)
    second = SubclassClusterer(plan, init=first.cluster_centers_, previous_labels=first.labels_, seed=1).fit(x2, y)
    assert (second.assign_ == first.assign_).float().mean() > 0.98
    assert second.nmi_[0] > 0.9


def test_feature_sample_assigns_everyone():
    counts = [2000]
    plan = SubclassPlan(counts=counts, k=[2], size=1000.0)
    x, y, style = styled_classes(counts, styles=[2], seed=4)
    cl = SubclassClusterer(plan, feature_sample=200, seed=0).fit(x, y)
    assert cl.assign_.shape == (2000,)
    assert adjusted_rand_score(style.numpy(), cl.assign_.numpy()) >= 0.9
    assert torch.equal(cl.predict(x, y), cl.assign_)


def test_clusterer_errors():
    plan = SubclassPlan(counts=[3, 3], k=[2, 1], size=1.0)
    x = torch.randn(6, 4)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="torch, sklearn"):
        SubclassClusterer(plan, backend="faiss").fit(x, y)
    with pytest.raises(ValueError, match="init centroids"):
        SubclassClusterer(plan, init=torch.zeros(2, 4)).fit(x, y)
    params = SubclassClusterer(plan, n_init=7).get_params()
    assert params["n_init"] == 7 and params["plan"] is plan and params["init"] is None
    fitted = SubclassClusterer(plan).fit(x, y)  # scikit-learn's names for the fitted attributes
    assert fitted.labels_ is fitted.assign_ and fitted.cluster_centers_ is fitted.centroids_

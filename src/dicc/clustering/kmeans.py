"""Lloyd's k-means in torch on the input's device: k-means++ seeding, warm start, empty clusters
re-seeded from the farthest points, an optional minimum cluster size.

Distance: squared Euclidean distance, as scikit-learn's ``KMeans`` uses, so the two backends of
:class:`~dicc.clustering.SubclassClusterer` optimise the same objective and their inertias
compare directly. The features DICC clusters are L2-normalised, where ``||x - y||^2 = 2 - 2
cos(x, y)``: assigning to the nearest centroid ranks points by cosine similarity to the
(un-normalised) mean of the cluster.
"""

from __future__ import annotations

import math

import torch


# -- k-means in torch -----------------------------------------------------------------------
def _as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(0 if generator is None else int(generator))


def _sq_dist(x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[n, k]`` (clamped at 0)."""
    return (x_sq[:, None] - 2.0 * (x @ c.t()) + (c * c).sum(1)[None, :]).clamp_min_(0.0)


def _rand(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # drawn on the generator's device (CPU by default) so the same seed gives the same draw on
    # any device, then moved; only a handful of numbers per call
    return torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64).to(device)


def kmeans_plusplus(
    x: torch.Tensor, k: int, generator: torch.Generator | int | None = None, n_local_trials: int | None = None
) -> torch.Tensor:
    """Greedy k-means++ seeding (as scikit-learn's): each new centre is the best of
    ``2 + log k`` candidates drawn with probability proportional to the squared distance."""
    g = _as_generator(generator)
    n = x.shape[0]
    trials = n_local_trials or 2 + int(math.log(k))
    x_sq = (x * x).sum(1)
    first = int((_rand(1, g, torch.device("cpu")) * n).long().clamp_max(n - 1))
    centers = [x[first]]
    closest = _sq_dist(x, x_sq, x[first : first + 1])[:, 0].double()
    pot = closest.sum()
    for _ in range(1, k):
        if pot <= 0:  # every point coincides with a centre: pick any
            cand = (_rand(trials, g, x.device) * n).long().clamp_max(n - 1)
        else:
            cand = torch.searchsorted(closest.cumsum(0), _rand(trials, g, x.device) * pot).clamp_max(n - 1)
        d_cand = _sq_dist(x, x_sq, x[cand]).t().double()  # [trials, n]
        new_closest = torch.minimum(closest[None, :], d_cand)
        pots = new_closest.sum(1)
        best = int(pots.argmin())
        closest, pot = new_closest[best], pots[best]
        centers.append(x[cand[best]])
    return torch.stack(centers)


def _means(x: torch.Tensor, assign: torch.Tensor, k: int, fallback: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sizes = torch.bincount(assign, minlength=k)
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, assign, x)
    means = sums / sizes.clamp_min(1)[:, None].to(x.dtype)
    empty = sizes == 0
    if empty.any():
        means[empty] = fallback[empty]
    return means, sizes


def _reseed_empty(x: torch.Tensor, assign: torch.Tensor, mind: torch.Tensor, k: int) -> torch.Tensor:
    """Give every empty cluster the point farthest from its centre (distinct points, each
    taken from a cluster that keeps at least one member)."""
    sizes = torch.bincount(assign, minlength=k)
    empty = (sizes == 0).nonzero().flatten().tolist()
    if not empty:
        return assign
    assign = assign.clone()
    order = torch.argsort(mind, descending=True).tolist()
    sizes = sizes.tolist()
    pos = 0
    for j in empty:
        while pos < len(order) and sizes[int(assign[order[pos]])] <= 1:
            pos += 1
        if pos >= len(order):
            break
        i = order[pos]
        sizes[int(assign[i])] -= 1
        assign[i] = j
        sizes[j] = 1
        pos += 1
    return assign


def enforce_min_size(
    x: torch.Tensor, centroids: torch.Tensor, assign: torch.Tensor, min_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow every cluster smaller than ``min_size`` (capped at ``n // k``) with the points
    nearest to its centroid taken from clusters that can spare them; the centroids are then
    the means of the new clusters. Returns ``(centroids, assign)``."""
    k, n = centroids.shape[0], x.shape[0]
    m = min(int(min_size), n // k)
    if m <= 0:
        return centroids, assign
    assign = assign.clone()
    for _ in range(k):
        sizes = torch.bincount(assign, minlength=k)
        if int(sizes.min()) >= m:
            break
        j = int(sizes.argmin())
        need = m - int(sizes[j])
        d = ((x - centroids[j]) ** 2).sum(1)
        d[assign == j] = float("inf")
        spare = (sizes - m).clamp_min(0).tolist()
        for i in torch.argsort(d).tolist():
            if need == 0 or not math.isfinite(float(d[i])):
                break
            src = int(assign[i])
            if spare[src] > 0:
                spare[src] -= 1
                assign[i] = j
                need -= 1
        centroids, _ = _means(x, assign, k, centroids)
    return centroids, assign


def _lloyd(
    x: torch.Tensor, x_sq: torch.Tensor, centers: torch.Tensor, max_iter: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """One k-means run from ``centers``: ``(centers, assign, inertia, iterations)``."""
    k = centers.shape[0]
    assign = None
    it = 0
    for it in range(1, max_iter + 1):
        mind, new_assign = _sq_dist(x, x_sq, centers).min(1)
        new_assign = _reseed_empty(x, new_assign, mind, k)
        new_centers, _ = _means(x, new_assign, k, centers)
        shift = float(((new_centers - centers) ** 2).sum())
        centers = new_centers
        if assign is not None and torch.equal(assign, new_assign):
            break  # strict convergence: labels did not change
        assign = new_assign
        if shift <= tol:
            break
    # final E-step, so the labels are those of the returned centres (as scikit-learn does)
    mind, assign = _sq_dist(x, x_sq, centers).min(1)
    if int(torch.bincount(assign, minlength=k).min()) == 0:
        assign = _reseed_empty(x, assign, mind, k)
        centers, _ = _means(x, assign, k, centers)
        return centers, assign, _inertia(x, centers, assign), it
    return centers, assign, float(mind.double().sum()), it


def _inertia(x: torch.Tensor, centroids: torch.Tensor, assign: torch.Tensor) -> float:
    return float(((x - centroids[assign]) ** 2).sum(1).double().sum())


def kmeans(
    x: torch.Tensor,
    k: int,
    init: torch.Tensor | None = None,
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-4,
    generator: torch.Generator | int | None = None,
    min_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Lloyd's k-means on ``x`` ``[n, d]`` (squared Euclidean distance), on ``x``'s device.

    ``init`` (``[k, d]``) warm-starts from given centroids (one run; ``n_init`` is then
    ignored); otherwise ``n_init`` k-means++ seedings from ``generator`` (a seeded
    ``torch.Generator`` or an int seed) are run and the lowest inertia kept. A run stops when
    the labels no longer change or the centres move by at most ``tol`` times the mean
    per-feature variance of ``x`` (scikit-learn's criterion). Clusters that become empty get
    the point farthest from its centre; ``min_size`` then tops up small clusters (see
    :func:`enforce_min_size`). Returns ``(centroids [k, d], assign [n], inertia)``.
    """
    if x.dim() != 2:
        raise ValueError(f"kmeans: expected features of shape [n, d], got {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= int(k) <= n:
        raise ValueError(f"kmeans: k={k} needs 1 <= k <= n (n={n} points)")
    if not x.dtype.is_floating_point:
        x = x.float()
    k = int(k)
    x_sq = (x * x).sum(1)
    # mean per-feature variance = (E||x||^2 - ||E x||^2) / d (cheaper than x.var(0))
    tol_abs = float(tol) * max(float(x_sq.mean() - (x.mean(0) ** 2).sum()) / x.shape[1], 0.0)
    g = _as_generator(generator)
    if init is not None:
        init = torch.as_tensor(init).to(device=x.device, dtype=x.dtype)
        if init.shape != (k, x.shape[1]):
            raise ValueError(f"kmeans: init has shape {tuple(init.shape)}, expected {(k, x.shape[1])}")
        starts = [init]
    else:
        starts = None
    best = None
    for r in range(len(starts) if starts is not None else max(1, int(n_init))):
        c0 = starts[r] if starts is not None else kmeans_plusplus(x, k, g)
        c, a, inertia, _ = _lloyd(x, x_sq, c0, int(max_iter), tol_abs)
        if best is None or inertia < best[2]:
            best = (c, a, inertia)
    c, a, inertia = best
    if min_size:
        c, a = enforce_min_size(x, c, a, min_size)
        inertia = _inertia(x, c, a)
    return c, a, inertia


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean) for every row of ``x``."""
    return _sq_dist(x, (x * x).sum(1), centroids.to(x.dtype)).argmin(1)


__all__ = ["enforce_min_size", "kmeans", "kmeans_plusplus", "nearest"]

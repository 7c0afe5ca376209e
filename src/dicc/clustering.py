"""Per-class k-means for DICC: the sub-class plan, a torch k-means, and a clusterer that keeps
sub-class identities stable from one re-clustering to the next.

- :func:`plan_subclasses` turns the training class counts into a :class:`SubclassPlan`
  (``k_c = clamp(floor(n_c / s), 1, k_max)`` sub-classes per class, contiguous global ids).
- :func:`kmeans` is Lloyd's algorithm in torch (k-means++ init, warm start, empty clusters
  re-seeded from the farthest points, optional minimum cluster size) on the input's device.
- :class:`SubclassClusterer` (scikit-learn style: the constructor stores parameters, ``fit``
  sets attributes ending in ``_``) clusters every split class, matches the new clusters to the
  previous ones (Hungarian matching on centroid cosine similarity) and records diagnostics.
  It holds no distributed code: the caller clusters on one rank and broadcasts the result.

Distance: squared Euclidean distance, as scikit-learn's ``KMeans`` uses, so the two backends
optimise the same objective and their inertias compare directly. The features DICC clusters
are L2-normalised, where ``||x - y||^2 = 2 - 2 cos(x, y)``: assigning to the nearest centroid
ranks points by cosine similarity to the (un-normalised) mean of the cluster.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

SIZE_RULES = ("median", "min")


# -- the sub-class plan ---------------------------------------------------------------------
@dataclass
class SubclassPlan:
    """How many sub-classes each class gets, and where their ids lie.

    ``counts[c]`` training samples of class ``c`` are split into ``k[c]`` sub-classes whose
    global ids are ``offsets[c] .. offsets[c] + k[c] - 1``; ``sub_to_parent[j]`` is the class
    of sub-class ``j``. ``size`` is the target sub-class size ``s`` the rule ``size_rule``
    produced.
    """

    counts: list[int]
    k: list[int]
    size: float
    size_rule: str = "median"
    k_max: int = 4
    offsets: torch.Tensor = field(init=False, repr=False)
    sub_to_parent: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.counts = [int(c) for c in self.counts]
        self.k = [int(k) for k in self.k]
        if len(self.counts) != len(self.k):
            raise ValueError(f"plan: {len(self.counts)} counts but {len(self.k)} sub-class numbers")
        if any(k < 1 for k in self.k):
            raise ValueError(f"plan: every class needs at least one sub-class, got k={self.k}")
        ks = torch.tensor(self.k, dtype=torch.long)
        self.offsets = torch.cumsum(ks, 0) - ks
        self.sub_to_parent = torch.repeat_interleave(torch.arange(len(self.k)), ks)

    @property
    def S(self) -> int:
        """Total number of sub-classes (the head size)."""
        return int(sum(self.k))

    @property
    def num_classes(self) -> int:
        return len(self.k)

    @property
    def split_classes(self) -> list[int]:
        """Classes with more than one sub-class."""
        return [c for c, k in enumerate(self.k) if k > 1]

    def subclass_range(self, c: int) -> range:
        o = int(self.offsets[c])
        return range(o, o + self.k[c])

    def even_subclass_counts(self) -> torch.Tensor:
        """Sub-class counts ``n_c / k_c`` before any clustering (float64, ``[S]``)."""
        return torch.tensor([n / k for n, k in zip(self.counts, self.k) for _ in range(k)], dtype=torch.float64)

    # -- presentation ------------------------------------------------------------------
    def table(self, class_names: Sequence[str] | None = None) -> list[dict]:
        """One dict per class: ``class``, ``count``, ``k``, ``subclass_size`` (``n_c / k_c``),
        ``subclasses`` (its global ids)."""
        names = list(class_names) if class_names is not None else [str(c) for c in range(self.num_classes)]
        return [{"class": names[c], "count": n, "k": k, "subclass_size": round(n / k, 1),
                 "subclasses": list(self.subclass_range(c))}
                for c, (n, k) in enumerate(zip(self.counts, self.k))]

    def format_table(self, class_names: Sequence[str] | None = None) -> str:
        rows = self.table(class_names)
        w = max([5] + [len(str(r["class"])) for r in rows])
        lines = [f"DICC sub-class plan: s = {self.size:g} ({self.size_rule}), k_max = {self.k_max}, "
                 f"S = {self.S} sub-classes",
                 f"  {'class':<{w}}  {'count':>7}  {'k':>2}  {'sub-class size':>14}  ids"]
        for r in rows:
            ids = r["subclasses"]
            span = f"{ids[0]}" if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"
            lines.append(f"  {r['class']:<{w}}  {r['count']:>7}  {r['k']:>2}  {r['subclass_size']:>14.1f}  {span}")
        return "\n".join(lines)

    # -- serialisation (plain values, safe for torch.load(weights_only=True) and JSON) --
    def to_dict(self) -> dict:
        return {"counts": list(self.counts), "k": list(self.k), "size": float(self.size),
                "size_rule": str(self.size_rule), "k_max": int(self.k_max), "S": self.S,
                "offsets": self.offsets.tolist(), "sub_to_parent": self.sub_to_parent.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "SubclassPlan":
        plan = cls(counts=list(d["counts"]), k=list(d["k"]), size=float(d["size"]),
                   size_rule=str(d.get("size_rule", "median")), k_max=int(d.get("k_max", max(d["k"]))))
        if "S" in d and int(d["S"]) != plan.S:
            raise ValueError(f"plan: S={d['S']} does not match k={plan.k}")
        return plan


def plan_subclasses(class_counts: Sequence[int] | torch.Tensor, size: str | int | float = "median",
                    k_max: int = 4, min_size_floor: int = 100) -> SubclassPlan:
    """``k_c = clamp(floor(n_c / s), 1, k_max)`` for every class.

    ``size`` chooses the target sub-class size ``s``: ``"median"`` (the median class count,
    the mean of the two middle counts when the number of classes is even), ``"min"`` (the
    smallest class count, but at least ``min_size_floor`` so one tiny class does not shatter
    the others) or a positive number used as given.
    """
    counts = [int(c) for c in (class_counts.tolist() if isinstance(class_counts, torch.Tensor) else class_counts)]
    if not counts or any(c <= 0 for c in counts):
        raise ValueError(f"plan: class counts must be positive, got {counts}")
    if isinstance(k_max, bool) or int(k_max) != k_max or int(k_max) < 1:
        raise ValueError(f"plan: k_max must be an integer >= 1, got {k_max!r}")
    k_max = int(k_max)
    if isinstance(size, str) and size.strip().replace(".", "", 1).isdigit():
        size = float(size)
    if isinstance(size, str):
        rule = size.strip().lower()
        if rule == "median":
            s = float(statistics.median(counts))
        elif rule == "min":
            s = float(max(min(counts), int(min_size_floor)))
        else:
            raise ValueError(f"plan: unknown size {size!r}; valid: {', '.join(SIZE_RULES)} or a positive number")
    elif isinstance(size, (int, float)) and not isinstance(size, bool) and size > 0 and math.isfinite(size):
        rule, s = "fixed", float(size)
    else:
        raise ValueError(f"plan: size must be {' or '.join(SIZE_RULES)} or a positive number, got {size!r}")
    k = [min(max(math.floor(n / s), 1), k_max) for n in counts]
    return SubclassPlan(counts=counts, k=k, size=s, size_rule=rule, k_max=k_max)


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


def kmeans_plusplus(x: torch.Tensor, k: int, generator: torch.Generator | int | None = None,
                    n_local_trials: int | None = None) -> torch.Tensor:
    """Greedy k-means++ seeding (as scikit-learn's): each new centre is the best of
    ``2 + log k`` candidates drawn with probability proportional to the squared distance."""
    g = _as_generator(generator)
    n = x.shape[0]
    trials = n_local_trials or 2 + int(math.log(k))
    x_sq = (x * x).sum(1)
    first = int((_rand(1, g, torch.device("cpu")) * n).long().clamp_max(n - 1))
    centers = [x[first]]
    closest = _sq_dist(x, x_sq, x[first:first + 1])[:, 0].double()
    pot = closest.sum()
    for _ in range(1, k):
        if pot <= 0:  # every point coincides with a centre: pick any
            cand = (_rand(trials, g, x.device) * n).long().clamp_max(n - 1)
        else:
            cand = torch.searchsorted(closest.cumsum(0), _rand(trials, g, x.device) * pot).clamp_max(n - 1)
        d_cand = _sq_dist(x, x_sq, x[cand]).t().double()           # [trials, n]
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


def enforce_min_size(x: torch.Tensor, centroids: torch.Tensor, assign: torch.Tensor,
                     min_size: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def _lloyd(x: torch.Tensor, x_sq: torch.Tensor, centers: torch.Tensor, max_iter: int,
           tol: float) -> tuple[torch.Tensor, torch.Tensor, float, int]:
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


def kmeans(x: torch.Tensor, k: int, init: torch.Tensor | None = None, n_init: int = 1, max_iter: int = 100,
           tol: float = 1e-4, generator: torch.Generator | int | None = None,
           min_size: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
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


# -- the per-class clusterer ----------------------------------------------------------------
BACKENDS = ("torch", "sklearn")


class SubclassClusterer:
    """Split every class of a :class:`SubclassPlan` with ``k_c > 1`` by k-means.

    Parameters (stored as given; checked in :meth:`fit`):
    ``backend`` ``"torch"`` (:func:`kmeans`, on the features' device) or ``"sklearn"``
    (``sklearn.cluster.KMeans`` on CPU); ``n_init`` k-means++ restarts when there is no
    previous clustering; ``max_iter``, ``tol`` as in k-means; ``seed`` (class ``c`` uses
    ``seed * 1009 + c``); ``min_cluster_size`` (every sub-class gets at least this many
    samples when possible; at least 1 in any case); ``feature_sample`` (k-means on at most
    this many samples per class, the rest assigned to the nearest centroid; 0 = all).

    Fitted attributes (global sub-class ids, see :class:`SubclassPlan`):
    ``assign_`` LongTensor ``[N]`` (unsplit classes map to their single sub-class),
    ``centroids_`` ``[S, D]`` (row ``j`` is sub-class ``j``'s mean feature),
    ``sizes_`` LongTensor ``[S]``, ``inertia_`` (total over split classes),
    ``class_inertia_`` ``{c: inertia}``, ``nmi_`` ``{c: NMI with the previous assignment}``
    and ``agreement_`` ``{c: fraction of samples keeping their sub-class id}`` (both empty
    without a previous clustering), ``time_`` (seconds).
    """

    def __init__(self, backend: str = "torch", n_init: int = 3, max_iter: int = 100, tol: float = 1e-4,
                 seed: int = 0, min_cluster_size: int = 0, feature_sample: int = 0) -> None:
        self.backend = backend
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.min_cluster_size = min_cluster_size
        self.feature_sample = feature_sample

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("backend", "n_init", "max_iter", "tol", "seed",
                                              "min_cluster_size", "feature_sample")}

    def _check(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"clusterer: unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        for name in ("n_init", "max_iter"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"clusterer: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_cluster_size", "feature_sample"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"clusterer: {name} must be >= 0, got {getattr(self, name)}")

    def _run(self, x: torch.Tensor, k: int, init: torch.Tensor | None, seed: int) -> torch.Tensor:
        if self.backend == "torch":
            g = torch.Generator().manual_seed(seed)
            c, _, _ = kmeans(x, k, init=init, n_init=int(self.n_init), max_iter=int(self.max_iter),
                             tol=float(self.tol), generator=g)
            return c
        from sklearn.cluster import KMeans

        xs = x.detach().float().cpu().numpy()
        km = KMeans(n_clusters=k, init=init.detach().float().cpu().numpy() if init is not None else "k-means++",
                    n_init=1 if init is not None else int(self.n_init), max_iter=int(self.max_iter),
                    tol=float(self.tol), random_state=seed % (2 ** 32)).fit(xs)
        return torch.from_numpy(km.cluster_centers_).to(device=x.device, dtype=x.dtype)

    def fit(self, features: torch.Tensor, labels: torch.Tensor, plan: SubclassPlan,
            previous: Any = None) -> "SubclassClusterer":
        """Cluster ``features`` ``[N, D]`` of samples with class ``labels`` ``[N]``.

        ``previous`` is an earlier fit on the same samples (any object with ``centroids_``
        ``[S, D]`` and ``assign_`` ``[N]``): k-means warm-starts from its centroids, and the
        new clusters are matched to its sub-classes so sub-class ``j`` keeps its meaning.
        """
        from scipy.optimize import linear_sum_assignment
        from sklearn.metrics import normalized_mutual_info_score

        self._check()
        t0 = time.perf_counter()
        x = features.detach()
        x = x.float() if x.dtype not in (torch.float32, torch.float64) else x
        labels = labels.detach().to(x.device).long()
        if x.dim() != 2 or labels.shape != (x.shape[0],):
            raise ValueError(f"clusterer: features {tuple(x.shape)} and labels {tuple(labels.shape)} do not match")
        n, dim = x.shape
        found = torch.bincount(labels, minlength=plan.num_classes)
        if len(found) != plan.num_classes:
            raise ValueError(f"clusterer: labels go up to {len(found) - 1} but the plan has {plan.num_classes} classes")
        prev_c = prev_a = None
        if previous is not None:
            prev_c = getattr(previous, "centroids_", None)
            prev_a = getattr(previous, "assign_", None)
            if prev_c is not None:
                prev_c = torch.as_tensor(prev_c).to(device=x.device, dtype=x.dtype)
                if prev_c.shape != (plan.S, dim):
                    raise ValueError(f"clusterer: previous centroids have shape {tuple(prev_c.shape)}, "
                                     f"expected {(plan.S, dim)}")
            if prev_a is not None:
                prev_a = torch.as_tensor(prev_a).to(x.device).long()
                if prev_a.shape != (n,):
                    prev_a = None  # another sample set: no agreement to measure

        offsets = plan.offsets.to(x.device)
        assign = offsets[labels].clone()
        centroids = torch.zeros(plan.S, dim, dtype=x.dtype, device=x.device)
        self.class_inertia_, self.nmi_, self.agreement_ = {}, {}, {}
        for c in range(plan.num_classes):
            idx = (labels == c).nonzero().flatten()
            k, off = plan.k[c], int(plan.offsets[c])
            xc = x[idx]
            if k == 1:
                if len(idx):
                    centroids[off] = xc.mean(0)
                continue
            if len(idx) < k:
                raise ValueError(f"clusterer: class {c} has {len(idx)} samples, fewer than its k={k} sub-classes")
            seed = int(self.seed) * 1009 + c
            xs = xc
            fs = int(self.feature_sample)
            if fs and len(idx) > max(fs, k):
                pick = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed + 1))[:fs]
                xs = xc[pick.to(x.device)]
            init = prev_c[off:off + k] if prev_c is not None else None
            cents = self._run(xs, k, init, seed)
            local = nearest(xc, cents)
            local = _reseed_empty(xc, local, ((xc - cents[local]) ** 2).sum(1), k)
            cents, _ = _means(xc, local, k, cents)
            cents, local = enforce_min_size(xc, cents, local, max(1, int(self.min_cluster_size)))
            # stable identities
            if init is not None:
                sim = torch.nn.functional.normalize(cents.double(), dim=1) @ \
                    torch.nn.functional.normalize(init.double(), dim=1).t()
                rows, cols = linear_sum_assignment(sim.cpu().numpy(), maximize=True)
                new_id = torch.empty(k, dtype=torch.long)
                new_id[torch.as_tensor(rows)] = torch.as_tensor(cols)
            else:  # first clustering: sub-class 0 is the largest
                sizes = torch.bincount(local, minlength=k).cpu()
                order = sorted(range(k), key=lambda j: (-int(sizes[j]), j))
                new_id = torch.empty(k, dtype=torch.long)
                new_id[torch.tensor(order)] = torch.arange(k)
            new_id = new_id.to(x.device)
            local = new_id[local]
            reordered = torch.empty_like(cents)
            reordered[new_id] = cents
            cents = reordered
            centroids[off:off + k] = cents
            assign[idx] = off + local
            self.class_inertia_[c] = _inertia(xc, cents, local)
            if prev_a is not None:
                before = (prev_a[idx] - off).cpu().numpy()
                after = local.cpu().numpy()
                self.nmi_[c] = float(normalized_mutual_info_score(before, after))
                self.agreement_[c] = float((prev_a[idx] - off == local).float().mean())
        self.assign_ = assign
        self.centroids_ = centroids
        self.sizes_ = torch.bincount(assign, minlength=plan.S).cpu()
        self.inertia_ = float(sum(self.class_inertia_.values()))
        self.plan_ = plan
        self.time_ = time.perf_counter() - t0
        return self

    def predict(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Global sub-class id of new samples: the nearest centroid among their class's."""
        plan = self.plan_
        x = features.detach().to(self.centroids_.device, self.centroids_.dtype)
        labels = labels.to(x.device).long()
        out = plan.offsets.to(x.device)[labels].clone()
        for c in plan.split_classes:
            idx = (labels == c).nonzero().flatten()
            if len(idx):
                r = plan.subclass_range(c)
                out[idx] = r.start + nearest(x[idx], self.centroids_[r.start:r.stop])
        return out


__all__ = ["BACKENDS", "SIZE_RULES", "SubclassClusterer", "SubclassPlan", "enforce_min_size", "kmeans",
           "kmeans_plusplus", "nearest", "plan_subclasses"]

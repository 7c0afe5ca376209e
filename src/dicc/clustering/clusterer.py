"""Per-class k-means with stable sub-class identities: :class:`SubclassClusterer`.

It clusters every split class of a :class:`~dicc.clustering.SubclassPlan`, matches the new
clusters to those of the previous clustering (Hungarian matching on centroid cosine similarity)
so sub-class ``j`` keeps its meaning, and records diagnostics. It holds no distributed code: the
caller clusters on one rank and broadcasts the result.
"""

from __future__ import annotations

import time

import torch

from .kmeans import _inertia, _means, _reseed_empty, enforce_min_size, kmeans, nearest
from ..seeds import derive_seed
from .plan import SubclassPlan

# -- the per-class clusterer ----------------------------------------------------------------
BACKENDS = ("torch", "sklearn")


def _stable_identities(cents: torch.Tensor, local: torch.Tensor, init: torch.Tensor | None, k: int):
    """``cents`` and ``local`` renumbered: matched to the previous centroids ``init`` (Hungarian
    matching on cosine similarity), or on a first clustering by size (sub-class 0 the largest)."""
    from scipy.optimize import linear_sum_assignment

    if init is not None:
        sim = (
            torch.nn.functional.normalize(cents.double(), dim=1)
            @ torch.nn.functional.normalize(init.double(), dim=1).t()
        )
        rows, cols = linear_sum_assignment(sim.cpu().numpy(), maximize=True)
        new_id = torch.empty(k, dtype=torch.long)
        new_id[torch.as_tensor(rows)] = torch.as_tensor(cols)
    else:
        sizes = torch.bincount(local, minlength=k).cpu()
        order = sorted(range(k), key=lambda j: (-int(sizes[j]), j))
        new_id = torch.empty(k, dtype=torch.long)
        new_id[torch.tensor(order)] = torch.arange(k)
    new_id = new_id.to(cents.device)
    reordered = torch.empty_like(cents)
    reordered[new_id] = cents
    return reordered, new_id[local]


class SubclassClusterer:
    """Split every class of ``plan`` (a :class:`SubclassPlan`) with ``k_c > 1`` by k-means.

    Parameters (stored as given; checked in :meth:`fit`):
    ``plan`` the sub-class plan; ``init`` ``None`` (k-means++ with ``n_init`` restarts) or
    the centroids ``[S, D]`` of an earlier clustering of the same samples: k-means warm-starts
    from them and the new clusters are matched to them (Hungarian matching on cosine
    similarity), so sub-class ``j`` keeps its meaning; ``previous_labels`` the global sub-class
    ids ``[N]`` of that earlier clustering (only for the stability diagnostics ``nmi_`` and
    ``agreement_``); ``backend`` ``"torch"`` (:func:`~dicc.clustering.kmeans`, on the
    features' device) or ``"sklearn"`` (``sklearn.cluster.KMeans`` on CPU); ``n_init``;
    ``max_iter``, ``tol`` as in k-means; ``seed`` (class ``c`` uses ``seed * 1009 + c``);
    ``min_cluster_size`` (every sub-class gets at least this many samples when possible; at
    least 1 in any case); ``feature_sample`` (k-means on at most this many samples per class,
    the rest assigned to the nearest centroid; 0 = all).

    Fitted attributes (global sub-class ids, see :class:`SubclassPlan`):
    ``labels_`` LongTensor ``[N]`` (unsplit classes map to their single sub-class),
    ``cluster_centers_`` ``[S, D]`` (row ``j`` is sub-class ``j``'s mean feature),
    ``sizes_`` LongTensor ``[S]``, ``inertia_`` (total over split classes),
    ``class_inertia_`` ``{c: inertia}``, ``nmi_`` ``{c: NMI with previous_labels}`` and
    ``agreement_`` ``{c: fraction of samples keeping their sub-class id}`` (both empty without
    ``previous_labels``), ``time_`` (seconds). (``assign_`` and ``centroids_`` are the same
    tensors under their former names.)
    """

    _PARAMS = (
        "plan",
        "init",
        "previous_labels",
        "backend",
        "n_init",
        "max_iter",
        "tol",
        "seed",
        "min_cluster_size",
        "feature_sample",
    )

    def __init__(
        self,
        plan: SubclassPlan,
        *,
        init: torch.Tensor | None = None,
        previous_labels: torch.Tensor | None = None,
        backend: str = "torch",
        n_init: int = 3,
        max_iter: int = 100,
        tol: float = 1e-4,
        seed: int = 0,
        min_cluster_size: int = 0,
        feature_sample: int = 0,
    ) -> None:
        self.plan = plan
        self.init = init
        self.previous_labels = previous_labels
        self.backend = backend
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.min_cluster_size = min_cluster_size
        self.feature_sample = feature_sample

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self._PARAMS}

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
            c, _, _ = kmeans(
                x, k, init=init, n_init=int(self.n_init), max_iter=int(self.max_iter), tol=float(self.tol), generator=g
            )
            return c
        from sklearn.cluster import KMeans

        xs = x.detach().float().cpu().numpy()
        km = KMeans(
            n_clusters=k,
            init=init.detach().float().cpu().numpy() if init is not None else "k-means++",
            n_init=1 if init is not None else int(self.n_init),
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            random_state=seed % (2**32),
        ).fit(xs)
        return torch.from_numpy(km.cluster_centers_).to(device=x.device, dtype=x.dtype)

    def fit(self, X: torch.Tensor, y: torch.Tensor) -> "SubclassClusterer":
        """Cluster the features ``X`` ``[N, D]`` of samples with class labels ``y`` ``[N]``."""
        from sklearn.metrics import normalized_mutual_info_score

        self._check()
        plan = self.plan
        t0 = time.perf_counter()
        x, labels, prev_c, prev_a = self._inputs(X, y)
        offsets = plan.offsets.to(x.device)
        assign = offsets[labels].clone()
        centroids = torch.zeros(plan.S, x.shape[1], dtype=x.dtype, device=x.device)
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
            init = prev_c[off : off + k] if prev_c is not None else None
            cents, local = self._cluster_class(xc, k, init, derive_seed(self.seed, "cluster", c))
            centroids[off : off + k] = cents
            assign[idx] = off + local
            self.class_inertia_[c] = _inertia(xc, cents, local)
            if prev_a is not None:
                before = (prev_a[idx] - off).cpu().numpy()
                after = local.cpu().numpy()
                self.nmi_[c] = float(normalized_mutual_info_score(before, after))
                self.agreement_[c] = float((prev_a[idx] - off == local).float().mean())
        self.assign_ = assign
        self.centroids_ = self.cluster_centers_ = centroids
        self.labels_ = self.assign_
        self.sizes_ = torch.bincount(assign, minlength=plan.S).cpu()
        self.inertia_ = float(sum(self.class_inertia_.values()))
        self.time_ = time.perf_counter() - t0
        return self

    def _inputs(self, X: torch.Tensor, y: torch.Tensor):
        """``(features, labels, init centroids or None, previous labels or None)`` checked
        against each other and the plan, on the features' device."""
        plan = self.plan
        x = X.detach()
        x = x.float() if x.dtype not in (torch.float32, torch.float64) else x
        labels = y.detach().to(x.device).long()
        if x.dim() != 2 or labels.shape != (x.shape[0],):
            raise ValueError(f"clusterer: features {tuple(x.shape)} and labels {tuple(labels.shape)} do not match")
        n, dim = x.shape
        found = torch.bincount(labels, minlength=plan.num_classes)
        if len(found) != plan.num_classes:
            raise ValueError(f"clusterer: labels go up to {len(found) - 1} but the plan has {plan.num_classes} classes")
        prev_c = prev_a = None
        if self.init is not None:
            prev_c = torch.as_tensor(self.init).to(device=x.device, dtype=x.dtype)
            if prev_c.shape != (plan.S, dim):
                raise ValueError(
                    f"clusterer: init centroids have shape {tuple(prev_c.shape)}, expected {(plan.S, dim)}"
                )
        if self.previous_labels is not None:
            prev_a = torch.as_tensor(self.previous_labels).to(x.device).long()
            if prev_a.shape != (n,):
                prev_a = None  # another sample set: no agreement to measure
        return x, labels, prev_c, prev_a

    def _cluster_class(self, xc: torch.Tensor, k: int, init: torch.Tensor | None, seed: int):
        """``(centroids [k, D], local sub-class of each row)`` of one class's features ``xc``:
        k-means (on a sample of ``feature_sample`` rows when set), empty clusters re-seeded, the
        minimum size enforced, identities matched to ``init`` (or by size)."""
        xs = xc
        fs = int(self.feature_sample)
        if fs and len(xc) > max(fs, k):
            g = torch.Generator().manual_seed(derive_seed(seed, "subsample"))
            pick = torch.randperm(len(xc), generator=g)[:fs]
            xs = xc[pick.to(xc.device)]
        cents = self._run(xs, k, init, seed)
        local = nearest(xc, cents)
        local = _reseed_empty(xc, local, ((xc - cents[local]) ** 2).sum(1), k)
        cents, _ = _means(xc, local, k, cents)
        cents, local = enforce_min_size(xc, cents, local, max(1, int(self.min_cluster_size)))
        return _stable_identities(cents, local, init, k)

    def predict(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Global sub-class id of new samples: the nearest centroid among their class's."""
        plan = self.plan
        x = features.detach().to(self.centroids_.device, self.centroids_.dtype)
        labels = labels.to(x.device).long()
        out = plan.offsets.to(x.device)[labels].clone()
        for c in plan.split_classes:
            idx = (labels == c).nonzero().flatten()
            if len(idx):
                r = plan.subclass_range(c)
                out[idx] = r.start + nearest(x[idx], self.centroids_[r.start : r.stop])
        return out


__all__ = ["BACKENDS", "SubclassClusterer"]

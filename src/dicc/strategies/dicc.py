"""Dynamic Intra-Class Clustering (DICC): split majority classes into sub-classes by clustering
the network's own features, train on the sub-class pseudo-labels, re-cluster as the features
improve, and map predictions back to the classes (DESIGN.md §2).

Life of a run (``W = warmup_epochs``, ``R = recluster_every``):

- **Construction.** The :class:`~dicc.clustering.SubclassPlan` is computed once from the
  training class counts; the head has ``S = sum_c k_c`` outputs for the whole run.
- **Warm-up (epochs ``0 .. W-1``).** Only row ``offset_c`` of each class is live: the parent
  logits are ``logits[:, offset_c]`` and the other ``k_c - 1`` rows of a split class are dead
  (masked out of the merge, never in a loss, so they get no gradient). The loss is the
  post-split formula with the sub-class space collapsed onto those live rows: the base loss
  with the class counts on the parent logits plus ``parent_weight`` times the parent loss on
  the same logits, with the class labels (= sub-class ``offset_c``) as targets.
- **First split (epoch ``W``).** Features of all training images are clustered per split
  class; row ``offset_c`` of the head is copied into its ``k_c`` rows and, for the
  ``logsumexp`` merge, ``log k_c`` is subtracted from their biases, so the merged parent
  logits are exactly those of the moment before (the ``max`` merge needs no shift). The head is
  rewritten in place (same ``Parameter`` objects), which DDP requires.
- **Re-clustering (epochs ``W + j R``).** Warm-started from the previous centroids and matched
  to the previous sub-classes (Hungarian matching), so head row ``j`` keeps its meaning and
  the head is left alone. Clustering runs on rank 0; pseudo-labels and centroids are
  broadcast, so every rank trains on the same targets.
- **Features to cluster** (``feature_source``). ``"clean"``: a pass over all training images
  in eval mode without augmentation at each clustering (the specification). ``"train"``: the
  L2-normalised penultimate features the training forward passes already computed, captured
  by a forward pre-hook (on the model's ``dropout``, else its ``head``: the features before
  dropout) and paired with the dataset ``indices`` of the :meth:`DICC.loss` call that follows
  it; gathered across ranks by index (``EpochContext.gather``). Each index keeps the features
  of the last epoch it was trained in; indices no rank has seen yet (``drop_last`` leftovers
  of every epoch so far, or any after a resume: the kept features are not checkpointed) get
  clean features from ``extract_features(indices)``, a pass over those images only.
- **Loss.** ``base(sub_logits, pseudo_label)`` with the sub-class counts (optionally with
  ``soft_sibling`` mass on the sibling sub-classes) ``+ parent_weight * parent(merge(sub_logits), y)``.
- **Order** (``sampler``). A shuffle by default; or drawn with replacement so that classes
  (``balanced``, ``sqrt``: the ``resample`` method's draws) or, once split, sub-classes
  (``subclass``) come equally often: DICC composed with re-sampling.
- **Evaluation.** :meth:`DICC.parent_logits` merges each class's live rows (``logsumexp`` or
  ``max``); nothing outside training sees sub-classes.
"""
from __future__ import annotations

import math
import time
import weakref
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import nn

from ..clustering import BACKENDS, SubclassClusterer, SubclassPlan, plan_subclasses
from ..samplers import group_sampling_weights, weighted_indices
from .base import EpochContext, Strategy, register_strategy

MERGES = ("logsumexp", "max")
FEATURE_SOURCES = ("clean", "train")
SAMPLERS = ("none", "balanced", "sqrt", "subclass")


@dataclass
class DICCOptions:
    """Options of the ``dicc`` method (``method.options`` in the config)."""

    #: target sub-class size ``s`` in ``k_c = clamp(floor(n_c / s), 1, k_max)``: ``"median"``
    #: (median class count), ``"min"`` (smallest class count, at least ``size_floor``) or a number
    size: Any = "median"
    #: the most sub-classes one class is split into
    k_max: int = 4
    #: with ``size="min"``, the smallest ``s`` allowed
    size_floor: int = 100
    #: epochs trained on parent labels before the first clustering: an integer number of epochs,
    #: or a fraction (< 1) of the run's epochs, rounded (the first split happens at the start of
    #: epoch ``warmup`` + 1, 1-based). Default 0.3: 3 of 10 epochs measured best on FER2013
    #: IF=100 validation (benchmarks/fer2013_lt/ablation_cpu: 1 -> 42.9, 3 -> 45.4, 5 -> 45.6)
    warmup_epochs: Any = 0.3
    #: re-cluster every this many epochs after the first split; 0 = cluster once, never again
    recluster_every: int = 1
    #: weight of the parent-level loss on the merged parent logits (0 turns it off); the total is
    #: ``(sub + parent_weight * parent) / (1 + parent_weight)``, so the loss has the base
    #: method's scale (with ``k_max=1`` and the same loss in both places it *is* the base loss)
    parent_weight: float = 1.0
    #: loss in sub-class space, built with the sub-class counts (any name of
    #: ``dicc.losses.create_loss`` but ldam: ce, weighted_ce, focal, balanced_softmax, logit_adjust)
    base_loss: str = "ce"
    #: keyword options of ``base_loss`` (e.g. ``{"tau": 1.0}``)
    base_loss_options: dict = field(default_factory=dict)
    #: loss on the merged parent logits, built with the class counts (e.g. ``"balanced_softmax"``)
    parent_loss: str = "ce"
    #: keyword options of ``parent_loss``
    parent_loss_options: dict = field(default_factory=dict)
    #: how sub-class logits become a parent logit: ``"logsumexp"`` (sum of the sub-class
    #: probabilities) or ``"max"`` (the most likely sub-class)
    merge: str = "logsumexp"
    #: k-means implementation: ``"torch"`` (on the training device) or ``"sklearn"`` (CPU)
    backend: str = "torch"
    #: every sub-class gets at least this many samples (when the class has enough); 0 = only
    #: non-empty
    min_cluster_size: int = 0
    #: run k-means on at most this many samples per class, then assign the rest to the nearest
    #: centroid; 0 = cluster all samples
    feature_sample: int = 0
    #: k-means++ restarts at the first clustering (later ones warm-start from the previous
    #: centroids)
    n_init: int = 3
    #: Lloyd iterations at most per k-means run
    max_iter: int = 100
    #: label-smoothing mass moved from the pseudo-label to its sibling sub-classes (spread
    #: evenly; same-class siblings only, unsplit classes keep all of it); 0 = hard targets.
    #: Default 0.3: the best splitting variant on FER2013 IF=100 validation (ablation_cpu)
    soft_sibling: float = 0.3
    #: seed of the clustering (k-means++ and sub-sampling; the epoch is added to it)
    seed: int = 0
    #: features clustered: ``"train"`` (the features the training forward passes of the
    #: previous epoch computed anyway: augmented images, train mode, no extra pass; indices not
    #: trained on yet fall back to clean features; a DICC epoch costs about a CE epoch) or
    #: ``"clean"`` (an extra pass over all training images in eval mode without augmentation at
    #: every clustering, 1.3-1.6x a CE epoch; benchmarks/dicc_overhead.md)
    feature_source: str = "train"
    #: training order: ``"none"`` (a shuffle), ``"balanced"`` / ``"sqrt"`` (class-aware
    #: re-sampling with replacement, as the ``resample`` method) or ``"subclass"`` (every
    #: sub-class drawn equally often once the classes are split; every class during warm-up)
    sampler: str = "none"

    def __post_init__(self) -> None:
        """Checked when the options are built, so a grid fails before anything trains."""
        from ..losses import available_losses

        if self.merge not in MERGES:
            raise ValueError(f"dicc: unknown merge {self.merge!r}; valid: {', '.join(MERGES)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"dicc: unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"dicc: unknown sampler {self.sampler!r}; valid: {', '.join(SAMPLERS)}")
        if self.feature_source not in FEATURE_SOURCES:
            raise ValueError(f"dicc: unknown feature_source {self.feature_source!r}; valid: "
                             f"{', '.join(FEATURE_SOURCES)}")
        # LDAM needs a cosine head whose bias is unused, so the split could not keep the parent
        # predictions (DESIGN 2.4) and the merge would see unscaled cosines: not offered here
        valid = [n for n in available_losses() if n != "ldam"]
        for key in ("base_loss", "parent_loss"):
            if getattr(self, key) not in valid:
                raise ValueError(f"dicc: unknown {key} {getattr(self, key)!r}; valid: {', '.join(valid)}")
        w = self.warmup_epochs
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 or (isinstance(w, float) and w >= 1
                                                                                and not w.is_integer()):
            raise ValueError(f"dicc: warmup_epochs must be a number of epochs (an integer >= 0) or a fraction of "
                             f"the epochs in [0, 1), got {w!r}")
        if isinstance(self.recluster_every, bool) or int(self.recluster_every) < 0:
            raise ValueError("dicc: recluster_every must be an integer >= 0")
        if not 0.0 <= float(self.soft_sibling) < 1.0:
            raise ValueError(f"dicc: soft_sibling must lie in [0, 1), got {self.soft_sibling}")
        if float(self.parent_weight) < 0:
            raise ValueError(f"dicc: parent_weight must be >= 0, got {self.parent_weight}")


class _Merge(nn.Module):
    """Parent logits from sub-class logits: a fixed ``[C, k_max]`` gather of each class's rows,
    masked to its live rows, reduced by ``logsumexp`` or ``max`` (exportable as is)."""

    def __init__(self, plan: SubclassPlan, merge: str, split: bool) -> None:
        super().__init__()
        kmax = max(plan.k)
        index = torch.zeros(plan.num_classes, kmax, dtype=torch.long)
        live = torch.zeros(plan.num_classes, kmax, dtype=torch.bool)
        for c in range(plan.num_classes):
            r = plan.subclass_range(c)
            n = len(r) if split else 1
            index[c, :] = r.start
            index[c, :n] = torch.arange(r.start, r.start + n)
            live[c, :n] = True
        self.merge = merge
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("dead", ~live, persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.index.device != logits.device:  # follow the logits (kept there after the first call)
            self.index, self.dead = self.index.to(logits.device), self.dead.to(logits.device)
        z = logits[:, self.index.flatten()].view(logits.shape[0], *self.index.shape)
        z = z.masked_fill(self.dead, float("-inf"))
        return z.logsumexp(2) if self.merge == "logsumexp" else z.amax(2)


@register_strategy
class DICC(Strategy):
    """Dynamic Intra-Class Clustering: majority classes split into k-means sub-classes of the
    network's own features, re-clustered during training with stable sub-class identities,
    trained with a sub-class loss plus a parent-level loss, merged back to classes for
    evaluation. See the module docstring and :class:`DICCOptions`.
    """

    name = "dicc"
    summary = "Dynamic Intra-Class Clustering: majority classes split into re-clustered sub-classes"
    Options = DICCOptions

    def __init__(self, class_counts: Sequence[int], options: DICCOptions | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__(class_counts, options, class_names)
        o = self.options
        self.plan: SubclassPlan = plan_subclasses([int(c) for c in self.class_counts.tolist()], o.size,
                                                  o.k_max, o.size_floor)
        # checked now, before any training: k-means needs at least k_c samples in class c
        short = [f"{self.class_name(c)} ({int(n)} images, {k} sub-classes)"
                 for c, (n, k) in enumerate(zip(self.class_counts.tolist(), self.plan.k)) if k > n]
        if short:
            raise ValueError(f"dicc: the sub-class plan splits classes into more sub-classes than they have "
                             f"images: {'; '.join(short)}; raise method.options.size or lower k_max")
        self._epochs: int | None = None               # the run's epochs (known at the first epoch)
        # clustering state (all on CPU; what state_dict() saves)
        self.split = False
        self.pseudo: torch.Tensor | None = None       # [N] global sub-class id per dataset index
        self.centroids: torch.Tensor | None = None    # [S, D]
        self.sub_counts = self.plan.even_subclass_counts()
        self.last_cluster_epoch = -1
        self.rounds = 0
        # feature_source="train": features kept from the training passes (on the training
        # device, not checkpointed): row i = dataset index i, stamped with the epoch it was seen
        self._kept: torch.Tensor | None = None        # [N, D] L2-normalised features
        self._kept_label: torch.Tensor | None = None  # [N] class labels
        self._kept_epoch: torch.Tensor | None = None  # [N] epoch of the row, -1 = never seen
        self._capture_epoch: int | None = None        # epoch being captured now (None: not capturing)
        self._pending: torch.Tensor | None = None     # head input of the last training forward
        self._hook = None                             # (module, handle) of the capture hook
        self._build()

    # -- shape ---------------------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        return self.plan.S

    # -- internals -----------------------------------------------------------------------
    def _build(self) -> None:
        """(Re)build the losses and the merge for the current state."""
        from ..losses import create_loss

        o = self.options
        counts = self.class_counts
        if self.split:
            self._base = create_loss(o.base_loss, self.sub_counts, o.base_loss_options)
        else:  # the live rows are a C-way classifier: the sub-class space is the class space
            self._base = create_loss(o.base_loss, counts, o.base_loss_options)
        self._parent = create_loss(o.parent_loss, counts, o.parent_loss_options) if o.parent_weight else None
        for loss in self.loss_modules():
            loss.label_smoothing = getattr(self, "label_smoothing", 0.0)
        self._merge = _Merge(self.plan, o.merge, self.split)
        self._pseudo_dev: dict[torch.device, torch.Tensor] = {}
        self._sibling_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _pseudo_on(self, device: torch.device) -> torch.Tensor:
        t = self._pseudo_dev.get(device)
        if t is None:
            t = self._pseudo_dev[device] = self.pseudo.to(device)
        return t

    def _siblings(self, device: torch.device):
        hit = self._sibling_cache.get(device)
        if hit is None:
            k = torch.tensor(self.plan.k, dtype=torch.long)
            parent = self.plan.sub_to_parent
            hit = (self.plan.offsets[parent].to(device), k[parent].to(device))
            self._sibling_cache[device] = hit
        return hit

    def _sub_loss(self, logits: torch.Tensor, sub_t: torch.Tensor) -> torch.Tensor:
        eps = float(self.options.soft_sibling)
        if eps == 0.0:
            return self._base(logits, sub_t)
        # soft targets: (1 - eps_i) on the pseudo-label, eps_i / (k_i - 1) on each sibling
        # (eps_i = 0 for unsplit classes); a mixture of the base loss's per-sample terms,
        # which for cross-entropy is exactly cross-entropy with those soft targets
        base = self._base
        logits = logits.float()
        off, k = self._siblings(logits.device)
        o, kk = off[sub_t], k[sub_t]
        local = sub_t - o
        eps_i = (kk > 1).to(logits.dtype) * eps
        per = (1.0 - eps_i) * base.smoothed_per_sample(logits, sub_t)
        share = eps_i / (kk - 1).clamp_min(1).to(logits.dtype)
        for j in range(1, max(self.plan.k)):
            valid = j < kk
            sib = torch.where(valid, o + (local + j) % kk.clamp_min(1), sub_t)
            per = per + torch.where(valid, share, torch.zeros_like(share)) * base.smoothed_per_sample(logits, sib)
        return base.reduce(per, sub_t)

    # -- training --------------------------------------------------------------------------
    def epoch_indices(self, labels: torch.Tensor, epoch: int, seed: int,
                      rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """A shuffle, or a re-sampled draw (``sampler``) over classes or, once split, over
        sub-classes (the engine calls this after :meth:`on_epoch_start`, so a re-clustering
        at the start of the epoch is already reflected)."""
        kind = self.options.sampler
        if kind == "none":
            return super().epoch_indices(labels, epoch, seed, rank, world_size)
        labels = torch.as_tensor(labels).long().cpu()
        groups, num_groups = labels, self.num_classes
        if kind == "subclass" and self.split:
            if self.pseudo is None or len(self.pseudo) != len(labels):
                raise ValueError(f"dicc: sampler 'subclass' needs a pseudo-label for each of the {len(labels)} "
                                 f"training samples")
            groups, num_groups = self.pseudo, self.plan.S
        weights = group_sampling_weights(groups, num_groups, 0.5 if kind == "sqrt" else 1.0)
        return weighted_indices(groups, weights, epoch, seed, rank, world_size)

    def warmup_for(self, epochs: int | None) -> int:
        """Warm-up epochs of a run of ``epochs`` epochs (a fraction option is resolved here)."""
        w = self.options.warmup_epochs
        if isinstance(w, float) and w < 1:
            if epochs is None:
                raise ValueError("dicc: warmup_epochs is a fraction of the epochs; the number of epochs is not known")
            return int(round(w * epochs))
        return int(w)

    def is_cluster_epoch(self, epoch: int, epochs: int | None = None) -> bool:
        """Whether the clustering is (re)done at the start of ``epoch`` (0-based) of a run of
        ``epochs`` epochs (default: the run's, once training has started)."""
        w, r = self.warmup_for(epochs if epochs is not None else self._epochs), int(self.options.recluster_every)
        if epoch < w:
            return False
        return epoch == w if r <= 0 else (epoch - w) % r == 0

    def on_epoch_start(self, ctx: EpochContext) -> None:
        self._epochs = ctx.epochs
        train_source = self.options.feature_source == "train"
        if train_source:
            self._attach(ctx.model, ctx.device)
        due = self.is_cluster_epoch(ctx.epoch) or (not self.split and ctx.epoch >= self.warmup_for(ctx.epochs))
        if due and self.last_cluster_epoch != ctx.epoch:
            self.recluster(ctx)
        # keep this epoch's training features while a later clustering may use them
        self._pending = None
        if train_source and (not self.split or int(self.options.recluster_every) > 0):
            self._capture_epoch = ctx.epoch
        else:
            self._capture_epoch = None
            self._detach()

    # -- features kept from the training passes (feature_source="train") --------------------
    def _attach(self, model: nn.Module, device: torch.device) -> None:
        """Hook the input of ``model.dropout`` (else ``model.head``): the penultimate features."""
        target = getattr(model, "dropout", None)
        target = target if isinstance(target, nn.Module) else model.head
        if self._hook is not None and self._hook[0] is target:
            return
        self._detach()
        me = weakref.ref(self)   # a plain closure: copying the model does not copy the strategy

        def keep_input(module: nn.Module, args: tuple) -> None:
            strat = me()
            if strat is not None and module.training and strat._capture_epoch is not None:
                strat._pending = args[0].detach()

        self._hook = (target, target.register_forward_pre_hook(keep_input))
        n, dim = int(self.class_counts.sum().item()), int(model.head.in_features)
        if self._kept is not None and self._kept.shape == (n, dim) and self._kept.device != torch.device(device):
            self._kept, self._kept_label, self._kept_epoch = (t.to(device) for t in
                                                              (self._kept, self._kept_label, self._kept_epoch))
        if self._kept is None or self._kept.shape != (n, dim):
            self._kept = torch.zeros(n, dim, device=device)
            self._kept_label = torch.zeros(n, dtype=torch.long, device=device)
            self._kept_epoch = torch.full((n,), -1, dtype=torch.long, device=device)

    def _detach(self) -> None:
        if self._hook is not None:
            self._hook[1].remove()
            self._hook = None
        self._kept = self._kept_label = self._kept_epoch = self._pending = None

    @torch.no_grad()
    def _keep(self, feats: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        dev = self._kept.device
        i = indices.to(dev).long()
        self._kept[i] = torch.nn.functional.normalize(feats.to(dev).float(), dim=1)
        self._kept_label[i] = targets.to(dev).long()
        self._kept_epoch[i] = int(self._capture_epoch)

    def _gather_kept(self, ctx: EpochContext, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, labels and a found-mask ``[N]`` of the kept ``rows`` (a mask) of every rank."""
        n, dim = self._kept.shape
        idx = rows.nonzero().flatten()
        vals = torch.cat([self._kept[idx], self._kept_label[idx, None].float(),
                          torch.ones(len(idx), 1, device=self._kept.device)], 1)
        out = ctx.gather(vals, idx, n)
        return out[:, :dim], out[:, dim].long(), out[:, dim + 1] > 0

    def _train_features(self, ctx: EpochContext) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """All ``N`` features for the clustering from the kept training features: those of the
        last epoch first, then older ones, then a clean pass for indices nobody has seen."""
        if self._kept is None:
            self._attach(ctx.model, ctx.device)
        # rows of the epoch just trained are disjoint across ranks (every index is trained
        # on by one rank per epoch); older rows are only asked for where those left holes
        feats, labels, have = self._gather_kept(ctx, self._kept_epoch == ctx.epoch - 1)
        counts = {"train": int(have.sum()), "older": 0, "clean": 0}
        if not have.all():
            f2, l2, got = self._gather_kept(ctx, (self._kept_epoch >= 0) & ~have.to(self._kept.device))
            feats[got], labels[got] = f2[got], l2[got]
            have |= got
            counts["older"] = int(got.sum())
        if not have.all():
            miss = (~have).nonzero().flatten()
            cf, cl = ctx.extract_features(miss.cpu())
            feats[miss] = cf.to(feats.device)
            labels[miss] = cl.to(labels.device).long()
            counts["clean"] = len(miss)
        return feats, labels, counts

    def recluster(self, ctx: EpochContext) -> None:
        """Extract features, cluster (rank 0), broadcast, split the head the first time."""
        t0 = time.perf_counter()
        if self.options.feature_source == "train":
            feats, labels, sources = self._train_features(ctx)
        else:
            feats, labels = ctx.extract_features()
            sources = {"clean": int(len(labels))}
        t_feat = time.perf_counter() - t0
        n, dim = feats.shape
        found = torch.bincount(labels.long().cpu(), minlength=self.num_classes)
        if len(found) != self.num_classes or not torch.equal(found.double(), self.class_counts):
            raise ValueError(f"dicc: the training labels have class counts {found.tolist()}, but the sub-class "
                             f"plan was made for {[int(c) for c in self.class_counts.tolist()]}")
        bdev = ctx.device if ctx.world_size > 1 else feats.device
        fitted, err = None, None
        assign = torch.empty(n, dtype=torch.long, device=bdev)
        centroids = torch.empty(self.plan.S, dim, dtype=torch.float32, device=bdev)
        if ctx.rank == 0:
            previous = None
            if self.centroids is not None and self.centroids.shape == (self.plan.S, dim):
                previous = SimpleNamespace(centroids_=self.centroids, assign_=self.pseudo)
            o = self.options
            try:
                fitted = SubclassClusterer(backend=o.backend, n_init=o.n_init, max_iter=o.max_iter,
                                           seed=int(o.seed) + ctx.epoch, min_cluster_size=o.min_cluster_size,
                                           feature_sample=o.feature_sample).fit(feats, labels, self.plan, previous)
                assign = fitted.assign_.to(bdev).long()
                centroids = fitted.centroids_.to(bdev).float()
                if assign.shape != (n,) or centroids.shape != (self.plan.S, dim):   # what the ranks receive into
                    raise ValueError(f"dicc: the clustering returned assignments {tuple(assign.shape)} and centroids "
                                     f"{tuple(centroids.shape)}; expected ({n},) and ({self.plan.S}, {dim})")
            except Exception as e:  # noqa: BLE001 - every rank raises it (below), none waits in broadcast
                err = e
        ctx.check(err)
        if ctx.world_size > 1:
            ctx.broadcast(assign, 0)
            ctx.broadcast(centroids, 0)
        self.pseudo = assign.cpu()
        self.centroids = centroids.cpu()
        self.sub_counts = torch.bincount(self.pseudo, minlength=self.plan.S).double()
        first = not self.split
        if first:
            self.split_head(ctx.model, ctx.optimizer)
        self.split = True
        self.last_cluster_epoch = ctx.epoch
        self.rounds += 1
        self._build()
        if ctx.rank == 0:
            names = self.class_names or [str(c) for c in range(self.num_classes)]
            sizes = {names[c]: self.sub_counts[self.plan.subclass_range(c)].long().tolist()
                     for c in self.plan.split_classes}
            ctx.log({"event": "recluster", "epoch": ctx.epoch + 1, "round": self.rounds, "first_split": first,
                     "sizes": sizes,
                     "nmi": {names[c]: round(v, 4) for c, v in fitted.nmi_.items()},
                     "agreement": {names[c]: round(v, 4) for c, v in fitted.agreement_.items()},
                     "inertia": round(fitted.inertia_, 4), "features": sources,
                     "time_features": round(t_feat, 3), "time_cluster": round(fitted.time_, 3)})

    @torch.no_grad()
    def split_head(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Copy row ``offset_c`` of the head into the ``k_c`` rows of every split class, minus
        ``log k_c`` on the biases for the ``logsumexp`` merge, in place.

        With ``optimizer``, the per-row optimizer state of the head (SGD's momentum, Adam's
        moments: every state tensor shaped like the parameter) is copied the same way, so the new
        rows continue the parent row's optimisation instead of the state the dead rows gathered
        during warm-up (for Adam, second moments near zero: oversized first steps)."""
        head = model.head
        weight = head.weight
        if weight.shape[0] != self.plan.S:
            raise ValueError(f"dicc: the model's head has {weight.shape[0]} outputs, the sub-class plan needs "
                             f"{self.plan.S}")
        bias = getattr(head, "bias", None)
        params = [p for p in (weight, bias) if p is not None]
        states = [[t for t in optimizer.state.get(p, {}).values()
                   if torch.is_tensor(t) and t.shape == p.shape] if optimizer is not None else [] for p in params]
        for c in self.plan.split_classes:
            r = self.plan.subclass_range(c)
            weight[r.start + 1:r.stop].copy_(weight[r.start].expand(len(r) - 1, -1))
            if bias is not None:
                shift = math.log(len(r)) if self.options.merge == "logsumexp" else 0.0
                bias[r.start:r.stop].copy_((bias[r.start] - shift).expand(len(r)))
            for p, tensors in zip(params, states):
                for t in tensors:
                    t[r.start + 1:r.stop].copy_(t[r.start].expand(len(r) - 1, *t.shape[1:]))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self._pending is not None:   # the features of this batch's forward pass
            feats, self._pending = self._pending, None
            if self._kept is not None and self._capture_epoch is not None and len(feats) == len(indices):
                self._keep(feats, targets, indices)
        pw = float(self.options.parent_weight) if self._parent is not None else 0.0
        if not self.split:
            z = self._merge(logits)   # = logits[:, offset_c]: the live rows
            out = self._base(z, targets)
            if pw:
                out = (out + pw * self._parent(z, targets)) / (1.0 + pw)
            return out
        sub_t = self._pseudo_on(logits.device)[indices.to(logits.device).long()]
        out = self._sub_loss(logits, sub_t)
        if pw:
            out = (out + pw * self._parent(self._merge(logits), targets)) / (1.0 + pw)
        return out

    def loss_modules(self) -> list:
        return [m for m in (self._base, self._parent) if m is not None]

    # -- evaluation ------------------------------------------------------------------------
    def parent_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return self._merge(logits)

    def parent_merge_module(self) -> nn.Module:
        """A module mapping sub-class logits to parent logits in the current state (for export:
        append it to the model). Before the first split only row ``offset_c`` is used."""
        return _Merge(self.plan, self.options.merge, self.split)

    # -- presentation ----------------------------------------------------------------------
    def describe(self) -> str:
        return self.plan.format_table(self.class_names)

    def plan_record(self) -> dict:
        """What ``subclass_plan.json`` holds: the plan, its table and the options."""
        return {"method": self.name, "plan": self.plan.to_dict(), "table": self.plan.table(self.class_names),
                "options": asdict(self.options)}

    def run_files(self) -> dict[str, dict]:
        return {"subclass_plan.json": self.plan_record()}

    # -- checkpoints -----------------------------------------------------------------------
    def rank_state_dict(self) -> dict:
        """This rank's kept training features (``feature_source="train"``), so a resumed run
        clusters exactly what the uninterrupted one would have."""
        if self._kept is None:
            return {}
        return {"kept": self._kept.detach().cpu().clone(), "kept_label": self._kept_label.cpu().clone(),
                "kept_epoch": self._kept_epoch.cpu().clone()}

    def load_rank_state_dict(self, state: dict) -> None:
        if state and "kept" in state:
            self._kept = state["kept"].float().clone()
            self._kept_label = state["kept_label"].long().clone()
            self._kept_epoch = state["kept_epoch"].long().clone()

    def state_dict(self) -> dict:
        return {
            "plan": self.plan.to_dict(), "split": bool(self.split), "rounds": int(self.rounds),
            "last_cluster_epoch": int(self.last_cluster_epoch), "merge": str(self.options.merge),
            "pseudo": self.pseudo.clone() if self.pseudo is not None else torch.empty(0, dtype=torch.long),
            "centroids": self.centroids.clone() if self.centroids is not None else torch.empty(0),
            "sub_counts": self.sub_counts.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        plan = SubclassPlan.from_dict(state["plan"])
        if plan.k != self.plan.k or plan.counts != self.plan.counts:
            raise ValueError(f"dicc: the checkpoint's sub-class plan (counts {plan.counts}, k {plan.k}) differs from "
                             f"this run's (counts {self.plan.counts}, k {self.plan.k})")
        self.split = bool(state["split"])
        self.rounds = int(state.get("rounds", 0))
        self.last_cluster_epoch = int(state.get("last_cluster_epoch", -1))
        pseudo, cents = state.get("pseudo"), state.get("centroids")
        self.pseudo = pseudo.long().cpu().clone() if pseudo is not None and pseudo.numel() else None
        self.centroids = cents.float().cpu().clone() if cents is not None and cents.numel() else None
        self.sub_counts = torch.as_tensor(state["sub_counts"], dtype=torch.float64).clone()
        if self.split and self.pseudo is None:
            raise ValueError("dicc: checkpoint says the classes were split but holds no pseudo-labels")
        self._build()


__all__ = ["DICC", "DICCOptions", "FEATURE_SOURCES", "MERGES", "SAMPLERS"]

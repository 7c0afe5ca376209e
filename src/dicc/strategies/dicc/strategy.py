"""The ``dicc`` strategy (see the package docstring for the life of a run)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Sequence

import torch
from torch import nn

from ...clustering import SubclassClusterer, SubclassPlan, plan_subclasses
from ...samplers import group_sampling_weights, weighted_indices
from ...seeds import derive_seed
from ..base import EpochContext, Strategy, register_strategy
from .feature_bank import FeatureBank
from .merge import Merge
from .options import DICCOptions


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

    def __init__(
        self, class_counts: Sequence[int], options: DICCOptions | None = None, class_names: Sequence[str] | None = None
    ) -> None:
        super().__init__(class_counts, options, class_names)
        o = self.options
        self.plan: SubclassPlan = plan_subclasses(
            [int(c) for c in self.class_counts.tolist()], o.size, o.k_max, o.size_floor
        )
        # checked now, before any training: k-means needs at least k_c samples in class c
        short = [
            f"{self.class_name(c)} ({int(n)} images, {k} sub-classes)"
            for c, (n, k) in enumerate(zip(self.class_counts.tolist(), self.plan.k))
            if k > n
        ]
        if short:
            raise ValueError(
                f"dicc: the sub-class plan splits classes into more sub-classes than they have "
                f"images: {'; '.join(short)}; raise method.options.size or lower k_max"
            )
        # what the head predicts: the sub-classes, or (head="parent") the classes themselves
        self.head_plan = (
            self.plan
            if o.head == "subclass"
            else SubclassPlan(
                counts=list(self.plan.counts),
                k=[1] * self.num_classes,
                size=self.plan.size,
                size_rule="parent",
                k_max=1,
            )
        )
        self._epochs: int | None = None  # the run's epochs (known at the first epoch)
        self._world = 1  # DDP world size (known at the first epoch): the contrastive term gathers
        # clustering state (all on CPU; what state_dict() saves)
        self.split = False
        self.pseudo: torch.Tensor | None = None  # [N] global sub-class id per dataset index
        self.centroids: torch.Tensor | None = None  # [S, D]
        self.sub_counts = self.plan.even_subclass_counts()
        self.last_cluster_epoch = -1
        self.rounds = 0
        # feature_source="train": the training passes' features, per dataset index (per rank)
        self.bank = FeatureBank()
        self._capture_epoch: int | None = None  # epoch being captured now (None: not capturing)
        self._build()

    # -- shape ---------------------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        return self.head_plan.S

    @property
    def views(self) -> int:
        """Augmented views of each training image per step: two with the contrastive term."""
        return 2 if self.options.contrastive else 1

    @property
    def projection_dim(self) -> int | None:
        """Output size of the projection head the contrastive term needs (None: none)."""
        return int(self.options.projection_dim) if self.options.contrastive else None

    @property
    def parent_head(self) -> bool:
        return self.options.head == "parent"

    @classmethod
    def check_config(cls, cfg) -> None:
        """Mixup mixes two images: neither the contrastive term (views of single images) nor the
        features kept from training (those of mixed images) can take it."""
        options = cfg.method.options
        if cfg.augment.mixup > 0 and options.get("contrastive"):
            raise ValueError(
                "augment.mixup with method.options.contrastive: the contrastive term compares views of "
                "single images; turn one of them off"
            )
        if cfg.augment.mixup > 0 and options.get("feature_source", "train") == "train":
            raise ValueError(
                "augment.mixup with method dicc: the features kept from training would be those of mixed "
                "images; set method.options.feature_source=clean"
            )

    # -- internals -----------------------------------------------------------------------
    def _build(self) -> None:
        """(Re)build the losses and the merge for the current state."""
        from ...losses import create_loss

        o = self.options
        counts = self.class_counts
        if self.parent_head:  # a C-way head trained with the parent loss alone
            self._base = None
        elif self.split:
            self._base = create_loss(o.base_loss, self.sub_counts, o.base_loss_options)
        else:  # the live rows are a C-way classifier: the sub-class space is the class space
            self._base = create_loss(o.base_loss, counts, o.base_loss_options)
        wants_parent = o.parent_weight or self.parent_head
        self._parent = create_loss(o.parent_loss, counts, o.parent_loss_options) if wants_parent else None
        for loss in self.loss_modules():
            loss.label_smoothing = getattr(self, "label_smoothing", 0.0)
        self._merge = Merge(self.head_plan, o.merge, self.split)
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
    def epoch_indices(
        self, labels: torch.Tensor, epoch: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> torch.Tensor:
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
                raise ValueError(
                    f"dicc: sampler 'subclass' needs a pseudo-label for each of the {len(labels)} training samples"
                )
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
        self._epochs, self._world = ctx.epochs, ctx.world_size
        train_source = self.options.feature_source == "train"
        due = self.is_cluster_epoch(ctx.epoch) or (not self.split and ctx.epoch >= self.warmup_for(ctx.epochs))
        if due and self.last_cluster_epoch != ctx.epoch:
            self.recluster(ctx)
        # keep this epoch's training features while a later clustering may use them
        if train_source and (not self.split or int(self.options.recluster_every) > 0):
            self._capture_epoch = ctx.epoch
        else:
            self._capture_epoch = None
            self.bank.clear()

    # -- the training passes' features (feature_source="train", see feature_bank) -------------
    @property
    def wants_features(self) -> bool:
        return self._capture_epoch is not None

    def observe_features(self, features: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        if self._capture_epoch is None:
            return
        self.bank.ensure(int(self.class_counts.sum().item()), int(features.shape[1]), features.device)
        self.bank.keep(features, targets, indices, self._capture_epoch)

    def recluster(self, ctx: EpochContext) -> None:
        """Extract features, cluster (rank 0), broadcast, split the head the first time."""
        t0 = time.perf_counter()
        feats, labels, sources = self._features_to_cluster(ctx)
        t_feat = time.perf_counter() - t0
        n, dim = feats.shape
        found = torch.bincount(labels.long().cpu(), minlength=self.num_classes)
        if len(found) != self.num_classes or not torch.equal(found.double(), self.class_counts):
            raise ValueError(
                f"dicc: the training labels have class counts {found.tolist()}, but the sub-class "
                f"plan was made for {[int(c) for c in self.class_counts.tolist()]}"
            )
        bdev = ctx.device if ctx.world_size > 1 else feats.device
        fitted, err = None, None
        assign = torch.empty(n, dtype=torch.long, device=bdev)
        centroids = torch.empty(self.plan.S, dim, dtype=torch.float32, device=bdev)
        if ctx.rank == 0:
            try:
                fitted, assign, centroids = self._cluster(feats, labels, ctx.epoch, bdev)
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
        if first and not self.parent_head:
            self.split_head(ctx)
        self.split = True
        self.last_cluster_epoch = ctx.epoch
        self.rounds += 1
        self._build()
        if ctx.rank == 0:
            ctx.log(self._recluster_record(ctx, first, fitted, sources, t_feat))

    def _features_to_cluster(self, ctx: EpochContext):
        """``(features, labels, {source: count})`` of every training image (``feature_source``)."""
        if self.options.feature_source == "train" and not self.bank.empty:
            return self.bank.for_clustering(ctx)
        if self.options.feature_source == "train":  # nothing trained on yet: every index clean
            feats, labels = ctx.extract_features(torch.arange(int(self.class_counts.sum().item())))
            return feats, labels, {"train": 0, "older": 0, "clean": int(len(labels))}
        feats, labels = ctx.extract_features()
        return feats, labels, {"clean": int(len(labels))}

    def _cluster(self, feats: torch.Tensor, labels: torch.Tensor, epoch: int, bdev: torch.device):
        """``(fitted SubclassClusterer, assignments, centroids)`` (on ``bdev``) of this epoch's
        clustering, warm-started from the previous one when the shapes still fit."""
        n, dim = feats.shape
        warm = self.centroids is not None and self.centroids.shape == (self.plan.S, dim)
        o = self.options
        fitted = SubclassClusterer(
            self.plan,
            init=self.centroids if warm else None,
            previous_labels=self.pseudo if warm else None,
            backend=o.backend,
            n_init=o.n_init,
            max_iter=o.max_iter,
            seed=derive_seed(o.seed, "clustering", epoch),
            min_cluster_size=o.min_cluster_size,
            feature_sample=o.feature_sample,
        ).fit(feats, labels)
        assign = fitted.labels_.to(bdev).long()
        centroids = fitted.cluster_centers_.to(bdev).float()
        if assign.shape != (n,) or centroids.shape != (self.plan.S, dim):  # what the ranks receive into
            raise ValueError(
                f"dicc: the clustering returned assignments {tuple(assign.shape)} and centroids "
                f"{tuple(centroids.shape)}; expected ({n},) and ({self.plan.S}, {dim})"
            )
        return fitted, assign, centroids

    def _recluster_record(self, ctx: EpochContext, first: bool, fitted, sources: dict, t_feat: float) -> dict:
        """The ``recluster`` event line of ``metrics.jsonl``: sizes, agreement with the previous
        clustering, inertia, where the features came from, timings."""
        names = self.class_names or [str(c) for c in range(self.num_classes)]
        counts = self.sub_counts
        sizes = {names[c]: counts[self.plan.subclass_range(c)].long().tolist() for c in self.plan.split_classes}
        return {
            "event": "recluster",
            "epoch": ctx.epoch + 1,
            "round": self.rounds,
            "first_split": first,
            "sizes": sizes,
            "nmi": {names[c]: round(v, 4) for c, v in fitted.nmi_.items()},
            "agreement": {names[c]: round(v, 4) for c, v in fitted.agreement_.items()},
            "inertia": round(fitted.inertia_, 4),
            "features": sources,
            "time_features": round(t_feat, 3),
            "time_cluster": round(fitted.time_, 3),
        }

    @torch.no_grad()
    def split_head(self, ctx: EpochContext) -> None:
        """Copy row ``offset_c`` of the head into the ``k_c`` rows of every split class, minus
        ``log k_c`` on the biases for the ``logsumexp`` merge, in place
        (``EpochContext.copy_head_rows``: the per-row optimizer state, SGD's momentum or Adam's
        moments, is copied the same way, so the new rows continue the parent row's optimisation
        instead of the state the dead rows gathered during warm-up)."""
        rows = int(ctx.model.head.weight.shape[0])
        if rows != self.plan.S:
            raise ValueError(f"dicc: the model's head has {rows} outputs, the sub-class plan needs {self.plan.S}")
        pairs, bias_add = [], {}
        for c in self.plan.split_classes:
            r = self.plan.subclass_range(c)
            pairs += [(r.start, j) for j in range(r.start + 1, r.stop)]
            shift = math.log(len(r)) if self.options.merge == "logsumexp" else 0.0
            bias_add.update({j: -shift for j in r})
        ctx.copy_head_rows(pairs, bias_add)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.parent_head:
            return self._parent(logits, targets)
        pw = float(self.options.parent_weight) if self._parent is not None else 0.0
        if not self.split:
            z = self._merge(logits)  # = logits[:, offset_c]: the live rows
            out = self._base(z, targets)
            if pw:
                out = (out + pw * self._parent(z, targets)) / (1.0 + pw)
            return out
        sub_t = self._pseudo_on(logits.device)[indices.to(logits.device).long()]
        out = self._sub_loss(logits, sub_t)
        if pw:
            out = (out + pw * self._parent(self._merge(logits), targets)) / (1.0 + pw)
        return out

    def embedding_loss(self, z: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor | None:
        """``contrastive`` times the sub-class supervised contrastive loss
        (:func:`dicc.contrastive.subclass_supcon`) of the projected embeddings ``z`` of a step's
        views (their ``targets`` and dataset ``indices`` repeated per view); the sub-classes are
        the pseudo-labels once split, the classes before. Under DDP every rank's embeddings are
        the contrast set (gathered with their gradients). None when the option is off."""
        o = self.options
        if not o.contrastive:
            return None
        from ...contrastive import subclass_supcon
        from ...distributed import all_gather_rows

        dev = z.device
        sub = self._pseudo_on(dev)[indices.to(dev).long()] if self.split else targets
        contrast, offset = None, 0
        if self._world > 1:
            contrast, offset = all_gather_rows(z, sub, targets)
        return float(o.contrastive) * subclass_supcon(
            z,
            sub,
            targets,
            temperature=o.con_temperature,
            base_temperature=o.con_base_temperature,
            class_weight=o.con_class_weight,
            contrast=contrast,
            offset=offset,
        )

    def loss_modules(self) -> list:
        return [m for m in (self._base, self._parent) if m is not None]

    # -- evaluation ------------------------------------------------------------------------
    def parent_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return self._merge(logits)

    def head_groups(self) -> list[range]:
        return [self.head_plan.subclass_range(c) for c in range(self.num_classes)]

    def subclasses(self) -> tuple[torch.Tensor, SubclassPlan] | None:
        return (self.pseudo, self.plan) if self.pseudo is not None else None

    def parent_merge_module(self) -> nn.Module:
        """A module mapping sub-class logits to parent logits in the current state (for export:
        append it to the model). Before the first split only row ``offset_c`` is used."""
        return Merge(self.head_plan, self.options.merge, self.split)

    # -- presentation ----------------------------------------------------------------------
    def describe(self) -> str:
        return self.plan.format_table(self.class_names)

    def plan_record(self) -> dict:
        """What ``subclass_plan.json`` holds: the plan, its table and the options."""
        return {
            "method": self.name,
            "plan": self.plan.to_dict(),
            "table": self.plan.table(self.class_names),
            "options": asdict(self.options),
        }

    def run_files(self) -> dict[str, dict]:
        return {"subclass_plan.json": self.plan_record()}

    # -- checkpoints -----------------------------------------------------------------------
    def rank_state_dict(self) -> dict:
        """This rank's kept training features (``feature_source="train"``), so a resumed run
        clusters exactly what the uninterrupted one would have."""
        return self.bank.state_dict()

    def load_rank_state_dict(self, state: dict) -> None:
        self.bank.load_state_dict(state)

    def state_dict(self) -> dict:
        return {
            "plan": self.plan.to_dict(),
            "split": bool(self.split),
            "rounds": int(self.rounds),
            "last_cluster_epoch": int(self.last_cluster_epoch),
            "merge": str(self.options.merge),
            "pseudo": self.pseudo.clone() if self.pseudo is not None else torch.empty(0, dtype=torch.long),
            "centroids": self.centroids.clone() if self.centroids is not None else torch.empty(0),
            "sub_counts": self.sub_counts.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        plan = SubclassPlan.from_dict(state["plan"])
        if plan.k != self.plan.k or plan.counts != self.plan.counts:
            raise ValueError(
                f"dicc: the checkpoint's sub-class plan (counts {plan.counts}, k {plan.k}) differs from "
                f"this run's (counts {self.plan.counts}, k {self.plan.k})"
            )
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


__all__ = ["DICC"]

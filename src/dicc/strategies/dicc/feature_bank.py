"""DICC's ``feature_source="train"``: the penultimate features the training forward passes
computed anyway, kept per dataset index, instead of a clean feature pass before each clustering.

The engine hands every training batch's features to the strategy (``Strategy.observe_features``,
asked for with ``Strategy.wants_features``); :class:`FeatureBank` keeps them L2-normalised, row
``i`` = dataset index ``i``, stamped with the epoch it was seen in. Each index keeps the
features of the last epoch it was trained in. For a clustering the bank gathers, across ranks by
dataset index (``EpochContext.gather``), the rows of the epoch just trained first, then older
rows, then clean features (``EpochContext.extract_features(indices)``) for indices no rank has
trained on yet (``drop_last`` leftovers of every epoch so far). The bank is saved per rank in the
checkpoint (``Strategy.rank_state_dict``), so a resumed run clusters what an uninterrupted one
would.
"""

from __future__ import annotations

import torch

from ..base import EpochContext


class FeatureBank:
    """Features ``[N, D]``, labels ``[N]`` and epoch stamps ``[N]`` (``-1``: never seen) of one rank."""

    def __init__(self) -> None:
        self.feats: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.epochs: torch.Tensor | None = None

    @property
    def empty(self) -> bool:
        return self.feats is None

    def ensure(self, n: int, dim: int, device: torch.device) -> None:
        """Rows for ``n`` samples of ``dim`` features on ``device`` (kept rows move along)."""
        device = torch.device(device)
        if self.feats is not None and self.feats.shape == (n, dim):
            if self.feats.device != device:
                self.feats, self.labels, self.epochs = (t.to(device) for t in (self.feats, self.labels, self.epochs))
            return
        self.feats = torch.zeros(n, dim, device=device)
        self.labels = torch.zeros(n, dtype=torch.long, device=device)
        self.epochs = torch.full((n,), -1, dtype=torch.long, device=device)

    def clear(self) -> None:
        self.feats = self.labels = self.epochs = None

    @torch.no_grad()
    def keep(self, feats: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, epoch: int) -> None:
        dev = self.feats.device
        i = indices.to(dev).long()
        self.feats[i] = torch.nn.functional.normalize(feats.to(dev).float(), dim=1)
        self.labels[i] = targets.to(dev).long()
        self.epochs[i] = int(epoch)

    def _gather(self, ctx: EpochContext, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, labels and a found-mask ``[N]`` of the kept ``rows`` (a mask) of every rank."""
        n, dim = self.feats.shape
        idx = rows.nonzero().flatten()
        vals = torch.cat(
            [self.feats[idx], self.labels[idx, None].float(), torch.ones(len(idx), 1, device=self.feats.device)], 1
        )
        out = ctx.gather(vals, idx, n)
        return out[:, :dim], out[:, dim].long(), out[:, dim + 1] > 0

    def for_clustering(self, ctx: EpochContext) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """All ``N`` features for the clustering at the start of ``ctx.epoch``: those of the last
        epoch first, then older ones, then a clean pass for indices nobody has seen."""
        # rows of the epoch just trained are disjoint across ranks (every index is trained on by
        # one rank per epoch); older rows are only asked for where those left holes
        feats, labels, have = self._gather(ctx, self.epochs == ctx.epoch - 1)
        counts = {"train": int(have.sum()), "older": 0, "clean": 0}
        if not have.all():
            f2, l2, got = self._gather(ctx, (self.epochs >= 0) & ~have.to(self.feats.device))
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

    # -- checkpoints (per rank) ---------------------------------------------------------------
    def state_dict(self) -> dict:
        if self.feats is None:
            return {}
        return {
            "kept": self.feats.detach().cpu().clone(),
            "kept_label": self.labels.cpu().clone(),
            "kept_epoch": self.epochs.cpu().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state and "kept" in state:
            self.feats = state["kept"].float().clone()
            self.labels = state["kept_label"].long().clone()
            self.epochs = state["kept_epoch"].long().clone()


__all__ = ["FeatureBank"]

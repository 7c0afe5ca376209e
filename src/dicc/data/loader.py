"""Batches of ``(uint8 images, labels, dataset indices)`` for any :class:`FERDataset`.

In-memory datasets are sliced directly (no worker processes, no per-image Python); streamed
datasets decode each batch in ``workers`` background processes via ``torch.utils.data``.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .base import FERDataset


class _BatchDataset(Dataset):
    def __init__(self, ds: FERDataset, batches: list[torch.Tensor]) -> None:
        self.ds, self.batches = ds, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        idx = self.batches[i]
        return self.ds.get_batch(idx), self.ds.labels[idx], idx


def iterate_batches(ds: FERDataset, indices: torch.Tensor, batch_size: int, *, drop_last: bool = False,
                    workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(images uint8 [B,C,H,W], labels [B], indices [B])`` in the order of ``indices``."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    batches = list(indices.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size and len(batches) > 1:
        batches = batches[:-1]
    if ds.images is not None or workers <= 0:
        for idx in batches:
            yield ds.get_batch(idx), ds.labels[idx], idx
        return
    loader = DataLoader(_BatchDataset(ds, batches), batch_size=None, shuffle=False, num_workers=workers,
                        persistent_workers=False)
    yield from loader

"""Batches of ``(uint8 images, labels, dataset indices)`` for any :class:`FERDataset`.

In-memory datasets are sliced directly (no worker processes, no per-image Python); streamed
datasets decode each batch in ``workers`` background processes via ``torch.utils.data``.

A file that cannot be decoded raises the same one-line ``ValueError("<path>: cannot decode
image: ...")`` with or without workers: a worker returns the message instead of raising (a
worker's exception would reach the user wrapped in DataLoader's multi-line traceback), and the
main process raises it.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .base import FERDataset


class _Failed:
    """What a worker returns for a batch it could not decode (picklable)."""

    def __init__(self, message: str) -> None:
        self.message = message


class _BatchDataset(Dataset):
    def __init__(self, ds: FERDataset, batches: list[torch.Tensor]) -> None:
        self.ds, self.batches = ds, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        idx = self.batches[i]
        try:
            return self.ds.get_batch(idx), self.ds.labels[idx], idx
        except (ValueError, OSError) as e:  # a corrupt or missing file, named in the message
            return _Failed(str(e))


def iterate_batches(
    ds: FERDataset, indices: torch.Tensor, batch_size: int, *, drop_last: bool = False, workers: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(images uint8 [B,C,H,W], labels [B], indices [B])`` in the order of ``indices``."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    batches = list(indices.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size and len(batches) > 1:
        batches = batches[:-1]
    if ds.images is not None or workers <= 0:
        for idx in batches:
            yield ds.get_batch(idx), ds.labels[idx], idx
        return
    loader = DataLoader(
        _BatchDataset(ds, batches), batch_size=None, shuffle=False, num_workers=workers, persistent_workers=False
    )
    for item in loader:
        if isinstance(item, _Failed):
            raise ValueError(item.message)
        yield item

"""The one dataset interface every reader returns.

A :class:`FERDataset` holds integer labels in the canonical emotion order and can produce a
batch of uint8 images ``[B, C, H, W]`` for any list of indices. Small images live in memory
as one uint8 tensor (``images``); large datasets keep file paths and decode on demand
(``paths``), so both go through the same loader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .classes import EMOTIONS


@dataclass
class FERDataset:
    labels: torch.Tensor                      # int64 [N], canonical class indices
    images: torch.Tensor | None = None        # uint8 [N, C, H, W] when held in memory
    paths: list[str] | None = None            # file paths when streaming from disk
    image_size: int = 48
    channels: int = 1
    class_names: tuple[str, ...] = EMOTIONS
    source: str = ""                          # where it came from (for messages)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. hidden "style" labels

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if (self.images is None) == (self.paths is None):
            raise ValueError("FERDataset needs exactly one of images or paths")
        n = len(self.images) if self.images is not None else len(self.paths)
        if n != len(self.labels):
            raise ValueError(f"{self.source}: {n} images but {len(self.labels)} labels")
        if self.images is not None:
            if self.images.dtype != torch.uint8 or self.images.ndim != 4:
                raise ValueError(f"{self.source}: images must be uint8 [N, C, H, W]")
            self.channels = self.images.shape[1]
            self.image_size = self.images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> list[int]:
        """Number of samples per class, in canonical order (zeros included)."""
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def get_batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 images ``[B, C, H, W]`` for the given dataset indices."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.images is not None:
            return self.images[idx]
        from .decode import decode_image

        return torch.stack(
            [decode_image(self.paths[i], self.image_size, self.channels) for i in idx.tolist()]
        )

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "FERDataset":
        """A new dataset with only the given indices (order kept)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return FERDataset(
            labels=self.labels[idx],
            images=self.images[idx] if self.images is not None else None,
            paths=[self.paths[i] for i in idx.tolist()] if self.paths is not None else None,
            image_size=self.image_size,
            channels=self.channels,
            class_names=self.class_names,
            source=self.source,
            extras={k: v[idx] for k, v in self.extras.items()},
        )

    def materialize(self) -> "FERDataset":
        """Decode a streaming dataset into memory (used for small images)."""
        if self.images is not None:
            return self
        return FERDataset(
            labels=self.labels, images=self.get_batch(range(len(self))), image_size=self.image_size,
            channels=self.channels, class_names=self.class_names, source=self.source,
            extras=self.extras,
        )



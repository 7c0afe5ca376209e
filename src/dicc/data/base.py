"""The one dataset interface every reader returns.

A :class:`FERDataset` holds integer labels in its label space (``class_names``, see
:mod:`dicc.data.classes`) and can produce a batch of uint8 images ``[B, C, H, W]`` for any list
of indices. Small images live in memory as one uint8 tensor (``images``); large datasets keep
file paths and decode on demand (``paths``), so both go through the same loader.

Every sample has an identity (``ids``): its file's absolute path, ``<csv file>:<line>`` for a
CSV row, ``synthetic:<seed>:<split>:<i>`` for the built-in data. Two splits that share an
identity share an image, whatever its pixels (FER2013 has genuinely duplicated pictures in
different splits, which are different samples); :mod:`dicc.data.build` refuses runs whose
training or validation images are among the test images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .classes import EMOTIONS


@dataclass
class FERDataset:
    labels: torch.Tensor  # int64 [N], canonical class indices
    images: torch.Tensor | None = None  # uint8 [N, C, H, W] when held in memory
    paths: list[str] | None = None  # file paths when streaming from disk
    image_size: int = 48
    channels: int = 1
    class_names: tuple[str, ...] = EMOTIONS
    source: str = ""  # where it came from (for messages)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. "style", "soft_labels"
    ids: list[str] | None = None  # sample identities (default: paths, or source#i)
    dropped: dict[str, int] = field(default_factory=dict)  # samples the reader left out, by reason

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        self.class_names = tuple(self.class_names)
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
        if self.ids is None:
            self.ids = list(self.paths) if self.paths is not None else [f"{self.source}#{i}" for i in range(n)]
        elif len(self.ids) != n:
            raise ValueError(f"{self.source}: {n} images but {len(self.ids)} sample ids")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise ValueError(
                f"{self.source}: labels must be in 0..{len(self.class_names) - 1} ({', '.join(self.class_names)})"
            )
        for k, v in self.extras.items():
            if len(v) != n:
                raise ValueError(f"{self.source}: extras[{k!r}] has {len(v)} rows for {n} images")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> list[int]:
        """Number of samples per class, in label-space order (zeros included)."""
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def missing_classes(self) -> list[str]:
        """Names of the label-space classes with no sample in this dataset."""
        return [n for n, c in zip(self.class_names, self.class_counts()) if c == 0]

    def get_batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 images ``[B, C, H, W]`` for the given dataset indices."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.images is not None:
            return self.images[idx]
        from .decode import decode_image

        return torch.stack([decode_image(self.paths[i], self.image_size, self.channels) for i in idx.tolist()])

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
            ids=[self.ids[i] for i in idx.tolist()],
            dropped=dict(self.dropped),
        )

"""Helpers shared by the readers: scanning class folders, resolving split names, and turning
a list of (image file, label) into a :class:`~dicc.data.base.FERDataset`."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..base import FERDataset
from ..classes import EMOTIONS, class_index, find_class
from ..decode import IMAGE_EXTENSIONS, is_image_file
from .registry import IN_MEMORY_MAX_SIZE, Format, Option, SplitLabels

_IGNORED_DIRS = {"__MACOSX"}


@dataclass
class FileList:
    """What a file-based reader finds for one split: image paths, label-space labels, the
    samples it dropped (by reason) and optional per-sample extra tensors."""

    paths: list[str]
    labels: list[int]
    dropped: dict[str, int] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def subdirs(folder: Path) -> list[str]:
    """Names of the visible sub-folders of ``folder``, sorted."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith(".") and e.name not in _IGNORED_DIRS)


def scan_images(folder: Path) -> list[str]:
    """Image files anywhere under ``folder``, sorted by path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _IGNORED_DIRS]
        found.extend(os.path.join(dirpath, f) for f in filenames if is_image_file(f))
    return sorted(found)


def is_class_name(name: str) -> bool:
    """True when ``name`` is a known emotion or alias (in any label space)."""
    return find_class(name, (*EMOTIONS, "contempt")) is not None


def class_folders(folder: Path, classes: tuple[str, ...]) -> FileList:
    """``folder/<class>/**/image`` ordered by class (label-space order), then path.

    A folder whose class is not in ``classes``, two folders of one class and an empty class
    folder are errors naming the folder; classes without a folder are simply absent."""
    per_class: dict[int, tuple[Path, list[str]]] = {}
    for name in subdirs(folder):
        d = folder / name
        label = class_index(name, where=f"class folder {d}", classes=classes)
        if label in per_class:
            raise ValueError(
                f"{d} and {per_class[label][0]} are both class {classes[label]!r}; merge or rename one of them"
            )
        files = scan_images(d)
        if not files:
            raise ValueError(f"{d}: class folder is empty (no {'/'.join(IMAGE_EXTENSIONS)} files)")
        per_class[label] = (d, files)
    if not per_class:
        raise ValueError(
            f"{folder}: no class folders found (expected sub-folders named {', '.join(classes)} or aliases)"
        )
    paths, labels = [], []
    for label in sorted(per_class):
        files = per_class[label][1]
        paths.extend(files)
        labels.extend([label] * len(files))
    return FileList(paths, labels)


def map_labels(
    source: list[int], names: tuple[str, ...], classes: tuple[str, ...], dropped: Counter | None = None
) -> tuple[list[int], list[int], Counter]:
    """Map a dataset's labels (``source[i]`` indexes ``names``) into ``classes``.

    Returns ``(kept positions, their label-space labels, dropped counts by class name)``."""
    to_space = [find_class(n, classes) for n in names]
    dropped = Counter() if dropped is None else dropped
    keep, labels = [], []
    for i, s in enumerate(source):
        t = to_space[s]
        if t is None:
            dropped[names[s]] += 1
        else:
            keep.append(i)
            labels.append(t)
    return keep, labels, dropped


def resolve_split_name(split: str, valid: list[str], aliases: dict[str, str], where: str) -> str:
    """Map a requested split name onto one of ``valid`` (case-insensitive, with aliases)."""
    by_lower = {v.lower(): v for v in valid}
    key = split.strip().lower()
    if key in by_lower:
        return by_lower[key]
    target = aliases.get(key)
    if target is not None and target.lower() in by_lower:
        return by_lower[target.lower()]
    alias_text = [a for a, t in aliases.items() if t.lower() in by_lower and a not in by_lower]
    extra = f" (aliases: {', '.join(alias_text)})" if alias_text else ""
    raise ValueError(f"{where}: unknown split {split!r}; valid splits are {', '.join(valid) or '(none)'}{extra}")


def labels_tensor(labels: list[int]) -> torch.Tensor:
    return torch.tensor(labels, dtype=torch.long)


def variant_tag(classes: tuple[str, ...], options: dict, defaults: dict) -> str:
    """A short tag of a non-default label space or options (for cache file names)."""
    if tuple(classes) == EMOTIONS and options == defaults:
        return ""
    text = "|".join(classes) + "|" + repr(sorted(options.items()))
    return "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def files_format(
    name: str,
    description: str,
    detect: Callable[[Path], bool],
    splits: Callable[[Path], list[str]],
    aliases: dict[str, str],
    files: Callable[[Path, str, tuple, dict], FileList],
    options: dict[str, Option] | None = None,
    label_files: Callable[[Path, str, tuple, dict], FileList] | None = None,
) -> Format:
    """A :class:`Format` for layouts that are a list of (image file, label).

    Small images are decoded once into memory through the on-disk cache; larger ones stream
    from their paths. Sample identities are the files' absolute paths. ``label_files``, when
    given, is a cheaper ``files`` for counting (its paths are not used)."""
    specs = dict(options or {})
    defaults = {k: o.default for k, o in specs.items()}

    def labels(root: Path, split: str, classes: tuple, opts: dict) -> SplitLabels:
        fl = (label_files or files)(root, split, classes, opts)
        return SplitLabels(labels_tensor(fl.labels), dict(fl.dropped))

    def load(
        root: Path, split: str, *, classes: tuple, options: dict, image_size: int, channels: int, cache_dir, in_memory
    ) -> FERDataset:
        fl = files(root, split, classes, options)
        source = f"{root}:{split}"
        labs = labels_tensor(fl.labels)
        common = dict(
            labels=labs,
            class_names=classes,
            source=source,
            extras=fl.extras,
            ids=[p if os.path.isabs(p) else os.path.abspath(p) for p in fl.paths],
            dropped=dict(fl.dropped),
        )
        if in_memory == "auto":
            in_memory = image_size <= IN_MEMORY_MAX_SIZE
        if not in_memory:
            return FERDataset(paths=fl.paths, image_size=image_size, channels=channels, **common)
        from ..cache import load_or_decode

        tag = variant_tag(classes, options, defaults)
        split_key = f"{name}-{split}{tag}"
        images = load_or_decode(
            fl.paths, labs, source=root, split=split_key, image_size=image_size, channels=channels, cache_dir=cache_dir
        )
        return FERDataset(images=images, **common)

    return Format(name, description, detect, splits, aliases, labels, load, specs)

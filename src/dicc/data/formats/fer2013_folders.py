"""``fer2013_folders``: the image-folder FER2013 download, ``train/<class>/Training_*.jpg``
and ``test/<class>/{PublicTest,PrivateTest}_*.jpg``.

Splits ``train``, ``test`` and, selected inside ``test/`` by file-name prefix, ``PublicTest``
and ``PrivateTest`` (aliases ``training``, ``testing``, ``public``, ``private``). No alias is a
validation split: ``PublicTest`` is part of ``test``, and a run refuses a validation set that
shares images with its test set.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from ..decode import is_image_file
from .common import FileList, class_folders, files_format, scan_images, subdirs
from .registry import register

_PREFIXES = ("Training_", "PublicTest_", "PrivateTest_")
_ALIASES = {
    "training": "train",
    "testing": "test",
    "public": "PublicTest",
    "publictest": "PublicTest",
    "private": "PrivateTest",
    "privatetest": "PrivateTest",
}


def _first_images(folder: Path, per_class: int = 3) -> list[str]:
    """A few image names from each class folder of ``folder`` (cheap peek)."""
    names = []
    for sub in subdirs(folder):
        with os.scandir(folder / sub) as it:
            images = (e.name for e in it if is_image_file(e.name))
            names.extend(itertools.islice(images, per_class))
    return names


def _detect(root: Path) -> bool:
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        return False
    names = _first_images(root / "train") + _first_images(root / "test")
    return any(n.startswith(_PREFIXES) for n in names)


def _splits(root: Path) -> list[str]:
    splits = [s for s in ("train", "test") if (root / s).is_dir()]
    if (root / "test").is_dir():
        names = {os.path.basename(p).split("_", 1)[0] for p in scan_images(root / "test")}
        splits += [s for s in ("PublicTest", "PrivateTest") if s in names]
    return splits


def _files(root: Path, split: str, classes: tuple, options: dict) -> FileList:
    if split in ("train", "test"):
        return class_folders(root / split, classes)
    fl = class_folders(root / "test", classes)
    keep = [i for i, p in enumerate(fl.paths) if os.path.basename(p).startswith(split + "_")]
    if not keep:
        raise ValueError(
            f"{root / 'test'}: split {split!r} selects no files (no file name starts with {split + '_'!r})"
        )
    return FileList([fl.paths[i] for i in keep], [fl.labels[i] for i in keep])


FORMAT = register(
    files_format(
        "fer2013_folders",
        "FER2013 image folders: train/<class>/Training_*, test/<class>/PublicTest_*",
        _detect,
        _splits,
        _ALIASES,
        _files,
    ),
    rank=50,
)

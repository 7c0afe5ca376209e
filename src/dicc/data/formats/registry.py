"""The format registry: what a dataset layout provides, the formats in detection order, and
format options (``"name:key=value,key=value"``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..base import FERDataset

#: ``in_memory="auto"`` decodes into memory up to this image size and streams above it.
IN_MEMORY_MAX_SIZE = 64


@dataclass(frozen=True)
class SplitLabels:
    """The labels of one split (label-space indices) and what the reader dropped, by reason
    (a class outside the label space, AffectNet's ``none``/``uncertain``/``non-face``, ...)."""

    labels: torch.Tensor
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Option:
    """One format option: its default, a function that checks and converts a value (a string
    when it comes from a format spec), and a line of help."""

    default: Any
    parse: Callable[[Any], Any]
    help: str


@dataclass(frozen=True)
class Format:
    """One dataset layout.

    ``detect(root)`` says whether ``root`` has this layout; ``splits(root)`` lists its split
    names; ``aliases`` maps lower-case alternative names onto them; ``labels(root, split,
    classes, options)`` returns the :class:`SplitLabels` without decoding any image;
    ``load(root, split, *, classes, options, image_size, channels, cache_dir, in_memory)``
    returns the :class:`FERDataset`. ``split`` is always one of ``splits(root)`` there, and
    ``options`` has every key of ``options`` (defaults filled in). ``quick_splits`` (optional)
    names the splits that can be resolved without reading the data (e.g. a CSV's Usage
    values, checked when the rows are read); ``split_aliases`` (optional) gives more aliases
    from the split names present (e.g. ``training`` for a ``train`` folder).
    """

    name: str
    description: str
    detect: Callable[[Path], bool]
    splits: Callable[[Path], list[str]]
    aliases: dict[str, str]
    labels: Callable[[Path, str, tuple, dict], SplitLabels]
    load: Callable[..., FERDataset]
    options: dict[str, Option] = field(default_factory=dict)
    quick_splits: tuple[str, ...] = ()
    split_aliases: Callable[[list[str]], dict[str, str]] | None = None


#: every registered format, in auto-detection order
FORMATS: dict[str, Format] = {}
_RANK: dict[str, int] = {}


def register(fmt: Format, rank: int) -> Format:
    """Add ``fmt`` to :data:`FORMATS`; auto-detection tries the formats by increasing
    ``rank`` (the more specific layouts first: a FERPlus folder also holds a FER2013 CSV, and
    almost anything with sub-folders looks like class folders)."""
    if fmt.name in FORMATS:
        raise ValueError(f"dataset format {fmt.name!r} is registered twice")
    _RANK[fmt.name] = rank
    items = sorted([*FORMATS.items(), (fmt.name, fmt)], key=lambda kv: _RANK[kv[0]])
    FORMATS.clear()
    FORMATS.update(items)
    return fmt


def parse_format_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"ferplus:mode=crossentropy,soft_labels=true"`` -> ``("ferplus", {"mode": ...})``."""
    name, _, rest = str(spec).partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"data.format: cannot read option {item!r} in {spec!r}; expected name:key=value,key=value")
        options[key.strip()] = value.strip()
    return name.strip(), options


def check_options(fmt: Format, given: dict | None) -> dict:
    """``given`` checked against ``fmt.options``, converted, defaults filled in."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(fmt.options))
    if unknown:
        valid = ", ".join(f"{k} ({o.help})" for k, o in fmt.options.items()) or "none"
        raise ValueError(f"data.format: unknown option {unknown[0]!r} for format {fmt.name!r}; valid options: {valid}")
    out = {}
    for key, opt in fmt.options.items():
        if key not in given:
            out[key] = opt.default
            continue
        try:
            out[key] = opt.parse(given[key])
        except (TypeError, ValueError) as e:
            raise ValueError(f"data.format: option {fmt.name}:{key}={given[key]!r}: {e}") from None
    return out


# ----------------------------------------------------------------------------- option parsers
def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key in ("1", "true", "yes", "on"):
        return True
    if key in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        key = str(value).strip().lower().replace("-", "_")
        if key not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return key

    return parse


def parse_fraction(value: Any) -> float:
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValueError("expected a number between 0 and 1")
    return v


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    return int(value)


def existing(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    return p

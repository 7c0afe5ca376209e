"""Label spaces, and the class-name aliases that map dataset labels and folder names into them.

A *label space* is the ordered tuple of class names a run trains and reports on; a dataset's
label ``i`` means ``class_names[i]``. Three kinds (``DataConfig.classes``):

* ``emotions7`` (the default, also ``None``): :data:`EMOTIONS`, FER2013's order: 0 angry,
  1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral;
* ``emotions8``: :data:`EMOTIONS8`, the same seven then ``contempt`` as index 7. AffectNet
  (0 neutral ... 6 anger, 7 contempt) and FERPlus (neutral ... fear, 7 contempt) both number
  contempt after the seven basic emotions, and CK+ adds it to them too, so the seven keep
  their FER2013 indices and a 7-class model's outputs are the first seven of an 8-class one;
* a list of names in the user's order (``[happy, sad, neutral]``, or ``"happy,sad,neutral"``).
  Known emotions and their aliases are stored under their canonical name (``Happiness`` ->
  ``happy``), other names (``pain``) as given, lower-cased.

Names are matched case-insensitively with aliases (``anger``, ``contemptuous``, ``3_happy``).
Readers of integer-labelled datasets (CSV, label lists) drop and count the samples whose class
is not in the label space; readers of class folders refuse a folder whose class is not in it.
"""

from __future__ import annotations

from typing import Any, Sequence

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
EMOTIONS8: tuple[str, ...] = EMOTIONS + ("contempt",)
LABEL_SPACES: dict[str, tuple[str, ...]] = {"emotions7": EMOTIONS, "emotions8": EMOTIONS8}

_ALIASES: dict[str, tuple[str, ...]] = {
    "angry": ("anger", "angry", "mad", "an"),
    "disgust": ("disgust", "disgusted", "disgusting", "di"),
    "fear": ("fear", "fearful", "afraid", "scared", "fe"),
    "happy": ("happy", "happiness", "joy", "happ", "ha"),
    "sad": ("sad", "sadness", "sa"),
    "surprise": ("surprise", "surprised", "su"),
    "neutral": ("neutral", "neutrality", "calm", "ne"),
    "contempt": ("contempt", "contemptuous", "contemptful"),
}
#: lower-case alias -> canonical class name
ALIASES: dict[str, str] = {a: c for c, names in _ALIASES.items() for a in names}


def _key(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    return key.split("_", 1)[1] if key[:1].isdigit() and "_" in key else key  # "3_happy"


def canonical_name(name: str) -> str:
    """The canonical class name of ``name`` (an alias), or ``name`` lower-cased if unknown."""
    key = _key(name)
    return ALIASES.get(key, key)


def resolve_classes(spec: Any = None) -> tuple[str, ...]:
    """The label space of a ``DataConfig.classes`` value (see the module docstring)."""
    if spec is None:
        return EMOTIONS
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in LABEL_SPACES:
            return LABEL_SPACES[key]
        if "," not in spec:
            raise ValueError(
                f"data.classes: unknown label space {spec!r}; expected "
                f"{', '.join(LABEL_SPACES)} or a list of class names"
            )
        spec = [s for s in spec.split(",") if s.strip()]
    if isinstance(spec, (tuple, list)) and all(isinstance(s, str) for s in spec):
        names = tuple(canonical_name(s) for s in spec)
        if not names or any(not n for n in names):
            raise ValueError(f"data.classes: expected at least one non-empty class name, got {list(spec)!r}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"data.classes: class {dup[0]!r} is listed twice in {list(spec)!r}")
        return names
    raise ValueError(f"data.classes: expected {', '.join(LABEL_SPACES)} or a list of class names, got {spec!r}")


def class_index(name: str, *, where: str = "", classes: Sequence[str] = EMOTIONS) -> int:
    """Index of a class/folder name (case-insensitive, aliases allowed) in the label space
    ``classes``.

    Raises ``ValueError`` naming ``where`` (e.g. the folder) and the valid names otherwise.
    """
    idx = find_class(name, classes)
    if idx is not None:
        return idx
    place = f" ({where})" if where else ""
    canon = canonical_name(name)
    if canon in ALIASES.values():
        hint = (
            " (data.classes=emotions8 keeps it)"
            if canon == "contempt" and "contempt" not in classes
            else " (add it to data.classes, or move it out of the dataset)"
        )
        raise ValueError(
            f"class {name!r}{place} is not in the label space; valid classes are {', '.join(classes)}{hint}"
        )
    aliases = sorted(a for a, c in ALIASES.items() if c in classes and len(a) > 2 and a != c)
    raise ValueError(
        f"unknown class name {name!r}{place}; expected one of {', '.join(classes)}"
        + (f" or an alias ({', '.join(aliases)})" if aliases else "")
    )


def find_class(name: str, classes: Sequence[str] = EMOTIONS) -> int | None:
    """Index of ``name`` in ``classes`` (aliases resolved), or None."""
    canon = canonical_name(name)
    try:
        return tuple(classes).index(canon)
    except ValueError:
        return None


def label_map(source_names: Sequence[str], classes: Sequence[str]) -> list[int | None]:
    """For a dataset whose label ``j`` is ``source_names[j]``: the label-space index of each
    (None where the class is not in ``classes``)."""
    return [find_class(n, classes) for n in source_names]


__all__ = [
    "ALIASES",
    "EMOTIONS",
    "EMOTIONS8",
    "LABEL_SPACES",
    "canonical_name",
    "class_index",
    "find_class",
    "label_map",
    "resolve_classes",
]

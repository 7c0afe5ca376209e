"""The canonical 7-emotion label space and the folder-name aliases that map onto it.

The order is FER2013's label order: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise,
6 neutral. Every reader maps its dataset's labels onto these indices.
"""
from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

_ALIASES: dict[str, tuple[str, ...]] = {
    "angry": ("anger", "angry", "mad", "an"),
    "disgust": ("disgust", "disgusted", "disgusting", "di"),
    "fear": ("fear", "fearful", "afraid", "scared", "fe"),
    "happy": ("happy", "happiness", "joy", "happ", "ha"),
    "sad": ("sad", "sadness", "sa"),
    "surprise": ("surprise", "surprised", "su"),
    "neutral": ("neutral", "neutrality", "calm", "ne"),
}
ALIASES: dict[str, int] = {a: EMOTIONS.index(c) for c, names in _ALIASES.items() for a in names}


def class_index(name: str, *, where: str = "") -> int:
    """Map a class/folder name (case-insensitive, aliases allowed) to its canonical index.

    Raises ``ValueError`` naming ``where`` (e.g. the folder) and the accepted names otherwise.
    """
    key = name.strip().lower().replace("-", "_")
    key = key.split("_", 1)[1] if key[:1].isdigit() and "_" in key else key  # "3_happy"
    if key in ALIASES:
        return ALIASES[key]
    place = f" ({where})" if where else ""
    raise ValueError(
        f"unknown class name {name!r}{place}; expected one of {', '.join(EMOTIONS)} "
        f"or an alias ({', '.join(sorted(a for a in ALIASES if len(a) > 2))})"
    )

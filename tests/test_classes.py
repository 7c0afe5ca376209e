"""Label spaces: the seven emotions, the eight with contempt, a user's list; names and aliases."""

import pytest

from dicc.data.classes import EMOTIONS, EMOTIONS8, class_index, resolve_classes


def test_label_spaces():
    assert resolve_classes(None) == resolve_classes("emotions7") == EMOTIONS
    assert resolve_classes("Emotions8") == EMOTIONS8 and EMOTIONS8[:7] == EMOTIONS and EMOTIONS8[7] == "contempt"
    assert resolve_classes(["Happiness", "anger", "pain"]) == ("happy", "angry", "pain")  # user's order
    assert resolve_classes("sad, neutral") == ("sad", "neutral")
    with pytest.raises(ValueError, match="data.classes: unknown label space 'emotions9'"):
        resolve_classes("emotions9")
    with pytest.raises(ValueError, match="'happy' is listed twice"):
        resolve_classes(["happy", "joy"])
    with pytest.raises(ValueError, match="data.classes"):
        resolve_classes(7)


def test_names_map_into_the_label_space():
    assert class_index("Contemptuous", classes=EMOTIONS8) == 7
    assert class_index("3_happy") == 3 and class_index("Sadness", classes=("happy", "sad")) == 1
    assert class_index("PAIN", classes=("happy", "pain")) == 1
    with pytest.raises(
        ValueError,
        match=r"class 'contempt' \(class folder x\) is not in the label space; valid "
        r"classes are angry, .*, neutral \(data.classes=emotions8 keeps it\)",
    ):
        class_index("contempt", where="class folder x")
    with pytest.raises(ValueError, match=r"unknown class name 'misc'; expected one of happy, sad or an alias"):
        class_index("misc", classes=("happy", "sad"))

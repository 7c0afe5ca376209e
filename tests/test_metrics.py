import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dicc.metrics import confusion_matrix, metrics_from_confusion, save_confusion_png

NAMES = ["a", "b", "c", "d"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 4, 300))
    cm = confusion_matrix(torch.tensor(y), torch.tensor(p), 4)
    assert cm.numpy().tolist() == skm.confusion_matrix(y, p, labels=range(4)).tolist()
    m = metrics_from_confusion(cm, NAMES)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert m["mean_class_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    rec = skm.recall_score(y, p, average=None)
    prec = skm.precision_score(y, p, average=None)
    for i, n in enumerate(NAMES):
        assert m["per_class"][n]["recall"] == pytest.approx(rec[i])
        assert m["per_class"][n]["precision"] == pytest.approx(prec[i])
        assert m["per_class"][n]["support"] == int((y == i).sum())


def test_absent_class_and_never_predicted_class():
    # class 3 never occurs; class 2 is never predicted -> precision 0 without NaN
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 0, 1])
    m = metrics_from_confusion(confusion_matrix(torch.tensor(y), torch.tensor(p), 4), NAMES)
    assert m["mean_class_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro", labels=[0, 1, 2], zero_division=0))
    assert m["per_class"]["d"]["support"] == 0
    assert m["per_class"]["c"]["precision"] == 0.0


def test_confusion_png(tmp_path):
    cm = [[5, 1], [2, 7]]
    out = save_confusion_png(cm, ["x", "y"], tmp_path / "cm.png", title="t")
    from PIL import Image

    assert Image.open(out).size[0] > 100


# -- from the logits: calibration, top-2, shot groups --------------------------------
def test_ece_on_a_tiny_case_by_hand():
    from dicc.metrics import ECE_BINS, calibration, metrics_from_logits

    probs = torch.tensor(
        [
            [0.90, 0.05, 0.05],  # label 0: confidence 0.90, right  -> bin 13 = (13/15, 14/15]
            [0.90, 0.05, 0.05],  # label 1: confidence 0.90, wrong  -> bin 13
            [0.20, 0.50, 0.30],  # label 1: confidence 0.50, right  -> bin 7 = (7/15, 8/15]
            [0.65, 0.25, 0.10],  # label 2: confidence 0.65, wrong  -> bin 9 = (9/15, 10/15]
        ]
    )
    labels = torch.tensor([0, 1, 1, 2])
    m = metrics_from_logits(probs.log(), labels, ["a", "b", "c"])
    # sum_b |B_b|/n |acc - conf| = 2/4 |0.5 - 0.9| + 1/4 |1 - 0.5| + 1/4 |0 - 0.65|
    assert m["ece"] == pytest.approx(2 / 4 * 0.4 + 1 / 4 * 0.5 + 1 / 4 * 0.65, abs=1e-6)
    cal = m["calibration"]
    assert cal["bins"] == ECE_BINS == 15
    assert [b for b, c in enumerate(cal["count"]) if c] == [7, 9, 13]
    assert cal["count"][13] == 2 and cal["accuracy"][13] == 0.5 and cal["confidence"][13] == pytest.approx(0.9)
    assert cal["accuracy"][0] is None and cal["confidence"][0] is None  # empty bins
    # bins are (lo, hi]: a confidence of exactly 1 is in the last bin; perfectly calibrated -> 0
    edge = calibration(torch.tensor([1.0, 1.0]), torch.tensor([True, True]))
    assert edge["count"][14] == 2 and edge["ece"] == 0.0
    assert m["accuracy"] == 0.5 and m["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [1, 0, 0]]


def test_top2_accuracy_by_hand():
    from dicc.metrics import metrics_from_logits, topk_accuracy

    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 3.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    labels = torch.tensor([0, 1, 0, 2])  # top-1 right, in the top 2, not in the top 2, in the top 2
    assert topk_accuracy(logits, labels, 1) == 0.25
    assert topk_accuracy(logits, labels, 2) == 0.75
    assert metrics_from_logits(logits, labels, NAMES)["top2_accuracy"] == 0.75
    assert topk_accuracy(logits[:, :1], labels * 0, 2) == 1.0  # fewer classes than k: every class counts


def test_shot_groups_on_fer2013_lt_counts():
    from dicc.metrics import DEFAULT_SHOT_THRESHOLDS, metrics_from_logits, shot_groups

    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    counts = [387, 43, 1077, 4300, 1796, 139, 2997]  # FER2013-LT IF=100 in label order
    assert tuple(DEFAULT_SHOT_THRESHOLDS) == (1500, 200)
    assert shot_groups(counts) == {"many": [3, 4, 6], "medium": [0, 2], "few": [1, 5]}
    assert shot_groups(counts, [100, 20]) == {"many": [0, 2, 3, 4, 5, 6], "medium": [1], "few": []}
    assert shot_groups([100, 20, 21, 101], [100, 20]) == {"many": [3], "medium": [0, 1, 2], "few": []}
    # recalls by hand: every class has 2 test samples; class c is right on both for c in {3, 0},
    # on one for c in {4, 1}, on none for the others
    labels = torch.arange(7).repeat_interleave(2)
    right = {3: 2, 0: 2, 4: 1, 1: 1}
    preds = torch.tensor([c if i < right.get(c, 0) else (c + 1) % 7 for c in range(7) for i in range(2)])
    logits = torch.nn.functional.one_hot(preds, 7).float() * 5
    m = metrics_from_logits(logits, labels, names, train_counts=counts)
    assert m["shot_groups"] == {
        "many": ["happy", "sad", "neutral"],
        "medium": ["angry", "fear"],
        "few": ["disgust", "surprise"],
    }
    assert m["many_shot_accuracy"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert m["medium_shot_accuracy"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["few_shot_accuracy"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["shot_thresholds"] == [1500, 200]
    # a group with no sample in the split is None, and the metrics without counts have no groups
    keep = (labels != 1) & (labels != 5)  # no disgust, no surprise: the few-shot classes
    m = metrics_from_logits(logits[keep], labels[keep], names, train_counts=counts)
    assert m["few_shot_accuracy"] is None
    assert "shot_groups" not in metrics_from_logits(logits, labels, names)


def test_logit_metrics_agree_with_the_confusion_matrix_and_print(tmp_path):
    from dicc.metrics import format_metrics, metrics_from_logits, save_reliability_png

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(300, 4, generator=g), torch.randint(0, 4, (300,), generator=g)
    m = metrics_from_logits(logits, labels, NAMES, train_counts=[500, 300, 100, 10], shot_thresholds=[400, 50])
    ref = metrics_from_confusion(confusion_matrix(labels, logits.argmax(1), 4), NAMES)
    for k in ref:
        assert m[k] == ref[k], k
    text = format_metrics(m)
    assert "top-2 accuracy" in text and "ECE" in text and "few-shot" in text and "many > 400" in text
    out = save_reliability_png(m["calibration"], tmp_path / "rel.png", title="t", ece=m["ece"])
    from PIL import Image

    assert Image.open(out).size[0] > 100


def test_class_absent_from_the_split_is_named_in_the_output(tmp_path, capsys):
    from dicc.metrics import format_metrics, metrics_from_confusion

    cm = torch.zeros(3, 3, dtype=torch.long)
    cm[0, 0], cm[1, 1] = 5, 3
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["absent_classes"] == ["c"]
    assert "not in this split: c" in format_metrics(m)

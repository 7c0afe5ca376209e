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

"""The public API with a user's own Dataset and nn.Module: training, DICC's head split
on the user's head, the returned model's metrics against dicc.evaluate, the files of a run, bad
input before training, and the README's example run as written."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import dicc
from dicc.data.synthetic import make_synthetic

README = Path(__file__).resolve().parent.parent / "README.md"


class Faces(Dataset):
    """A user's dataset: float images in [0, 1], int labels (the built-in faces as stand-in)."""

    def __init__(self, split, counts, seed=0):
        ds = make_synthetic(split=split, counts=counts, seed=seed)
        self.x, self.y = ds.images.float() / 255.0, ds.labels
        self.classes = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class Net(nn.Module):
    """A user's network: convolutions, then a final nn.Linear called classifier."""

    def __init__(self, classes=7):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(4),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(16, classes)

    def forward(self, x):
        return self.classifier(self.body(x))


COUNTS = [24, 8, 24, 64, 32, 16, 48]


@pytest.fixture(scope="module")
def data():
    return Faces("train", COUNTS), Faces("val", [10] * 7), Faces("test", [10] * 7, seed=1)


@pytest.mark.parametrize("method", ["ce", "dicc"])
def test_fit_with_a_user_dataset_and_module(data, tmp_path, method):
    train, val, test = data
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    options = {"warmup_epochs": 1, "n_init": 1} if method == "dicc" else None
    res = dicc.fit(
        train=train,
        val=val,
        test=test,
        model=net,
        method=method,
        method_options=options,
        epochs=2,
        out=str(tmp_path / method),
        **{"train.batch_size": 32, "train.progress": False, "optim.lr": 0.05},
    )
    assert isinstance(res.model, nn.Module) and not res.model.training
    # a copy of the user's module was trained, behind the features + head seam; theirs is as it was
    assert isinstance(res.model.body.module, Net) and res.model.body.module is not net
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert isinstance(net.classifier, nn.Linear) and net.classifier.out_features == 7
    assert net(test.x[:3]).shape == (3, 7)
    if method == "dicc":
        assert res.model.head.out_features == res.strategy.num_outputs > 7  # the user's head, resized
        recs = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in recs if r.get("event") == "recluster"] == [2]
    again = dicc.evaluate(res, test)
    assert again["confusion_matrix"] == res.final["confusion_matrix"]
    assert again["mean_class_accuracy"] == res.final["mean_class_accuracy"]
    for name in ("curves.png", "metrics.csv", "final.json", "config.yaml", "checkpoints/best.pt"):
        assert (res.run_dir / name).is_file(), name
    rows = (res.run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 3
    assert res.model.training is False and list(res.final["per_class"]) == train.classes


@pytest.mark.parametrize("method", ["ce", "dicc"])
def test_predict_and_predict_proba_are_in_the_label_space(data, tmp_path, method):
    """For CE and DICC (sub-class head): one probability column per class, rows summing to 1,
    equal to the softmax of the merged parent logits computed by hand; predict is their argmax
    and scores exactly what dicc.evaluate scores; every image form dicc.fit takes gives the same."""
    train, val, test = data
    torch.manual_seed(0)
    options = {"warmup_epochs": 1, "n_init": 1} if method == "dicc" else None
    res = dicc.fit(
        train=train,
        val=val,
        test=test,
        model=Net(),
        method=method,
        method_options=options,
        epochs=2,
        out=str(tmp_path / method),
        **{"train.batch_size": 32, "train.progress": False},
    )
    x = torch.stack([test[i][0] for i in range(len(test))])  # floats in [0, 1], [N, 1, 48, 48]
    y = torch.tensor([test[i][1] for i in range(len(test))])
    proba = res.predict_proba(x)
    assert proba.shape == (len(test), 7) and res.class_names == train.classes
    assert torch.allclose(proba.sum(1), torch.ones(len(test)), atol=1e-5)
    mean, std = res.normalization
    u8 = (x * 255).round().to(torch.uint8)
    with torch.no_grad():
        z = res.model((u8.float() / 255 - mean) / std)
    if method == "dicc":
        assert z.shape[1] == res.strategy.num_outputs > 7  # the model itself gives sub-class logits
    assert torch.allclose(proba, res.strategy.parent_logits(z).softmax(1), atol=1e-5)
    pred = res.predict(x)
    assert torch.equal(pred, proba.argmax(1))
    cm = torch.zeros(7, 7, dtype=torch.long)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    assert cm.tolist() == dicc.evaluate(res, test)["confusion_matrix"] == res.final["confusion_matrix"]
    from PIL import Image

    gray = u8[:, 0]  # [N, 48, 48]
    forms = (u8, gray, gray.numpy(), u8.permute(0, 2, 3, 1).numpy(), [Image.fromarray(a.numpy()) for a in gray])
    for form in forms:
        assert torch.equal(res.predict(form), pred)
    assert torch.equal(res.predict(Image.fromarray(gray[0].numpy())), pred[:1])
    with pytest.raises(ValueError, match=r"images: shape \(1, 40, 40\), but the model was trained on \(1, 48, 48\)"):
        res.predict(gray[:, :40, :40])


def test_evaluate_leaves_the_model_in_its_mode(data):
    model = Net()
    model.train()
    m = dicc.evaluate(model, data[2])
    assert model.training and 0 <= m["accuracy"] <= 1 and m["num_samples"] == 70


def test_tensors_as_data_and_holdout_without_val(tmp_path):
    ds = make_synthetic(split="train", counts=COUNTS)
    res = dicc.fit(
        train=(ds.images, ds.labels),
        test=(ds.images[:50], ds.labels[:50]),
        epochs=1,
        out=str(tmp_path / "t"),
        **{"model.width": 4, "train.progress": False},
    )
    assert res.final["num_samples"] == 50 and res.best_val is not None


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (lambda d: [(torch.zeros(1, 8, 8), 0), (torch.zeros(1, 9, 9), 1)], "train[1]: image of shape (1, 9, 9)"),
        (
            lambda d: [(torch.zeros(1, 8, 8), 0), (torch.zeros(1, 8, 8), 9)],
            "train[1]: label 9 is outside the class list",
        ),
        (lambda d: [(torch.zeros(5, 8, 8), 0)], "train[0]: expected an image of shape [C, H, W]"),
    ],
)
def test_bad_user_data_fails_before_training(tmp_path, bad, fragment):
    with pytest.raises(ValueError) as err:
        dicc.fit(train=bad(None), model=Net(), class_names=[f"c{i}" for i in range(7)], out=str(tmp_path / "x"))
    assert fragment in str(err.value) and len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "labels, names, fragment",
    [
        ([0, 1, 7], None, "train[2]: label 7 is outside the class list (7 classes: angry, disgust"),
        ([0, 1, 2], ["a", "b"], "train[2]: label 2 is outside the class list (2 classes: a, b)"),
        ([0, 0.5, 1], None, "train[1]: the label must be an integer class index, got 0.5"),
        (torch.tensor([0.0, 1.5]), None, "train[1]: the label must be an integer class index, got tensor(1.5000)"),
        ([0, "3"], None, "train[1]: the label must be an integer class index, got '3'"),
    ],
)
def test_labels_outside_the_class_list_or_not_whole_numbers_are_one_line(tmp_path, labels, names, fragment):
    """Issue 23: an unnamed label 7 no longer widens the label space to class0..class7, and 0.5 is
    no longer read as class 0."""
    images = torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8)
    items = [(images[i], labels[i]) for i in range(len(labels))]
    with pytest.raises(ValueError) as err:
        dicc.fit(train=items, model=Net(), class_names=names, out=str(tmp_path / "x"))
    assert fragment in str(err.value) and len(str(err.value).splitlines()) == 1, str(err.value)
    assert not (tmp_path / "x").exists()


def test_whole_number_labels_of_any_type_are_class_indices():
    from dicc.api import as_dataset

    labels = (0, 1.0, torch.tensor(2), np.int64(3), torch.tensor([4]), np.array([5.0]), torch.tensor(6.0))
    ds = as_dataset([(torch.zeros(1, 8, 8), lab) for lab in labels])
    assert ds.labels.tolist() == [0, 1, 2, 3, 4, 5, 6] and ds.class_names[6] == "neutral"


def test_16_bit_images_given_to_fit_are_scaled_not_clipped():
    from PIL import Image

    from dicc.api import as_dataset

    ramp = np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16)
    want = np.rint(ramp / 257.0).astype(np.uint8)
    ds = as_dataset([(Image.fromarray(ramp), 0), (ramp, 1)])
    for i in range(2):
        assert np.array_equal(ds.images[i, 0].numpy(), want)


def test_evaluate_refuses_images_of_another_size_than_the_model_takes(data, tmp_path):
    res = dicc.fit(train=data[0], model=Net(), epochs=1, out=str(tmp_path / "run"), **{"train.progress": False})
    small = (torch.zeros(14, 1, 30, 30, dtype=torch.uint8), torch.arange(14) % 7)
    with pytest.raises(ValueError, match=r"images of 30x30 pixels with 1 channel\(s\), but the model takes 48x48"):
        dicc.evaluate(res, small)
    from dicc.checkpoint import load_checkpoint, model_from_checkpoint
    from helpers import make_checkpoint

    model, strategy = model_from_checkpoint(load_checkpoint(make_checkpoint(tmp_path / "m.pt")))
    with pytest.raises(ValueError, match="but the model takes 48x48"):
        dicc.evaluate(model, small, strategy=strategy)
    assert dicc.evaluate(model, (torch.zeros(14, 1, 48, 48, dtype=torch.uint8), small[1]))["num_samples"] == 14


def test_a_model_that_cannot_take_the_data_fails_before_training(data, tmp_path):
    class RGBOnly(Net):
        def __init__(self):
            super().__init__()
            self.body[0] = nn.Conv2d(3, 8, 3, padding=1)

    with pytest.raises(ValueError, match=r"model: RGBOnly does not take the training images \[B, 1, 48, 48\]"):
        dicc.fit(train=data[0], model=RGBOnly(), epochs=1, out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="no usable head"):
        dicc.fit(train=data[0], model=nn.Sequential(nn.Flatten()), epochs=1, out=str(tmp_path / "y"))


def test_methods_and_lazy_exports():
    assert "dicc" in dicc.methods() and "balanced_softmax" in dicc.methods()
    assert dicc.Recognizer.__name__ == "Recognizer"
    with pytest.raises(AttributeError):
        dicc.nope  # noqa: B018


def test_tensorboard_log(tmp_path):
    pytest.importorskip("tensorboard")
    res = dicc.fit(
        epochs=1,
        out=str(tmp_path / "tb"),
        **{"data.longtail": COUNTS, "model.width": 4, "train.log": "tensorboard", "train.progress": False},
    )
    assert list((res.run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_the_readme_api_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README has no api-example block"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)  # noqa: S102 - the documented example, as written
    assert scope["result"].final is not None


@pytest.mark.parametrize("kind", ["yaml", "Config", "dict"])
def test_fit_takes_a_config_file_object_or_dict_and_stays_quiet(data, tmp_path, kind, capsys):
    """The same run from a YAML file, a Config and a dict: the same numbers; the strategy sees
    the user's label counts; the library writes nothing to stdout or stderr (progress off)."""
    from dicc.config import load_config

    keys = ["train.epochs=1", "train.batch_size=32", "train.progress=false", "method.name=ce"]
    cfg = load_config(None, keys)
    if kind == "yaml":
        config = tmp_path / "run.yaml"
        from dicc.config import save_config

        save_config(cfg, config)
        config = str(config)
    else:
        config = cfg if kind == "Config" else cfg.to_dict()
    train, val, test = data
    torch.manual_seed(0)
    res = dicc.fit(config, train=train, val=val, test=test, model=Net(), out=str(tmp_path / kind))
    assert res.strategy.class_counts.tolist() == COUNTS
    assert res.final["train_class_counts"] == COUNTS
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    torch.manual_seed(0)
    ref = dicc.fit(cfg, train=train, val=val, test=test, model=Net(), out=str(tmp_path / f"{kind}-again"))
    assert ref.final["confusion_matrix"] == res.final["confusion_matrix"]


def test_posthoc_logit_adjustment_of_a_dicc_run_is_what_validation_and_test_see(data, tmp_path):
    """eval.logit_adjust on DICC: the run's test metrics are those of DICC's merged parent logits
    minus tau * log(prior), computed here by hand from the returned model."""
    train, val, test = data
    torch.manual_seed(0)
    res = dicc.fit(
        train=train,
        val=val,
        test=test,
        model=Net(),
        method="dicc",
        method_options={"warmup_epochs": 1, "n_init": 1},
        epochs=2,
        out=str(tmp_path / "la"),
        **{"train.batch_size": 32, "train.progress": False, "eval.logit_adjust": 1.0},
    )
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    mean, std = res.normalization
    with torch.no_grad():
        z = res.strategy.parent_logits(res.model((x - mean) / std))
    prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    pred = (z.double() - prior.log()).argmax(1)
    cm = torch.zeros(7, 7, dtype=torch.long)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    assert res.final["confusion_matrix"] == cm.tolist()
    assert res.strategy.num_outputs > 7
    # what the result predicts and what dicc.evaluate scores for it are the adjusted predictions too
    assert torch.equal(res.predict(x), pred) and dicc.evaluate(res, test)["confusion_matrix"] == cm.tolist()


def test_fit_takes_a_timm_model_as_it_comes(data, tmp_path):
    timm = pytest.importorskip("timm")
    train, val, test = data
    net = timm.create_model("test_vit", num_classes=7, in_chans=1, img_size=48)
    res = dicc.fit(
        train=train, val=val, test=test, model=net, epochs=1, out=str(tmp_path / "timm"), **{"train.progress": False}
    )
    assert res.model.body.module is not net and res.final["num_samples"] == 70
    assert dicc.evaluate(res, test)["confusion_matrix"] == res.final["confusion_matrix"]

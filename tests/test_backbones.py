"""timm and torchvision backbones with local weights on an eight-class dataset (contempt), a
user's own module, and the offline errors for ImageNet weights."""

import json

import pytest
import torch
from torch import nn

from data_helpers import class_tree
from dicc.cli import main
from dicc.models import adapt_model, create_model

EIGHT = {"anger": 6, "contempt": 6, "disgust": 6, "fear": 6, "happy": 6, "sadness": 6, "surprise": 6, "neutral": 6}


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    root = tmp_path_factory.mktemp("eight")
    class_tree(root / "train", EIGHT, seed=0, size=32)
    class_tree(root / "test", {k: 3 for k in EIGHT}, seed=1, size=32)
    return root


def test_data_info_lists_all_eight_classes(eight, capsys):
    assert main(["data", "info", str(eight), "--classes", "emotions8", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"]
    assert info["splits"]["train"]["counts"]["contempt"] == 6


def _train(eight, tmp_path, name, weights, capsys):
    out = tmp_path / name.replace("/", "_")
    code = main(
        [
            "train",
            "--data",
            str(eight),
            "--set",
            "data.classes=emotions8",
            "--set",
            "data.image_size=32",
            "--set",
            f"model.name={name}",
            "--set",
            f"model.pretrained={weights}",
            "--epochs",
            "1",
            "--set",
            "train.batch_size=16",
            "--set",
            "data.val_fraction=0.2",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    final = json.loads((out / "final.json").read_text())
    assert list(final["per_class"]) == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"]
    assert sum(final["per_class"][c]["support"] for c in final["per_class"]) == 24
    return out, final


def test_timm_resnet18_with_a_local_state_dict(eight, tmp_path, capsys):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("resnet18")
    weights = tmp_path / "timm_resnet18.pt"
    torch.save(ref.state_dict(), weights)
    model = create_model("timm/resnet18", 8, in_channels=1, pretrained=weights)
    for k, v in ref.state_dict().items():  # every tensor but the classifier came from the file
        if not k.startswith("fc."):
            assert torch.equal(model.body.state_dict()[k], v), k
    assert model.expand_channels == 3 and model.head.out_features == 8
    out, _ = _train(eight, tmp_path, "timm/resnet18", weights, capsys)
    ckpt = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["normalization"]["mean"] == pytest.approx(sum((0.485, 0.456, 0.406)) / 3)  # gray: averaged


def test_torchvision_resnet18_with_a_local_state_dict(eight, tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "tv_resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    out, _ = _train(eight, tmp_path, "torchvision/resnet18", weights, capsys)
    from dicc.checkpoint import load_checkpoint, model_from_checkpoint

    model, strategy = model_from_checkpoint(load_checkpoint(out))  # rebuilt without any download
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 8)


def test_a_file_of_another_model_is_one_clear_error(tmp_path):
    weights = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(3)}, weights)
    with pytest.raises(ValueError, match="no tensor of this file matches torchvision's resnet18"):
        create_model("torchvision/resnet18", 7, pretrained=weights)


def test_imagenet_offline_says_where_to_put_the_file(monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models, "get_model", lambda name, weights=None: offline() if weights else None)
    with pytest.raises(ValueError, match=r"model.pretrained=imagenet: could not download.*put resnet18-.*\.pth"):
        create_model("torchvision/resnet18", 7, pretrained="imagenet")
    timm = pytest.importorskip("timm")
    real = timm.create_model
    monkeypatch.setattr(
        timm, "create_model", lambda *a, pretrained=False, **k: offline() if pretrained else real(*a, **k)
    )
    with pytest.raises(ValueError, match=r"could not get timm's resnet18 weights.*model.pretrained=FILE"):
        create_model("timm/resnet18", 7, pretrained="imagenet")


def test_bad_model_names_are_checked_before_anything(tmp_path, capsys):
    for args, fragment in (
        (["--set", "model.name=torchvision/vgg11"], "valid torchvision models"),
        (["--set", "model.pretrained=imagenet"], "vgg_fer has no ImageNet weights"),
        (["--set", "model.name=timm/resnet18", "--set", "model.width=8"], "own architecture"),
    ):
        assert main(["train", *args, "--out", str(tmp_path / "r")]) == 2
        assert fragment in capsys.readouterr().err
        assert not (tmp_path / "r").exists()


class TinyNet(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_a_user_module_behind_the_seam():
    net = TinyNet(7)
    fc = net.fc
    m = adapt_model(net, 7)
    assert m.head is fc and m.feature_dim == 4 and m.convolutional  # its own head kept: right size
    assert adapt_model(TinyNet(7), 12).head.out_features == 12  # resized for DICC's sub-classes
    x = torch.randn(2, 1, 8, 8)
    assert m(x).shape == (2, 7) and m.features(x).shape == (2, 4)
    with pytest.raises(ValueError, match="no usable head"):
        adapt_model(nn.Sequential(nn.Flatten(), nn.ReLU()), 7)


@pytest.mark.parametrize("name,feature_dim", [("torchvision/resnet50", 2048), ("timm/test_vit", 64)])
def test_more_backbones_take_any_size_and_channel_count(name, feature_dim):
    if name.startswith("timm/"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    for channels, size in ((1, 32), (3, 48)):
        m = create_model(name, 9, in_channels=channels, image_size=size).eval()
        with torch.no_grad():
            logits, feats = m(torch.rand(2, channels, size, size), return_features=True)
        assert logits.shape == (2, 9) and feats.shape == (2, feature_dim)


def test_dicc_splits_a_timm_transformer_head_and_predict_export_carry_eight_names(eight, tmp_path, capsys):
    """DICC's head split on a timm ViT, then the run through Recognizer and its ONNX export:
    eight columns named in the label space's order, the same probabilities from both."""
    pytest.importorskip("timm")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "vit"
    args = ["train", "--data", str(eight), "--method", "dicc", "--epochs", "2", "--no-progress", "--out", str(out)]
    for s in (
        "data.classes=emotions8",
        "data.image_size=32",
        "data.val_fraction=0.2",
        "model.name=timm/test_vit",
        "train.batch_size=16",
        "method.options.warmup_epochs=1",
        "method.options.size=2",
    ):
        args += ["--set", s]
    assert main(args) == 0, capsys.readouterr().err
    plan = json.loads((out / "subclass_plan.json").read_text())
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["model_spec"]["num_outputs"] > 8 and ckpt["model_spec"]["num_outputs"] == sum(plan["plan"]["k"])

    from dicc.predict import Recognizer

    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"]
    faces = (torch.rand(3, 1, 32, 32) * 255).to(torch.uint8).numpy()
    rec = Recognizer.load(str(out))
    assert list(rec.class_names) == names
    p = rec.classify(faces)
    assert p.shape == (3, 8) and p.sum(1) == pytest.approx(1.0, abs=1e-5)
    assert main(["export", str(out), "--onnx", str(tmp_path / "vit.onnx")]) == 0
    onnx = Recognizer.load(str(tmp_path / "vit.onnx"))
    assert list(onnx.class_names) == names
    assert onnx.classify(faces) == pytest.approx(p, abs=1e-4)


def test_rgb_training_stores_three_channels_for_predict(eight, tmp_path, capsys):
    out = tmp_path / "rgb"
    args = ["train", "--data", str(eight), "--epochs", "1", "--no-progress", "--out", str(out)]
    for s in ("data.classes=emotions8", "data.image_size=32", "data.channels=3", "model.width=4"):
        args += ["--set", s]
    assert main(args) == 0, capsys.readouterr().err
    ckpt = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["model_spec"]["in_channels"] == 3 and ckpt["normalization"]["channels"] == 3
    from dicc.predict import Recognizer

    rec = Recognizer.load(str(out))
    assert rec.channels == 3 and rec.classify(torch.zeros(2, 3, 32, 32, dtype=torch.uint8).numpy()).shape == (2, 8)


def test_the_rafdb_finetuning_preset_is_a_valid_config():
    from pathlib import Path

    from dicc.config import load_config
    from dicc.validate import check_config

    preset = Path(__file__).resolve().parents[1] / "configs" / "rafdb-resnet18.yaml"
    cfg = load_config(str(preset), ["data.path=/nonexistent/rafdb"])
    check_config(cfg)
    assert (cfg.model.name, cfg.model.pretrained, cfg.data.channels) == ("torchvision/resnet18", "imagenet", 3)


def test_image_size_auto_follows_the_weights(eight, tmp_path, capsys):
    """data.image_size=auto: the size the pretrained weights were trained at (timm's
    pretrained_cfg, 224 for torchvision's), stored resolved in the run's config and checkpoint,
    so predict resizes faces to it; 48 without weights and for the compact CNNs."""
    timm = pytest.importorskip("timm")
    import yaml

    from dicc.models import default_input_size
    from dicc.predict import Recognizer

    assert default_input_size("vgg_fer") == 48 and default_input_size("timm/resnet18") == 48
    assert default_input_size("torchvision/resnet18", "imagenet") == 224
    assert default_input_size("timm/resnet18", "weights.pt") == 224
    torch.manual_seed(0)
    weights = tmp_path / "test_vit.pt"
    torch.save(timm.create_model("test_vit").state_dict(), weights)
    size = timm.models.get_pretrained_cfg("test_vit").input_size[-1]
    out = tmp_path / "auto"
    args = ["train", "--data", str(eight), "--epochs", "1", "--no-progress", "--out", str(out)]
    for s in ("data.classes=emotions8", "data.image_size=auto", "model.name=timm/test_vit", "train.batch_size=16"):
        args += ["--set", s]
    args += ["--set", f"model.pretrained={weights}"]
    assert main(args) == 0, capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["image_size"] == size
    ckpt = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["normalization"]["image_size"] == size and Recognizer.load(str(out)).image_size == size

"""The bundled model: every entry point loads it, it carries the documented label order and
normalisation, its ONNX export matches PyTorch, it finds the smile on a real photo, and test-time
augmentation changes nothing but the averaging."""

import json
import re

import numpy as np
import pytest
import torch

from dicc import EMOTIONS
from dicc.checkpoint import DEFAULT_MODEL, load_checkpoint, model_from_checkpoint
from dicc.cli import main

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="the bundled model is not in this checkout")
CARD = DEFAULT_MODEL.parent / "MODEL_CARD.md"


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


def test_the_checkpoint_is_what_the_card_says():
    ckpt = load_checkpoint("default")
    assert ckpt["class_names"] == list(EMOTIONS)
    norm = ckpt["normalization"]
    assert (norm["channels"], norm["image_size"]) == (1, 48)
    card = CARD.read_text()
    assert ", ".join(EMOTIONS) in card
    assert f"(x / 255 - {norm['mean']}) / {norm['std']}" in card
    assert "optimizer" not in ckpt and DEFAULT_MODEL.stat().st_size < 10e6
    acc = re.search(r"\| (\d+\.\d\d) \| (\d+\.\d\d) \| (\d+\.\d\d) \|", card)
    assert acc and float(acc.group(1)) == pytest.approx(
        100 * ckpt["model_card"]["test_publictest"]["accuracy"], abs=0.006
    )


def test_every_entry_point_loads_it(tmp_path, astronaut, capsys):
    from dicc import Recognizer

    assert Recognizer.load().class_names == tuple(EMOTIONS)
    assert Recognizer.load("default").class_names == tuple(EMOTIONS)
    assert main(["predict", str(astronaut), "--json"]) == 0  # no checkpoint: the bundled one
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 1 and records[0]["dominant"] == "happy"
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "default", "--onnx", str(onnx_path)]) == 0
    capsys.readouterr()
    rec_pt, rec_onnx = Recognizer.load("default", device="cpu"), Recognizer.load(str(onnx_path))
    px = np.random.default_rng(0).integers(0, 256, (6, 1, 48, 48), dtype=np.uint8)
    assert np.allclose(rec_pt.classify(px), rec_onnx.classify(px), atol=1e-4)


def test_evaluate_default_on_a_folder_dataset(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in EMOTIONS:
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(d / f"{i}.png")
    assert main(["evaluate", "default", "--data", str(tmp_path), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 14


def test_tta_is_only_an_average_over_views(astronaut):
    from dicc import Recognizer

    plain, flip = Recognizer.load("default", tta="none"), Recognizer.load("default", tta="flip")
    px = np.random.default_rng(1).integers(0, 256, (4, 1, 48, 48), dtype=np.uint8)
    want = (plain.classify(px) + plain.classify(px[..., ::-1].copy())) / 2
    assert np.allclose(flip.classify(px), want, atol=1e-6)
    crops = Recognizer.load("default", tta="crops")
    assert crops(str(astronaut))[0]["box"] == plain(str(astronaut))[0]["box"]  # same faces, same boxes
    ckpt = load_checkpoint("default")
    model, strategy = model_from_checkpoint(ckpt)
    norm = ckpt["normalization"]
    with torch.no_grad():
        z = model((torch.from_numpy(px).float() / 255 - norm["mean"]) / norm["std"])
    assert np.allclose(plain.classify(px), torch.softmax(strategy.parent_logits(z), 1).numpy(), atol=1e-5)

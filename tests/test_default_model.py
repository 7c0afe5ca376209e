"""The bundled model: every entry point loads it, it carries the documented label order and
normalisation, its ONNX export matches PyTorch, it finds the smile on a real photo, and test-time
augmentation changes nothing but the averaging."""

import json
import re

import numpy as np
import pytest
import torch

from dicc import EMOTIONS
from dicc.checkpoint import DEFAULT_MODEL, DEFAULT_ONNX, load_checkpoint, model_from_checkpoint
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
    # the checkpoint through PyTorch in fp32 and its fp32 export: the same probabilities
    rec_pt, rec_onnx = Recognizer.from_checkpoint("default", device="cpu", amp="off"), Recognizer.load(str(onnx_path))
    px = np.random.default_rng(0).integers(0, 256, (6, 1, 48, 48), dtype=np.uint8)
    assert np.allclose(rec_pt.classify(px), rec_onnx.classify(px), atol=1e-5)


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
    pt = Recognizer.from_checkpoint("default", device="cpu", amp="off", tta="none")  # fp32, as the hand pass
    assert np.allclose(pt.classify(px), torch.softmax(strategy.parent_logits(z), 1).numpy(), atol=1e-5)


@pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason="this checkout ships no ONNX graph of the bundled model")
def test_the_default_path_is_one_view_through_the_shipped_graph(astronaut):
    pytest.importorskip("onnxruntime")
    import onnx

    from dicc import Recognizer
    from dicc.predict.backends import OnnxBackend

    rec = Recognizer.load()
    assert isinstance(rec.backend, OnnxBackend) and rec.tta == "none"  # one view a face, onnxruntime
    assert load_checkpoint("default")["config"]["eval"]["tta"] == "none"
    meta = {p.key: p.value for p in onnx.load(str(DEFAULT_ONNX)).metadata_props}
    card = load_checkpoint("default")["model_card"]["onnx"]
    assert meta["input"] == "pixels" and meta["class_names"] == json.dumps(list(EMOTIONS))
    assert ("quantization" in meta) == (card["graph"] == "int8")
    # the shipped graph follows the shipped checkpoint: the same faces, the same emotion, close
    pt = Recognizer.from_checkpoint("default", device="cpu", amp="off")
    a, b = rec(str(astronaut)), pt(str(astronaut))
    assert [f["dominant"] for f in a] == [f["dominant"] for f in b] == ["happy"]
    diff = max(abs(a[0]["emotions"][c] - b[0]["emotions"][c]) for c in EMOTIONS)
    assert diff < 0.05 if card["graph"] == "int8" else diff < 1e-5

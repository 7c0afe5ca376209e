import pytest
import torch

from dicc.models import CosineHead, available_models, create_model


@pytest.mark.parametrize("name, width, dim", [("vgg_fer", 8, 64), ("resnet18", None, 512)])
def test_features_and_head_are_separate(name, width, dim):
    m = create_model(name, 11, in_channels=1, width=width).eval()
    x = torch.randn(3, 1, 48, 48)
    f = m.features(x)
    assert f.shape == (3, dim)
    assert torch.allclose(m(x), m.head(f), atol=1e-5)
    assert m.head.out_features == 11


def test_cosine_head_bounded():
    m = create_model("vgg_fer", 7, width=4, head_type="cosine").eval()
    assert isinstance(m.head, CosineHead)
    out = m(torch.randn(5, 1, 48, 48))
    assert out.abs().max() <= 1 + 1e-5


def test_unknown_model_lists_valid():
    with pytest.raises(ValueError, match="valid: " + ", ".join(available_models())):
        create_model("vgg99", 7)


def test_pretrained_body_loaded_from_local_path(tmp_path):
    src = create_model("vgg_fer", 7, width=4)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = create_model("vgg_fer", 12, width=4, pretrained=tmp_path / "w.pt")
    for (k, a), (_, b) in zip(src.body.state_dict().items(), dst.body.state_dict().items()):
        assert torch.equal(a, b), k
    assert dst.head.out_features == 12  # the head is never taken from the file
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        create_model("vgg_fer", 7, pretrained=tmp_path / "nope.pt")
    torch.save({"unrelated.weight": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        create_model("vgg_fer", 7, width=4, pretrained=tmp_path / "bad.pt")

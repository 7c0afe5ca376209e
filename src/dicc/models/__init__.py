"""Models: one seam, ``features(x) -> [B, D]`` then ``head`` (:class:`FERModel`).

- :mod:`.base`: :class:`FERModel`, :class:`CosineHead`, :func:`copy_head_rows`;
- :mod:`.fer_cnn`: the compact CNNs trained from scratch (``vgg_fer``, ``resnet18``);
- :mod:`.external`: timm and torchvision backbones and their pretrained weights;
- :mod:`.adapt`: a user's own ``nn.Module`` behind the seam;
- :mod:`.registry`: :func:`create_model` by name.
"""

from .adapt import adapt_model, check_forward
from .base import CosineHead, FERModel, copy_head_rows
from .registry import (
    FER_NORMALIZATION,
    available_models,
    check_model_spec,
    create_model,
    default_input_size,
    default_normalization,
    load_pretrained_body,
    model_from_spec,
)

__all__ = [
    "CosineHead",
    "FERModel",
    "FER_NORMALIZATION",
    "adapt_model",
    "available_models",
    "check_forward",
    "check_model_spec",
    "copy_head_rows",
    "create_model",
    "default_input_size",
    "default_normalization",
    "load_pretrained_body",
    "model_from_spec",
]

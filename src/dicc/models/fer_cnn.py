"""Compact CNNs for small grayscale faces, trained from scratch: ``vgg_fer`` and a ResNet-18 with a
3x3 stride-1 stem and no max-pool (for 48x48 inputs; its stem cannot take ImageNet weights, use
``torchvision/resnet18`` for those)."""

from __future__ import annotations

from torch import nn


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def vgg_fer(in_channels: int = 1, width: int = 32) -> tuple[nn.Module, int]:
    """Compact VGG-style CNN for 48x48 faces: 4 double-conv blocks (w, 2w, 4w, 8w), global
    average pooling; the feature dimension is ``8 * width``."""
    w = int(width)
    body = nn.Sequential(
        _conv_block(in_channels, w),
        _conv_block(w, 2 * w),
        _conv_block(2 * w, 4 * w),
        _conv_block(4 * w, 8 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return body, 8 * w


def resnet18(in_channels: int = 1, width: int = 64) -> tuple[nn.Module, int]:
    """torchvision's ResNet-18 adapted to small inputs: 3x3 stride-1 stem, no max-pool."""
    from torchvision.models import resnet18 as tv_resnet18

    if width != 64:
        raise ValueError(f"model.width={width}: resnet18 has a fixed width of 64 (set model.width=null or 64)")
    net = tv_resnet18(weights=None, num_classes=1000)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


__all__ = ["resnet18", "vgg_fer"]

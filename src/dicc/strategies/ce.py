"""Plain cross-entropy: the reference every imbalance method is compared with."""

from __future__ import annotations

from .base import Strategy, register_strategy


@register_strategy
class CrossEntropy(Strategy):
    name = "ce"
    summary = "plain cross-entropy on shuffled data (the reference)"

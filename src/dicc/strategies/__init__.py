"""Imbalance methods behind one interface; see :mod:`dicc.strategies.base`."""

from .base import (
    EpochContext,
    Strategy,
    available_strategies,
    create_strategy,
    option,
    option_help,
    register_strategy,
)


from . import baselines, ce, dicc  # noqa: E402,F401  (register the built-in strategies)

_load_all = True

__all__ = [
    "EpochContext",
    "Strategy",
    "available_strategies",
    "create_strategy",
    "option",
    "option_help",
    "register_strategy",
]

"""Imbalance methods behind one interface; see :mod:`dicc.strategies.base`."""
from .base import EpochContext, Strategy, available_strategies, create_strategy, register_strategy


def _import_builtin() -> None:
    import importlib

    for module in ("ce", "baselines", "dicc"):
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as err:  # a module not written yet
            if err.name != f"{__name__}.{module}":
                raise


_import_builtin()
_load_all = True

__all__ = ["EpochContext", "Strategy", "available_strategies", "create_strategy", "register_strategy"]

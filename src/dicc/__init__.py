"""dicc: facial expression recognition on class-imbalanced data with Dynamic Intra-Class Clustering.

The public API (imported on first use, so ``import dicc`` stays light):

- :func:`dicc.fit`: train on a config, or on your own data and ``nn.Module`` (:mod:`dicc.api`);
- :func:`dicc.evaluate`: metrics of a model on data, from one confusion matrix;
- :func:`dicc.methods`: the imbalance methods;
- :class:`dicc.Recognizer`: faces and emotions in photos and videos (:mod:`dicc.predict`).
"""

from .data.classes import EMOTIONS

__version__ = "0.2.0"
__all__ = ["EMOTIONS", "Recognizer", "__version__", "evaluate", "fit", "methods"]


def __getattr__(name: str):
    if name in ("fit", "evaluate", "methods"):
        from . import api

        return getattr(api, name)
    if name == "Recognizer":
        from .predict import Recognizer

        return Recognizer
    raise AttributeError(f"module 'dicc' has no attribute {name!r}")

"""dicc: facial expression recognition on class-imbalanced data with Dynamic Intra-Class Clustering."""
from .data.classes import EMOTIONS

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "__version__"]

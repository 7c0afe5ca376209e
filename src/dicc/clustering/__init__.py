"""Per-class k-means for DICC.

- :mod:`.plan`: the sub-class plan (:func:`plan_subclasses`, :class:`SubclassPlan`) from the class
  counts;
- :mod:`.kmeans`: Lloyd's k-means in torch (:func:`kmeans`, k-means++, warm start, minimum sizes);
- :mod:`.clusterer`: :class:`SubclassClusterer`, scikit-learn style (parameters in the
  constructor, ``fit(X, y)`` sets attributes ending in ``_``), which clusters every split class
  and keeps sub-class identities stable from one re-clustering to the next.
"""

from .clusterer import BACKENDS, SubclassClusterer
from .kmeans import enforce_min_size, kmeans, kmeans_plusplus, nearest
from .plan import SIZE_RULES, SubclassPlan, plan_subclasses

__all__ = [
    "BACKENDS",
    "SIZE_RULES",
    "SubclassClusterer",
    "SubclassPlan",
    "enforce_min_size",
    "kmeans",
    "kmeans_plusplus",
    "nearest",
    "plan_subclasses",
]

"""Dynamic Intra-Class Clustering (DICC): split majority classes into sub-classes by clustering
the network's own features, train on the sub-class pseudo-labels, re-cluster as the features
improve, and map predictions back to the classes.

Life of a run (``W = warmup_epochs``, ``R = recluster_every``):

- **Construction.** The :class:`~dicc.clustering.SubclassPlan` is computed once from the
  training class counts; the head has ``S = sum_c k_c`` outputs for the whole run.
- **Warm-up (epochs ``0 .. W-1``).** Only row ``offset_c`` of each class is live: the parent
  logits are ``logits[:, offset_c]`` and the other ``k_c - 1`` rows of a split class are dead
  (masked out of the merge, never in a loss, so they get no gradient). The loss is the
  post-split formula with the sub-class space collapsed onto those live rows: the base loss
  with the class counts on the parent logits plus ``parent_weight`` times the parent loss on
  the same logits, with the class labels (= sub-class ``offset_c``) as targets.
- **First split (epoch ``W``).** Features of all training images are clustered per split
  class; row ``offset_c`` of the head is copied into its ``k_c`` rows and, for the
  ``logsumexp`` merge, ``log k_c`` is subtracted from their biases, so the merged parent
  logits are exactly those of the moment before (the ``max`` merge needs no shift). The head is
  rewritten in place (same ``Parameter`` objects), which DDP requires.
- **Re-clustering (epochs ``W + j R``).** Warm-started from the previous centroids and matched
  to the previous sub-classes (Hungarian matching), so head row ``j`` keeps its meaning and
  the head is left alone. Clustering runs on rank 0; pseudo-labels and centroids are
  broadcast, so every rank trains on the same targets.
- **Features to cluster** (``feature_source``). ``"train"`` (default): the L2-normalised
  penultimate features the training forward passes already computed, handed over by the
  engine (:meth:`DICC.observe_features`) and kept per dataset index (:mod:`.feature_bank`);
  ``"clean"``: a pass over all training images in eval mode without augmentation at each
  clustering (the specification).
- **Loss.** ``base(sub_logits, pseudo_label)`` with the sub-class counts (optionally with
  ``soft_sibling`` mass on the sibling sub-classes) ``+ parent_weight * parent(merge(sub_logits), y)``.
- **Order** (``sampler``). A shuffle by default; or drawn with replacement so that classes
  (``balanced``, ``sqrt``: the ``resample`` method's draws) or, once split, sub-classes
  (``subclass``) come equally often: DICC composed with re-sampling.
- **Evaluation.** :meth:`DICC.parent_logits` merges each class's live rows (``logsumexp`` or
  ``max``); nothing outside training sees sub-classes.
"""

from .merge import Merge
from .options import FEATURE_SOURCES, MERGES, SAMPLERS, DICCOptions
from .strategy import DICC

__all__ = ["DICC", "DICCOptions", "FEATURE_SOURCES", "MERGES", "Merge", "SAMPLERS"]

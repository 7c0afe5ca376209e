"""The built-in default dataset: procedurally drawn cartoon faces with hidden sub-classes.

Nothing ships as files: :func:`make_synthetic` draws 48x48 grayscale faces with vectorised
torch operations (coordinate grids and soft masks, rendered in batches, no per-pixel or
per-image Python). Each of the seven expressions comes in several visually distinct *styles*
(``SYNTHETIC_STYLES``), e.g. happy = closed-mouth smile / open grin with teeth / laughing with
closed eyes / lopsided smirk. The style is returned as ``extras["style"]`` (int64, 0..k-1
within its class) and is exactly the kind of hidden intra-class structure DICC is meant to
discover: the majority classes have 3-4 styles, the minority classes 2.

What makes it non-trivial:

* expression *intensity* varies per face (``0.4 .. 1.15`` times the style's deviation from a
  neutral face), so weak expressions drift towards neutral;
* identity (face shape, eye spacing and size, mouth and brow placement, skin tone, hair),
  pose (rotation, shift, scale), background level and gradient, a lighting gradient across
  the image, occasional glasses and occluding blobs, and Gaussian pixel noise;
* deliberately confusable pairs: fear vs surprise (raised brows, wide eyes, open mouth),
  sad vs neutral ("downcast" sad vs "sleepy" neutral), angry vs disgust (lowered brows,
  narrowed eyes, an open mouth), weak expressions vs neutral.

Default split sizes (:func:`synthetic_counts`): ``train`` is long-tailed like FER data
(happy 1200, neutral 900, sad 600, fear 360, angry 280, surprise 200, disgust 40: 3,580
images, imbalance factor 30); ``val`` has 50 and ``test`` 100 images per class. Each
(split, seed) pair has its own random stream, so the same seed gives identical tensors and
different splits give different faces from the same distribution.

Modules: ``styles`` (the neutral face and each class's styles, as expression parameters),
``params`` (draws every face's expression, identity, pose and scene parameters), ``draw``
(renders faces from their parameters), ``dataset`` (:func:`make_synthetic`: split sizes, the
random stream, batched rendering into a :class:`~dicc.data.base.FERDataset`).
"""

from .dataset import SYNTHETIC_SPLITS, make_synthetic, synthetic_counts
from .styles import SYNTHETIC_STYLES

__all__ = ["SYNTHETIC_STYLES", "SYNTHETIC_SPLITS", "synthetic_counts", "make_synthetic"]

"""Face alignment from landmarks: a square crop placed as FER2013's faces are, optionally rotated so the eyes are level.

A FER2013 face is a 48x48 crop in which the eyes and the mouth sit at nearly fixed places
(:data:`TEMPLATE`, measured with MTCNN on FER2013 training faces, see
``benchmarks/alignment.md``). :func:`landmark_crop` cuts the square of a photo that puts the
detected eyes and mouth at those places: the model then sees a face framed with the margin it was
trained with. With ``rotate=True`` the square is turned with the face so the eyes come out level;
with ``rotate=False`` it stays axis-aligned (same centre and size), so the two differ by the
rotation only. Pixels outside the photo repeat its border. The crop keeps the photo's resolution;
:func:`dicc.faces.crops.face_pixels` then resizes it exactly as training images are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .images import require_cv2


@dataclass(frozen=True)
class FaceTemplate:
    """Where a face's parts sit in the model's square input, as fractions of its side.

    eye_y: height of the eyes' midpoint (from the top); the midpoint is centred horizontally.
    eye_distance: distance between the two eyes.
    eye_mouth: distance from the eyes' midpoint to the mouth's midpoint.
    """

    eye_y: float
    eye_distance: float
    eye_mouth: float


# medians over FER2013 training faces: 856 of 1,000 found by MTCNN
# (python benchmarks/alignment.py template DATA --n 1000; benchmarks/alignment.md)
TEMPLATE = FaceTemplate(eye_y=0.39, eye_distance=0.37, eye_mouth=0.40)


def eye_angle(landmarks: np.ndarray) -> float:
    """The eye line's angle in degrees (positive: the eye on the image's right is lower)."""
    (lx, ly), (rx, ry) = np.asarray(landmarks, np.float64)[:2]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def crop_geometry(
    landmarks: np.ndarray, *, rotate: bool = True, template: FaceTemplate = TEMPLATE
) -> tuple[np.ndarray, float, float]:
    """``(centre [2], side, angle in degrees)`` of the square that puts the face's eyes and
    mouth where ``template`` has them (``angle`` 0 when ``rotate`` is False)."""
    pts = np.asarray(landmarks, np.float64).reshape(5, 2)
    le, re, mouth = pts[0], pts[1], (pts[3] + pts[4]) / 2
    mid = (le + re) / 2
    # the larger of the two scales: a face turned sideways shortens the eye distance, a face
    # tilted forwards the eye-mouth distance
    side = max(np.hypot(*(re - le)) / template.eye_distance, np.hypot(*(mouth - mid)) / template.eye_mouth, 2.0)
    angle = eye_angle(pts) if rotate else 0.0
    a = math.radians(angle)
    down = np.array([-math.sin(a), math.cos(a)])  # the face's "down" in image coordinates
    centre = mid + down * (0.5 - template.eye_y) * side
    return centre, float(side), angle


def landmark_crop(
    image: np.ndarray, landmarks: np.ndarray, *, rotate: bool = True, template: FaceTemplate = TEMPLATE
) -> np.ndarray:
    """The square face crop of ``image`` (``HxW`` or ``HxWx3`` uint8) for one face's five
    landmarks (:class:`dicc.faces.detect.Detections`), at the photo's resolution."""
    cv2 = require_cv2()
    centre, side, angle = crop_geometry(landmarks, rotate=rotate, template=template)
    n = max(2, int(round(side)))
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    scale = side / n
    # output pixel (u, v) -> source point centre + rot @ ((u, v) + 0.5 - n / 2) * scale
    m = np.zeros((2, 3))
    m[:, :2] = rot * scale
    m[:, 2] = centre + rot @ (np.array([0.5, 0.5]) * scale - side / 2) - 0.5
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        m,
        (n, n),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )

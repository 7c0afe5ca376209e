"""Faces in photos: images as arrays, detectors, alignment, and crops converted to model input.

- :mod:`.images`: any photo, PIL image or array -> ``uint8`` gray or RGB array;
- :mod:`.detect`: the detectors (``haar``, ``mtcnn``) behind one interface;
- :mod:`.align`: landmarks -> a square crop framed like FER2013's faces, eyes levelled;
- :mod:`.crops`: a box -> model pixels, normalised as in training.
"""

from .align import TEMPLATE, FaceTemplate, crop_geometry, eye_angle, landmark_crop
from .crops import crop_faces, expand_box, face_pixels, normalize_batch, prepare_faces, tta_pixels
from .detect import (
    CASCADE_FILE,
    DETECTORS,
    LANDMARK_NAMES,
    MTCNN_INSTALL_HINT,
    Detections,
    Detector,
    FaceDetector,
    HaarDetector,
    MtcnnDetector,
    create_detector,
    non_max_suppression,
)
from .images import as_image_array, load_image, require_cv2, to_gray, to_uint8

__all__ = [
    "TEMPLATE",
    "FaceTemplate",
    "crop_geometry",
    "eye_angle",
    "landmark_crop",
    "crop_faces",
    "expand_box",
    "face_pixels",
    "normalize_batch",
    "prepare_faces",
    "tta_pixels",
    "CASCADE_FILE",
    "DETECTORS",
    "LANDMARK_NAMES",
    "MTCNN_INSTALL_HINT",
    "Detections",
    "Detector",
    "FaceDetector",
    "HaarDetector",
    "MtcnnDetector",
    "create_detector",
    "non_max_suppression",
    "as_image_array",
    "load_image",
    "require_cv2",
    "to_gray",
    "to_uint8",
]

"""Inference on new images, videos and cameras: faces found, each with its box and emotion probabilities.

- :mod:`.recognizer`: :class:`Recognizer`, the API (image(s) / video -> faces);
- :mod:`.backends`: normalised batch -> probabilities (torch checkpoint, ONNX);
- :mod:`.inputs`: files and folders -> images and videos; frames of a video or a camera;
- :mod:`.video`: face ids across frames (IoU tracking), smoothing, per-face summaries;
- :mod:`.outputs`: records and their writers (table, JSON, JSON Lines, CSV), annotated images;
- :mod:`.targets`: output files refused when they are an input, written to a temporary name and renamed;
- :mod:`.cli`: the ``dicc predict`` command.
"""

from .cli import add_predict_parser, run_predict
from .inputs import VIDEO_EXTENSIONS, VideoReader, collect_inputs, is_video_file, iter_video_frames
from .outputs import NO_FACE_KEYS, RECORD_KEYS, annotate
from .recognizer import Recognizer
from .video import EmaSmoother, IouTracker, VideoPrediction, summarize

__all__ = [
    "Recognizer",
    "VIDEO_EXTENSIONS",
    "VideoReader",
    "VideoPrediction",
    "IouTracker",
    "EmaSmoother",
    "summarize",
    "RECORD_KEYS",
    "NO_FACE_KEYS",
    "iter_video_frames",
    "annotate",
    "is_video_file",
    "collect_inputs",
    "add_predict_parser",
    "run_predict",
]

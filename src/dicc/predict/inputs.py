"""Inputs: files and folders expanded into images and videos, and the frames of a video file or a camera.

:class:`VideoReader` yields every ``every``-th frame of a video file (timestamps from the frame
rate) or of a camera (timestamps from the clock, until it is stopped). A frame that cannot be
decoded is counted in ``bad_frames`` and skipped, not fatal; a source that cannot be opened is a
``ValueError`` naming it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..faces import require_cv2

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# a source that fails this many reads in a row has ended (a file) or gone away (a camera)
MAX_FAILED_READS = 25


def is_video_file(name: str | os.PathLike) -> bool:
    base = os.path.basename(os.fspath(name))
    return not base.startswith(".") and base.lower().endswith(VIDEO_EXTENSIONS)


def collect_inputs(paths: Sequence[str]) -> tuple[list[tuple[Path, str, Path]], list[str]]:
    """Expand files and folders into ``(path, kind, name for outputs)`` with kind "image" or
    "video", plus error messages for paths that do not exist or folders with nothing usable.
    Folders are searched recursively, in sorted order."""
    from ..data.decode import is_image_file

    items, errors = [], []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    kind = "video" if is_video_file(f) else "image" if is_image_file(f) else None
                    if kind:
                        full = Path(root) / f
                        found.append((full, kind, Path(p.resolve().name or "input") / full.relative_to(p)))
            found.sort(key=lambda t: t[0].as_posix())
            if not found:
                errors.append(f"{p}: no images or videos in this folder")
            items.extend(found)
        elif p.is_file():
            items.append((p, "video" if is_video_file(p) else "image", Path(p.name)))
        else:
            errors.append(f"{p}: no such file or folder")
    return items, errors


def open_capture(source: str | int):
    """``cv2.VideoCapture`` of a file path or a camera index (a seam for tests)."""
    return require_cv2().VideoCapture(source)


@dataclass
class Frame:
    index: int  # position in the video (0-based), counting undecodable frames too
    time_s: float  # seconds from the start
    image: np.ndarray  # HxWx3 RGB uint8 (HxW for a grayscale source)


class VideoReader:
    """Every ``every``-th frame of a video file (``source`` a path) or a camera (an int index).

    Iterate once. ``should_stop``: a callable polled before each frame; when it returns True the
    reader stops cleanly (how ``dicc predict`` ends a camera on Ctrl-C). Afterwards:
    ``frames_read`` (frames yielded), ``bad_frames`` (wanted frames that could not be decoded).
    """

    def __init__(
        self, source: str | os.PathLike | int, every: int = 1, *, should_stop: Callable[[], bool] | None = None
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.camera = isinstance(source, int)
        self.source = source if self.camera else os.fspath(source)
        self.name = f"camera:{source}" if self.camera else self.source
        self.every = int(every)
        self.should_stop = should_stop or (lambda: False)
        self.frames_read = self.bad_frames = 0
        self.stopped = False  # ended by should_stop
        self.fps: float | None = None
        self.frame_count = 0  # the container's count; 0 when unknown (cameras)

    def __iter__(self) -> Iterator[Frame]:
        cv2 = require_cv2()
        if not self.camera and not os.path.isfile(self.source):
            raise FileNotFoundError(f"{self.source}: no such file")
        cap = open_capture(self.source)
        try:
            if not cap.isOpened():
                raise ValueError(
                    f"{self.name}: cannot open "
                    + ("the camera" if self.camera else "the video (not a video, or an unsupported codec)")
                )
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps and math.isfinite(fps) and fps > 0 else None
            n = 0 if self.camera else cap.get(cv2.CAP_PROP_FRAME_COUNT)
            self.frame_count = int(n) if n and math.isfinite(n) and n > 0 else 0
            yield from self._frames(cap, cv2)
        finally:
            cap.release()
        if self.frames_read == 0 and not self.stopped:
            what = (
                "the camera gave no frame"
                if self.camera
                else "no frame could be read (not a video, or an unsupported codec)"
            )
            raise ValueError(f"{self.name}: {what}")

    def _frames(self, cap, cv2) -> Iterator[Frame]:
        t0 = time.monotonic()
        index, failed, failed_wanted = 0, 0, 0
        while True:
            if self.should_stop():
                self.stopped = True
                return
            wanted = index % self.every == 0
            if wanted:
                ok, image = cap.read()
            else:
                ok, image = cap.grab(), None
            if not ok:  # an undecodable frame, or the end
                failed += 1
                failed_wanted += wanted
                if failed >= MAX_FAILED_READS:
                    break
                index += 1
                continue
            self.bad_frames += failed_wanted  # a frame came after them: they were bad frames, not the end
            failed = failed_wanted = 0
            if wanted:
                if self.camera:
                    t = time.monotonic() - t0
                elif self.fps:
                    t = index / self.fps
                else:
                    t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                self.frames_read += 1
                rgb = np.ascontiguousarray(image[:, :, ::-1]) if image.ndim == 3 else image
                yield Frame(index, round(float(t), 6), rgb)
            index += 1
        # failures at the end: the frames the container says it has are bad, the rest is its end
        if self.frame_count:
            first_failed = index - failed + 1
            self.bad_frames += sum(
                1 for i in range(first_failed, min(self.frame_count, index + 1)) if i % self.every == 0
            )


def iter_video_frames(path, every: int = 1) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame index, time in seconds, RGB uint8 frame)`` for frames 0, every, 2*every, ...
    Raises ``ValueError`` naming the file when it cannot be opened or yields no frame."""
    for f in VideoReader(path, every):
        yield f.index, f.time_s, f.image


def video_frame_count(path) -> int:
    """The container's frame count (0 when unknown)."""
    cv2 = require_cv2()
    cap = open_capture(os.fspath(path))
    try:
        n = cap.get(cv2.CAP_PROP_FRAME_COUNT) if cap.isOpened() else 0
    finally:
        cap.release()
    return int(n) if n and math.isfinite(n) and n > 0 else 0

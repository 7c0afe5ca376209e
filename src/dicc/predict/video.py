"""Video timelines: face ids kept across frames by box overlap, per-face smoothing, and per-face summaries.

:class:`IouTracker` gives each face box of a frame an id: the id of the previous frames' track
whose last box overlaps it most (intersection over union at least ``iou``); failing that, of the
nearest remaining track whose box has a similar size and whose centre is at most ``max_shift``
box widths away (a fast face, or ``--every N``); else a new id. A track unseen for
``max_missed`` processed frames ends. :class:`EmaSmoother` averages each
face's probabilities over time (exponential moving average, ``alpha`` the weight of the newest
frame). :class:`FaceSummary` accumulates what one face did; :func:`summarize` turns it into the
dominant emotion over time (segments) and the share of frames per emotion.
:class:`VideoPrediction` puts them together for :meth:`dicc.predict.Recognizer.predict_video`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from .inputs import VideoReader
    from .recognizer import Recognizer


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union ``[len(a), len(b)]`` of ``(x, y, w, h)`` boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class IouTracker:
    """Face ids across frames by greedy box matching (highest IoU first)."""

    def __init__(self, iou: float = 0.3, max_missed: int = 5, max_shift: float = 1.0) -> None:
        if not 0.0 < iou <= 1.0:
            raise ValueError(f"iou must be in (0, 1], got {iou}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.iou, self.max_missed, self.max_shift = float(iou), int(max_missed), float(max_shift)
        self.tracks: dict[int, tuple[np.ndarray, int]] = {}  # id -> (last box, frames missed)
        self.next_id = 0
        self.ended: list[int] = []  # ids whose track ended at the last update

    def update(self, boxes: np.ndarray) -> list[int]:
        """The ids of ``boxes`` (one processed frame), in their order."""
        boxes = np.asarray(boxes).reshape(-1, 4)
        ids = list(self.tracks)
        ious = iou_matrix(boxes, np.stack([self.tracks[i][0] for i in ids])) if ids and len(boxes) else None
        out: list[int | None] = [None] * len(boxes)
        if ious is not None:
            self._greedy(-ious, -self.iou, ids, out)
            if self.max_shift > 0 and None in out and any(i is not None for i in ids):
                last = np.stack([self.tracks[i][0] if i is not None else np.zeros(4) for i in ids]).astype(float)
                b = boxes.astype(float)
                shift = np.hypot(
                    *((b[:, None, :2] + b[:, None, 2:] / 2) - (last[None, :, :2] + last[None, :, 2:] / 2)).transpose(
                        2, 0, 1
                    )
                ) / np.maximum((b[:, None, 2] + last[None, :, 2]) / 2, 1)
                ratio = b[:, None, 2] / np.maximum(last[None, :, 2], 1)
                shift[(ratio < 0.5) | (ratio > 2)] = np.inf
                self._greedy(shift, self.max_shift, ids, out)
        seen = set()
        for r, box in enumerate(boxes):
            if out[r] is None:
                out[r] = self.next_id
                self.next_id += 1
            self.tracks[out[r]] = (box.copy(), 0)
            seen.add(out[r])
        self.ended = []
        for tid in list(self.tracks):
            if tid not in seen:
                box, missed = self.tracks[tid]
                if missed + 1 > self.max_missed:
                    del self.tracks[tid]
                    self.ended.append(tid)
                else:
                    self.tracks[tid] = (box, missed + 1)
        return out  # type: ignore[return-value]

    @staticmethod
    def _greedy(cost: np.ndarray, limit: float, ids: list, out: list) -> None:
        """Pair rows (boxes) and columns (tracks) by increasing ``cost`` up to ``limit``; a paired
        track's slot in ``ids`` becomes None."""
        for flat in np.argsort(cost, axis=None, kind="stable"):
            r, c = divmod(int(flat), len(ids))
            if cost[r, c] > limit:
                break
            if out[r] is None and ids[c] is not None:
                out[r], ids[c] = ids[c], None


class EmaSmoother:
    """Per-face exponential moving average: ``s = alpha * p + (1 - alpha) * s_previous``
    (``alpha`` 1: no smoothing). A face's first frame is its own average."""

    def __init__(self, alpha: float = 1.0) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.state: dict[int, np.ndarray] = {}

    def update(self, ids: Sequence[int], probs: np.ndarray) -> np.ndarray:
        out = np.array(probs, dtype=np.float32, copy=True).reshape(len(ids), -1)
        if self.alpha == 1.0:
            return out
        for k, fid in enumerate(ids):
            prev = self.state.get(fid)
            if prev is not None:
                out[k] = self.alpha * out[k] + (1.0 - self.alpha) * prev
            self.state[fid] = out[k].copy()
        return out

    def forget(self, ids: Sequence[int]) -> None:
        for fid in ids:
            self.state.pop(fid, None)


class FaceSummary:
    """What one face did over a video: its (possibly smoothed) probabilities per processed frame."""

    def __init__(self, face_id: int) -> None:
        self.face_id = face_id
        self.times: list[float] = []
        self.frames: list[int] = []
        self.probs: list[np.ndarray] = []

    def add(self, frame: int, time_s: float, probs: np.ndarray) -> None:
        self.frames.append(int(frame))
        self.times.append(float(time_s))
        self.probs.append(np.asarray(probs, np.float32))


def summarize(face: FaceSummary, class_names: Sequence[str]) -> dict:
    """``{"face_id", "frames", "first_s", "last_s", "dominant", "shares", "mean", "segments"}``:
    ``shares`` the fraction of the face's frames in which each emotion was dominant,
    ``dominant`` the emotion with the largest share, ``mean`` the mean probabilities, and
    ``segments`` the dominant emotion over time: runs of consecutive processed frames with the
    same dominant emotion, ``{"dominant", "start_s", "end_s", "frames"}``."""
    names = list(class_names)
    probs = np.stack(face.probs)
    top = probs.argmax(1)
    counts = np.bincount(top, minlength=len(names))
    segments: list[dict] = []
    for k, t in enumerate(top):
        if segments and segments[-1]["dominant"] == names[t]:
            segments[-1]["end_s"] = face.times[k]
            segments[-1]["frames"] += 1
        else:
            segments.append({"dominant": names[t], "start_s": face.times[k], "end_s": face.times[k], "frames": 1})
    return {
        "face_id": face.face_id,
        "frames": len(top),
        "first_s": face.times[0],
        "last_s": face.times[-1],
        "dominant": names[int(counts.argmax())],
        "shares": {n: round(float(c) / len(top), 6) for n, c in zip(names, counts)},
        "mean": {n: round(float(v), 6) for n, v in zip(names, probs.mean(0))},
        "segments": segments,
    }


class VideoPrediction:
    """Iterate for one record per processed frame: ``{"frame", "time_s", "faces": [{"face_id",
    "box", "emotions", "dominant"}, ...]}``; then :meth:`summary` (one dict per face, see
    :func:`summarize`), ``bad_frames`` and ``frames_read``. Frames are detected and classified
    ``chunk`` at a time (one batched forward over all their faces)."""

    def __init__(
        self,
        rec: "Recognizer",
        reader: "VideoReader",
        *,
        smooth: float = 1.0,
        iou: float = 0.3,
        max_missed: int = 5,
        max_shift: float = 1.0,
        chunk: int = 32,
        detect: bool = True,
        with_images: bool = False,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.rec, self.reader, self.chunk, self.detect = rec, reader, int(chunk), detect
        self.with_images = with_images
        self.tracker = IouTracker(iou, max_missed, max_shift)
        self.smoother = EmaSmoother(smooth)
        self.faces: dict[int, FaceSummary] = {}

    @property
    def bad_frames(self) -> int:
        return self.reader.bad_frames

    @property
    def frames_read(self) -> int:
        return self.reader.frames_read

    def __iter__(self) -> Iterator[dict]:
        frames = iter(self.reader)
        while True:
            block = [f for _, f in zip(range(self.chunk), frames)]
            if not block:
                return
            found = self.rec.analyze([f.image for f in block], detect=self.detect)
            for frame, (boxes, probs) in zip(block, found):
                record = self.step(frame.index, frame.time_s, boxes, probs)
                if self.with_images:
                    record["image"] = frame.image
                yield record

    def step(self, frame: int, time_s: float, boxes: np.ndarray, probs: np.ndarray) -> dict:
        """Track, smooth and record one frame's faces."""
        ids = self.tracker.update(boxes)
        self.smoother.forget(self.tracker.ended)
        smoothed = self.smoother.update(ids, probs)
        for fid, p in zip(ids, smoothed):
            self.faces.setdefault(fid, FaceSummary(fid)).add(frame, time_s, p)
        faces = [{"face_id": fid, **face} for fid, face in zip(ids, self.rec.faces(boxes, smoothed))]
        return {"frame": frame, "time_s": time_s, "faces": faces}

    def summary(self) -> list[dict]:
        return [summarize(f, self.rec.class_names) for _, f in sorted(self.faces.items())]

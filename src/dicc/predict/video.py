"""Video timelines: face ids kept across frames by box overlap, per-face smoothing, and per-face summaries.

:class:`IouTracker` gives each face box of a frame an id: the id of the previous frames' track
whose last box overlaps it most (intersection over union at least ``iou``); failing that, of the
nearest remaining track whose box has a similar size and whose centre moved at most ``max_shift``
box widths, or ``max_speed`` box widths per second times the time since the previous processed
frame, whichever is more (a fast face, or ``--every N``: the allowance grows with the time
between processed frames); else a new id. A track that no box matched for more than
``max_gap_s`` seconds (with frame times; else ``max_missed`` processed frames) ends; a face that
comes back near its last box before then keeps its id. Frames without a face are processed
like any other (the tracks age). :class:`EmaSmoother` averages each face's probabilities over
time (exponential moving average, ``alpha`` the weight of the newest frame); the average of a
face that comes back after a gap restarts from its new frame. :class:`FaceSummary` accumulates
what one face did; :func:`summarize` turns it into the dominant emotion over time (segments) and
the share of frames per emotion. :class:`VideoPrediction` puts them together for
:meth:`dicc.predict.Recognizer.predict_video`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from .inputs import VideoReader


class FrameClassifier(Protocol):
    """What :class:`VideoPrediction` needs of a recognizer (:class:`dicc.predict.Recognizer` is
    one): its labels, a batch of frames' detections and probabilities, and their records."""

    class_names: Sequence[str]

    def analyze_detections(self, images, *, detect: bool = True, bgr: bool = False) -> list: ...

    def faces(self, found, probs: np.ndarray) -> list[dict]: ...


# a face unseen for up to this many seconds keeps its id when it comes back near its last box
DEFAULT_TRACK_GAP_S = 1.0
# box widths per second a face's centre may move between processed frames (beyond max_shift):
# what widens the allowance for --every N (at 25 fps, --every 10: 2.4 widths); a face crossing
# 6 of its widths in a second is one walking briskly past the camera
DEFAULT_MAX_SPEED = 6.0


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
    """Face ids across frames by greedy box matching (highest IoU first, then nearest centre).

    ``max_missed``: a track ends when no box matched it in more than this many processed frames
    in a row; with ``max_gap_s`` and frame times (``update(boxes, time_s)``), when no box
    matched it for more than ``max_gap_s`` seconds instead. ``max_shift``: the most a face's
    centre may move between processed frames, in box widths (at a similar size: 0.5-2x);
    ``max_speed``: with frame times, the allowance is at least ``max_speed`` box widths per
    second times the time since the previous processed frame. After :meth:`update`: ``ended``,
    the ids whose track ended; ``returned``, the ids matched again after missing frames."""

    def __init__(
        self,
        iou: float = 0.3,
        max_missed: int = 5,
        max_shift: float = 1.0,
        *,
        max_gap_s: float | None = None,
        max_speed: float = 0.0,
    ) -> None:
        if not 0.0 < iou <= 1.0:
            raise ValueError(f"iou must be in (0, 1], got {iou}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        if max_gap_s is not None and max_gap_s < 0:
            raise ValueError(f"max_gap_s must be >= 0, got {max_gap_s}")
        if max_speed < 0:
            raise ValueError(f"max_speed must be >= 0, got {max_speed}")
        self.iou, self.max_missed, self.max_shift = float(iou), int(max_missed), float(max_shift)
        self.max_gap_s = None if max_gap_s is None else float(max_gap_s)
        self.max_speed = float(max_speed)
        # id -> (last box, processed frames missed since, time last seen or None)
        self.tracks: dict[int, tuple[np.ndarray, int, float | None]] = {}
        self.next_id = 0
        self.last_time: float | None = None  # the previous processed frame's time
        self.ended: list[int] = []  # ids whose track ended at the last update
        self.returned: list[int] = []  # ids matched at the last update after missing frames

    def allowed_shift(self, time_s: float | None) -> float:
        """The centre movement (box widths) a track may make into the frame at ``time_s``."""
        if time_s is None or self.last_time is None or not self.max_speed:
            return self.max_shift
        return max(self.max_shift, self.max_speed * max(0.0, time_s - self.last_time))

    def update(self, boxes: np.ndarray, time_s: float | None = None) -> list[int]:
        """The ids of ``boxes`` (one processed frame, taken at ``time_s`` seconds), in their order."""
        boxes = np.asarray(boxes).reshape(-1, 4)
        by_time = self.max_gap_s is not None and time_s is not None
        self.ended = []
        if by_time:  # gone longer than max_gap_s by now: ended before matching this frame's boxes
            for tid, (_, _, last_seen) in list(self.tracks.items()):
                if last_seen is not None and time_s - last_seen > self.max_gap_s + 1e-9:
                    del self.tracks[tid]
                    self.ended.append(tid)
        ids = list(self.tracks)
        ious = iou_matrix(boxes, np.stack([self.tracks[i][0] for i in ids])) if ids and len(boxes) else None
        out: list[int | None] = [None] * len(boxes)
        max_shift = self.allowed_shift(time_s)
        if ious is not None:
            self._greedy(-ious, -self.iou, ids, out)
            if max_shift > 0 and None in out and any(i is not None for i in ids):
                last = np.stack([self.tracks[i][0] if i is not None else np.zeros(4) for i in ids]).astype(float)
                b = boxes.astype(float)
                shift = np.hypot(
                    *((b[:, None, :2] + b[:, None, 2:] / 2) - (last[None, :, :2] + last[None, :, 2:] / 2)).transpose(
                        2, 0, 1
                    )
                ) / np.maximum((b[:, None, 2] + last[None, :, 2]) / 2, 1)
                ratio = b[:, None, 2] / np.maximum(last[None, :, 2], 1)
                shift[(ratio < 0.5) | (ratio > 2)] = np.inf
                self._greedy(shift, max_shift, ids, out)
        seen = set()
        self.returned = []
        for r, box in enumerate(boxes):
            if out[r] is None:
                out[r] = self.next_id
                self.next_id += 1
            elif self.tracks[out[r]][1] > 0:
                self.returned.append(out[r])
            self.tracks[out[r]] = (box.copy(), 0, time_s)
            seen.add(out[r])
        for tid in list(self.tracks):
            if tid not in seen:
                box, missed, last_seen = self.tracks[tid]
                if not (by_time and last_seen is not None) and missed + 1 > self.max_missed:
                    del self.tracks[tid]
                    self.ended.append(tid)
                else:
                    self.tracks[tid] = (box, missed + 1, last_seen)
        if time_s is not None:
            self.last_time = float(time_s)
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
        """The averaged probabilities ``[len(ids), num_classes]`` of one frame's faces."""
        out = np.array(probs, dtype=np.float32, copy=True)
        if out.ndim != 2:  # one face's [C]; a frame without a face is [0, C] already
            out = out.reshape(len(ids), -1) if out.size else out.reshape(0, 0)
        if len(out) != len(ids):
            raise ValueError(f"{len(ids)} face ids for {len(out)} rows of probabilities")
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
        self.gaps: set[int] = set()  # positions (in frames) where the face came back after missing frames

    def add(self, frame: int, time_s: float, probs: np.ndarray, *, after_gap: bool = False) -> None:
        if after_gap and self.frames:
            self.gaps.add(len(self.frames))
        self.frames.append(int(frame))
        self.times.append(float(time_s))
        self.probs.append(np.asarray(probs, np.float32))


def summarize(face: FaceSummary, class_names: Sequence[str]) -> dict:
    """``{"face_id", "frames", "first_s", "last_s", "dominant", "shares", "mean", "segments"}``:
    ``shares`` the fraction of the face's frames in which each emotion was dominant,
    ``dominant`` the emotion with the largest share, ``mean`` the mean probabilities, and
    ``segments`` the dominant emotion over time: runs of consecutive processed frames with the
    same dominant emotion, ``{"dominant", "start_s", "end_s", "frames"}`` (frames in which the
    face was not found end a run)."""
    names = list(class_names)
    probs = np.stack(face.probs)
    top = probs.argmax(1)
    counts = np.bincount(top, minlength=len(names))
    segments: list[dict] = []
    for k, t in enumerate(top):
        if segments and segments[-1]["dominant"] == names[t] and k not in face.gaps:
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
    "box", "score", "landmarks", "emotions", "dominant"}, ...]}`` (``faces`` empty in a frame
    without a face); then :meth:`summary` (one dict per face, see :func:`summarize`),
    ``bad_frames`` and ``frames_read``. Frames are detected and classified ``chunk`` at a time
    (one batched forward over all their faces). Tracking: :class:`IouTracker` with the frames'
    times, ``track_gap`` its ``max_gap_s`` (``max_missed`` given: a count of processed frames
    instead) and ``max_speed``; a face that comes back after missing frames restarts its
    smoothing."""

    def __init__(
        self,
        rec: FrameClassifier,
        reader: "VideoReader",
        *,
        smooth: float = 1.0,
        iou: float = 0.3,
        track_gap: float | None = DEFAULT_TRACK_GAP_S,
        max_missed: int | None = None,
        max_shift: float = 1.0,
        max_speed: float = DEFAULT_MAX_SPEED,
        chunk: int = 32,
        detect: bool = True,
        with_images: bool = False,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if max_missed is None and track_gap is None:
            raise ValueError("give track_gap (seconds) or max_missed (processed frames)")
        self.rec, self.reader, self.chunk, self.detect = rec, reader, int(chunk), detect
        self.with_images = with_images
        self.tracker = IouTracker(
            iou,
            5 if max_missed is None else max_missed,
            max_shift,
            max_gap_s=track_gap if max_missed is None else None,
            max_speed=max_speed,
        )
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
            found = self.rec.analyze_detections([f.image for f in block], detect=self.detect)
            for frame, (faces, probs) in zip(block, found):
                record = self.step(frame.index, frame.time_s, faces, probs)
                if self.with_images:
                    record["image"] = frame.image
                yield record

    def step(self, frame: int, time_s: float, found, probs: np.ndarray) -> dict:
        """Track, smooth and record one frame's faces (``found``: their
        :class:`dicc.faces.Detections`, or boxes ``[N, 4]``)."""
        boxes = getattr(found, "boxes", found)
        ids = self.tracker.update(boxes, time_s)
        returned = set(self.tracker.returned)
        self.smoother.forget([*self.tracker.ended, *returned])  # a face back after a gap starts afresh
        smoothed = self.smoother.update(ids, probs)
        for fid, p in zip(ids, smoothed):
            self.faces.setdefault(fid, FaceSummary(fid)).add(frame, time_s, p, after_gap=fid in returned)
        faces = [{"face_id": fid, **face} for fid, face in zip(ids, self.rec.faces(found, smoothed))]
        return {"frame": frame, "time_s": time_s, "faces": faces}

    def summary(self) -> list[dict]:
        return [summarize(f, self.rec.class_names) for _, f in sorted(self.faces.items())]

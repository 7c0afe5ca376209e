"""Outputs of ``dicc predict``: records, writers (table, JSON, JSON Lines, CSV), face summaries, annotated images.

One record per face per image or processed frame (:data:`RECORD_KEYS`); an image or a frame
in which no face was found gives one record ``{"file", "frame", "time_s", "faces": []}``
(:data:`NO_FACE_KEYS`). The tables (text, CSV) have one row per face; an image without a face
has one row with empty face cells ("no face found"), a video frame without a face none. The
text table goes to stdout as it comes; CSV and JSON Lines files stream into a temporary file
beside their target (:class:`dicc.predict.targets.AtomicFile`, each row flushed as it is
written) that :meth:`close` renames into place, or removes when nothing is to be kept (an older
file is then left as it was); ``-`` streams JSON Lines to stdout. The JSON list is written at
:meth:`close`, which ``dicc predict`` calls on every exit path.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..faces import LANDMARK_NAMES, as_image_array, require_cv2
from .targets import AtomicFile, OutputError, file_id, write_bytes_atomic

RECORD_KEYS = ("file", "frame", "time_s", "face", "face_id", "box", "score", "landmarks", "dominant", "emotions")
NO_FACE_KEYS = ("file", "frame", "time_s", "faces")
# CSV columns after the class probabilities: the detector's score, then each landmark's x and y
EXTRA_COLUMNS = ("score", *(f"{n}_{c}" for n in LANDMARK_NAMES for c in "xy"))


def records(file: str, frame, time_s, faces: list[dict]) -> list[dict]:
    """Records of one image (``frame``, ``time_s`` None) or one video frame: one per face (keys
    :data:`RECORD_KEYS`; ``score`` rounded to 6 decimals, ``landmarks`` to 0.01 px, None where
    the detector gives none), or one ``{"file", "frame", "time_s", "faces": []}`` without a face."""
    if not faces:
        return [dict(zip(NO_FACE_KEYS, (file, frame, time_s, [])))]
    out = []
    for i, f in enumerate(faces):
        score, points = f.get("score"), f.get("landmarks")
        out.append(
            {
                "file": file,
                "frame": frame,
                "time_s": time_s,
                "face": i,
                "face_id": f.get("face_id"),
                "box": f["box"],
                "score": None if score is None else round(float(score), 6),
                "landmarks": None if points is None else {k: [round(v, 2) for v in xy] for k, xy in points.items()},
                "dominant": f["dominant"],
                "emotions": {k: round(v, 6) for k, v in f["emotions"].items()},
            }
        )
    return out


def is_no_face(record: dict) -> bool:
    return "faces" in record


class TextTable:
    """A human-readable table on ``write`` (one line per face; "no face found" for an image
    without one; nothing for a video frame without one)."""

    def __init__(self, write: Callable[[str], None], class_names: Sequence[str], file_width: int) -> None:
        self.write, self.names = write, list(class_names)
        self.fw = max(4, min(file_width, 60))
        self.cw = [max(5, len(n)) for n in self.names]
        self.rows = 0
        self.write(
            f"{'file':<{self.fw}}  {'frame':>6}  {'time_s':>8}  {'face':>4}  {'id':>4}  "
            f"{'box (x, y, w, h)':<20}  {'dominant':<14}  "
            + "  ".join(f"{n:>{w}}" for n, w in zip(self.names, self.cw))
        )

    def add(self, recs: list[dict]) -> None:
        for r in recs:
            if is_no_face(r) and r["frame"] is not None:
                continue
            frame = "-" if r["frame"] is None else str(r["frame"])
            t = "-" if r["time_s"] is None else f"{r['time_s']:.3f}"
            line = f"{r['file']:<{self.fw}}  {frame:>6}  {t:>8}  "
            if is_no_face(r):
                line += f"{'-':>4}  {'-':>4}  no face found"
            else:
                fid = "-" if r["face_id"] is None else str(r["face_id"])
                box = ", ".join(str(v) for v in r["box"])
                dom = f"{r['dominant']} {r['emotions'][r['dominant']]:.2f}"
                line += f"{r['face']:>4}  {fid:>4}  {box:<20}  {dom:<14}  " + "  ".join(
                    f"{r['emotions'][n]:>{w}.2f}" for n, w in zip(self.names, self.cw)
                )
            self.write(line)
            self.rows += 1

    def close(self, keep: bool = True) -> None:
        pass


class JsonList:
    """One JSON list of all records, written to ``write`` at :meth:`close`."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write, self.records = write, []

    @property
    def rows(self) -> int:
        return len(self.records)

    def add(self, recs: list[dict]) -> None:
        self.records.extend(recs)

    def close(self, keep: bool = True) -> None:
        self.write(json.dumps(self.records, indent=2))


class _FileRows:
    """Rows to a file through an :class:`AtomicFile` (``"-"``: to ``write``, line by line)."""

    def __init__(self, path: str, write: Callable[[str], None]) -> None:
        self.path, self.rows = path, 0
        self.to_stdout = path == "-"
        self.fh = _LineSink(write) if self.to_stdout else AtomicFile(path)

    def close(self, keep: bool = True) -> None:
        """``keep``: rename the file into place (else remove it: an older file stays as it was)."""
        if self.to_stdout:
            return
        if not keep:
            self.fh.discard()
            return
        self.fh.commit()
        print(f"wrote {self.rows} rows to {self.path}", file=sys.stderr)

    def discard(self) -> None:
        if not self.to_stdout:
            self.fh.discard()


class _LineSink:
    """A file-like object that hands complete lines to ``write``."""

    def __init__(self, write) -> None:
        self._write, self.buf = write, ""

    def write(self, text: str) -> None:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self._write(line.rstrip("\r"))

    def flush(self) -> None:
        pass


class JsonLines(_FileRows):
    """One JSON object per line (every record, a frame without a face included), to a file
    (``"-"``: stdout)."""

    def add(self, recs: list[dict]) -> None:
        for r in recs:
            self.fh.write(json.dumps(r) + "\n")
        self.fh.flush()
        self.rows += len(recs)


class CsvRows(_FileRows):
    """One CSV row per face: file, frame, time_s, face, face_id, x, y, w, h, dominant, one column
    per class, then score and the landmarks' x and y (:data:`EXTRA_COLUMNS`); empty cells for
    what does not apply. An image without a face has one row with empty face cells; a video
    frame without a face has none."""

    def __init__(self, path: str, class_names: Sequence[str], write: Callable[[str], None]) -> None:
        super().__init__(path, write)
        self.names = list(class_names)
        self.csv = csv.writer(self.fh, lineterminator="\n")
        self.csv.writerow(
            ["file", "frame", "time_s", "face", "face_id", "x", "y", "w", "h", "dominant", *self.names, *EXTRA_COLUMNS]
        )
        self.fh.flush()

    def add(self, recs: list[dict]) -> None:
        for r in recs:
            if is_no_face(r):
                if r["frame"] is not None:
                    continue
                r = dict.fromkeys(RECORD_KEYS) | {"file": r["file"]}
            box = r["box"] or [None] * 4
            probs = [None] * len(self.names) if r["emotions"] is None else [r["emotions"][n] for n in self.names]
            points = [None] * (2 * len(LANDMARK_NAMES))
            if r["landmarks"] is not None:
                points = [v for n in LANDMARK_NAMES for v in r["landmarks"][n]]
            cells = [r["file"], r["frame"], r["time_s"], r["face"], r["face_id"], *box, r["dominant"], *probs]
            self.csv.writerow(["" if v is None else v for v in [*cells, r["score"], *points]])
            self.rows += 1
        self.fh.flush()


def open_writer(
    mode: str, target: str | None, class_names: Sequence[str], file_width: int, write: Callable[[str], None]
):
    """``mode``: "text", "json", "jsonl" or "csv" (``target``: the file, "-" for stdout). A file
    writer already holds its temporary file: an output that cannot be written is an
    :class:`OutputError` here, before anything is read."""
    if mode == "json":
        return JsonList(write)
    if mode == "jsonl":
        return JsonLines(target, write)
    if mode == "csv":
        return CsvRows(target, class_names, write)
    return TextTable(write, class_names, file_width)


# -- per-face summaries ---------------------------------------------------------------------------
def summary_lines(file: str, summary: list[dict]) -> list[str]:
    """One line per face: its frames, time span, dominant emotion and the largest shares."""
    out = []
    for s in summary:
        shares = sorted(s["shares"].items(), key=lambda kv: -kv[1])
        top = ", ".join(f"{n} {v:.0%}" for n, v in shares[:3] if v > 0)
        out.append(
            f"{file}: face {s['face_id']}: {s['frames']} frames, {s['first_s']:.2f}-{s['last_s']:.2f} s, "
            f"mostly {s['dominant']} ({top}), {len(s['segments'])} segment(s)"
        )
    return out


def write_json_atomic(path, obj) -> None:
    """``obj`` as JSON in ``path``, written to a temporary file first and renamed."""
    out = AtomicFile(path)
    try:
        out.write(json.dumps(obj, indent=2))
    except BaseException:
        out.discard()
        raise
    out.commit()


class SummaryFile:
    """``--summary``: per-face video summaries as JSON. The temporary file is made when it is
    opened (a target that cannot be written fails before anything is read); :meth:`close`
    writes the summaries and renames it into place, or removes it (``keep`` False)."""

    def __init__(self, path) -> None:
        self.path, self.fh = path, AtomicFile(path)

    def close(self, summaries: list[dict], keep: bool = True) -> None:
        if not keep:
            self.fh.discard()
            return
        try:
            self.fh.write(json.dumps(summaries, indent=2))
        except BaseException:
            self.fh.discard()
            raise
        self.fh.commit()
        print(f"wrote {len(summaries)} face summaries to {self.path}", file=sys.stderr)

    def discard(self) -> None:
        self.fh.discard()


# -- annotated images -----------------------------------------------------------------------------
def annotate(image, faces: Sequence[dict], *, bgr: bool = False) -> np.ndarray:
    """A BGR copy of ``image`` (for ``cv2.imwrite``) with each face's box and "label prob"
    (and its face id, when it has one)."""
    cv2 = require_cv2()
    arr = as_image_array(image, bgr=bgr)
    out = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR) if arr.ndim == 2 else np.ascontiguousarray(arr[:, :, ::-1])
    h, w = out.shape[:2]
    scale = max(0.4, min(w, h) / 600)
    thick = max(1, int(round(scale * 2)))
    color = (0, 255, 0)
    if not faces:
        cv2.putText(
            out,
            "no face found",
            (5, int(20 * scale) + 5),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 255),
            thick,
            cv2.LINE_AA,
        )
    for face in faces:
        x, y, bw, bh = face["box"]
        cv2.rectangle(out, (x, y), (x + bw, y + bh), color, thick)
        label = f"{face['dominant']} {face['emotions'][face['dominant']]:.2f}"
        if face.get("face_id") is not None:
            label = f"#{face['face_id']} {label}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - 4 if y - th - base - 4 >= 0 else min(h - base, y + bh + th + 4)
        cv2.rectangle(out, (x, ty - th - base), (x + tw, ty + base), color, cv2.FILLED)
        cv2.putText(out, label, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out


class Annotator:
    """Writes annotated copies of images and sampled video frames under ``out_dir`` (created,
    and checked to be writable, at once). Each copy is encoded in memory and renamed into place
    (:func:`dicc.predict.targets.write_bytes_atomic`); a copy whose name is that of a file in
    ``protected`` (``(st_dev, st_ino)`` of the inputs, :func:`dicc.predict.targets.file_id`)
    is refused: an annotated copy never replaces an input. Failures are :class:`OutputError`."""

    IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

    def __init__(self, out_dir, protected=()) -> None:
        from .targets import check_writable_folder

        self.cv2 = require_cv2()
        self.out_dir = check_writable_folder(out_dir)
        self.protected = set(protected)
        self.used: set[Path] = set()

    @classmethod
    def image_name(cls, rel: Path) -> Path:
        """Where (under ``out_dir``) the annotated copy of the image ``rel`` goes."""
        suffix = rel.suffix.lower() if rel.suffix.lower() in cls.IMAGE_SUFFIXES else ".png"
        return rel.with_suffix(suffix)

    @staticmethod
    def frame_name(rel: Path, index) -> Path:
        """Where (under ``out_dir``) frame ``index`` of the video ``rel`` goes (``index`` "*": the pattern)."""
        return rel.with_name(f"{rel.stem}_frame{index if index == '*' else f'{index:06d}'}.jpg")

    def _target(self, rel: Path) -> Path:
        path = self.out_dir / rel
        stem, n = path.with_suffix(""), 2
        while path in self.used:
            path = Path(f"{stem}_{n}{path.suffix}")
            n += 1
        self.used.add(path)
        return path

    def image(self, rel: Path, image, faces) -> None:
        self._write(self._target(self.image_name(rel)), image, faces)

    def frame(self, rel: Path, index: int, image, faces) -> None:
        self._write(self._target(self.frame_name(rel, index)), image, faces)

    def _write(self, path: Path, image, faces) -> None:
        if self.protected and file_id(path) in self.protected:
            raise OutputError(f"cannot write {path}: it is an input; an annotated copy never replaces an input")
        ok, data = self.cv2.imencode(path.suffix, annotate(image, faces))
        if not ok:
            raise OutputError(f"cannot write {path}: OpenCV cannot encode {path.suffix} images")
        write_bytes_atomic(path, data.tobytes())

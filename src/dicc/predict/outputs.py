"""Outputs of ``dicc predict``: records, writers (table, JSON, JSON Lines, CSV), face summaries, annotated images.

One record per face per image or processed frame (:data:`RECORD_KEYS`); an image or frame
without a face gives one record with ``face`` = None. The text table, CSV and JSON Lines writers
stream (each row is flushed as it is written, so an interrupted run leaves complete files); the
JSON list is written at :meth:`close`, which ``dicc predict`` calls on every exit path.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..faces import as_image_array, require_cv2

RECORD_KEYS = ("file", "frame", "time_s", "face", "face_id", "box", "dominant", "emotions")


def records(file: str, frame, time_s, faces: list[dict]) -> list[dict]:
    """Records of one image (``frame``, ``time_s`` None) or one video frame."""
    if not faces:
        return [dict(zip(RECORD_KEYS, (file, frame, time_s, None, None, None, None, None)))]
    return [
        {
            "file": file,
            "frame": frame,
            "time_s": time_s,
            "face": i,
            "face_id": f.get("face_id"),
            "box": f["box"],
            "dominant": f["dominant"],
            "emotions": {k: round(v, 6) for k, v in f["emotions"].items()},
        }
        for i, f in enumerate(faces)
    ]


class TextTable:
    """A human-readable table on ``write`` (one line per record)."""

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
            frame = "-" if r["frame"] is None else str(r["frame"])
            t = "-" if r["time_s"] is None else f"{r['time_s']:.3f}"
            line = f"{r['file']:<{self.fw}}  {frame:>6}  {t:>8}  "
            if r["face"] is None:
                line += f"{'-':>4}  {'-':>4}  no face found"
            else:
                fid = "-" if r["face_id"] is None else str(r["face_id"])
                box = ", ".join(str(v) for v in r["box"])
                dom = f"{r['dominant']} {r['emotions'][r['dominant']]:.2f}"
                line += f"{r['face']:>4}  {fid:>4}  {box:<20}  {dom:<14}  " + "  ".join(
                    f"{r['emotions'][n]:>{w}.2f}" for n, w in zip(self.names, self.cw)
                )
            self.write(line)
        self.rows += len(recs)

    def close(self) -> None:
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

    def close(self) -> None:
        self.write(json.dumps(self.records, indent=2))


class _FileRows:
    def __init__(self, path: str, write: Callable[[str], None]) -> None:
        self.path, self.rows = path, 0
        self.to_stdout = path == "-"
        if self.to_stdout:
            self.fh = _LineSink(write)
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(path, "w", newline="")

    def close(self) -> None:
        if not self.to_stdout:
            self.fh.close()
            print(f"wrote {self.rows} rows to {self.path}", file=sys.stderr)


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
    """One JSON object per line, to a file (``"-"``: stdout)."""

    def add(self, recs: list[dict]) -> None:
        for r in recs:
            self.fh.write(json.dumps(r) + "\n")
        self.fh.flush()
        self.rows += len(recs)


class CsvRows(_FileRows):
    """One CSV row per record: file, frame, time_s, face, face_id, x, y, w, h, dominant, one column
    per class; empty cells for what does not apply."""

    def __init__(self, path: str, class_names: Sequence[str], write: Callable[[str], None]) -> None:
        super().__init__(path, write)
        self.names = list(class_names)
        self.csv = csv.writer(self.fh, lineterminator="\n")
        self.csv.writerow(["file", "frame", "time_s", "face", "face_id", "x", "y", "w", "h", "dominant", *self.names])
        self.fh.flush()

    def add(self, recs: list[dict]) -> None:
        for r in recs:
            box = r["box"] or [None] * 4
            probs = [None] * len(self.names) if r["emotions"] is None else [r["emotions"][n] for n in self.names]
            self.csv.writerow(
                [
                    "" if v is None else v
                    for v in [r["file"], r["frame"], r["time_s"], r["face"], r["face_id"], *box, r["dominant"], *probs]
                ]
            )
        self.fh.flush()
        self.rows += len(recs)


def open_writer(
    mode: str, target: str | None, class_names: Sequence[str], file_width: int, write: Callable[[str], None]
):
    """``mode``: "text", "json", "jsonl" or "csv" (``target``: the file, "-" for stdout)."""
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


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """``obj`` as JSON in ``path``, written to a temporary file first and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)
    os.replace(tmp, path)


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
    """Writes annotated copies of images and sampled video frames under ``out_dir``."""

    IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

    def __init__(self, out_dir) -> None:
        self.cv2 = require_cv2()
        self.out_dir = Path(out_dir)
        self.used: set[Path] = set()

    def _target(self, rel: Path) -> Path:
        path = self.out_dir / rel
        stem, n = path.with_suffix(""), 2
        while path in self.used:
            path = Path(f"{stem}_{n}{path.suffix}")
            n += 1
        self.used.add(path)
        return path

    def image(self, rel: Path, image, faces) -> None:
        suffix = rel.suffix.lower() if rel.suffix.lower() in self.IMAGE_SUFFIXES else ".png"
        self._write(self._target(rel.with_suffix(suffix)), image, faces)

    def frame(self, rel: Path, index: int, image, faces) -> None:
        self._write(self._target(rel.with_name(f"{rel.stem}_frame{index:06d}.jpg")), image, faces)

    def _write(self, path: Path, image, faces) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.cv2.imwrite(str(path), annotate(image, faces)):
            raise ValueError(f"{path}: could not write the annotated image")

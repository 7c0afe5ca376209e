"""The ``dicc predict`` command: its parser, and the runner that feeds images, videos and a camera to a Recognizer."""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from ..config import TTA_MODES
from ..faces import DETECTORS, create_detector, load_image
from .outputs import EXTRA_COLUMNS, RECORD_KEYS, Annotator, SummaryFile, open_writer, records, summary_lines
from .recognizer import ALIGN_MODES, DEFAULT_ALIGN, Recognizer
from .targets import OutputError, file_id, same_file
from .video import DEFAULT_TRACK_GAP_S

VIDEO_CHUNK = 16  # video frames held at once (a 1080p RGB frame is 6 MB)

EPILOG = f"""\
CHECKPOINT is a .pt checkpoint, a run directory, a .onnx file from `dicc export`, or
`default` (the model dicc ships, also used when CHECKPOINT is left out: its ONNX graph
where the installation has one and onnxruntime imports, else its checkpoint; one view per face
unless its eval.tta or --tta says otherwise).
INPUT is any mix of image files, video files (.mp4 .avi .mov .mkv .webm) and folders
(searched recursively, in sorted order); --camera INDEX reads a webcam until Ctrl-C.
Records (--json, --jsonl): one per face per image or processed frame, with the keys
{", ".join(RECORD_KEYS)};
frame, time_s (seconds) and face_id are null for images. score is the detector's confidence
(mtcnn: its face probability; haar: derived from the cascade's last stage, a ranking rather
than a probability); landmarks (mtcnn only, else null) are the x, y of left_eye, right_eye,
nose, mouth_left, mouth_right (left and right as seen in the image). An image or a processed
frame without a face gives one record {{"file", "frame", "time_s", "faces": []}}.
The table and --csv have one row per face (CSV: the class columns, then
{", ".join(EXTRA_COLUMNS[:3])}, ...); an image without a face has one row with empty face
cells ("no face found"), a video frame without a face none.
A video face keeps its face_id while its box overlaps its last one, or moves little (more with
--every N), also when it was missing for up to --track-gap seconds and comes back near where it
was. With --smooth, a video face's emotions are its moving average (restarted when it comes
back). --summary FILE writes, per video face, the dominant emotion over time and the share of
frames per emotion. An unreadable input is reported on stderr and skipped; frames that cannot
be decoded are counted and reported.
Outputs never replace inputs: an output (--csv, --jsonl, --summary, an --annotate copy) that is
an input, also through a link, is refused before anything is read. Files are written under a
temporary name beside their target and renamed into place when the run ends; when nothing was
processed, an older file is left as it was. Ctrl-C stops after the current frame (a second one
at once) and keeps what was processed. An output that cannot be written (a read-only folder, a
full disk, a name too long) is one line naming it, with nothing half-written.
Exit status: 0 when every input was processed (a camera ended by Ctrl-C included), 1 when some
were skipped, 2 when none could be processed, an output cannot be written (or on a usage
error), 130 when interrupted."""


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="faces and emotion probabilities in images, folders, videos, a camera",
        description="Detect faces and predict their emotion probabilities.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        nargs="?",
        default="default",
        help="checkpoint .pt, run directory, exported .onnx model, or 'default' (the bundled model; also "
        "used when the first argument is an image, a video or a folder of them)",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, video files or folders")
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=None,
        help="test-time augmentation: average over each face and its mirror (flip) or 10 views (crops); "
        "default: the checkpoint's own choice (eval.tta), else none",
    )
    p.add_argument("--camera", type=int, metavar="INDEX", help="also read this webcam (0: the first) until Ctrl-C")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of records instead of a table")
    out.add_argument("--csv", metavar="FILE", help="write one CSV row per face to FILE instead of a table")
    out.add_argument("--jsonl", metavar="FILE", help="write one JSON record per line to FILE ('-': stdout)")
    p.add_argument("--summary", metavar="FILE", help="write per-face video summaries (JSON) to FILE")
    p.add_argument(
        "--annotate",
        metavar="OUT_DIR",
        help="write copies of the images (and processed video frames) with boxes and 'label prob' here",
    )
    p.add_argument(
        "--no-detect", action="store_true", help="inputs are already face crops: the whole image is one face"
    )
    _add_detection_arguments(p.add_argument_group("face detection"))
    _add_video_arguments(p.add_argument_group("video"))
    _add_runtime_arguments(p)
    return p


def _add_detection_arguments(det) -> None:
    det.add_argument(
        "--detector",
        choices=list(DETECTORS),
        default="haar",
        help="haar (OpenCV, default) or mtcnn (facenet-pytorch: finds rotated and smaller faces, gives eye landmarks)",
    )
    det.add_argument(
        "--align",
        choices=ALIGN_MODES,
        default=DEFAULT_ALIGN,
        help="with landmarks (mtcnn): rotate "
        "the eyes level and frame the face as in training (rotate, default), frame only, or crop the "
        "box + margin (box)",
    )
    det.add_argument(
        "--margin",
        type=float,
        default=0.1,
        help="grow each detected box by this fraction on every side before cropping (default 0.1; box crops)",
    )
    det.add_argument("--min-face", type=int, default=None, help="smallest face in pixels (default: haar 30, mtcnn 20)")
    seen = set()
    for cls in DETECTORS.values():  # each detector's own options, from its class
        for opt in cls.cli_options:
            if opt.flag not in seen:
                seen.add(opt.flag)
                det.add_argument(opt.flag, type=opt.type, default=opt.default, help=opt.help)


def _add_video_arguments(vid) -> None:
    vid.add_argument("--every", type=int, default=1, metavar="N", help="classify every N-th frame (default 1)")
    vid.add_argument(
        "--smooth",
        type=float,
        default=1.0,
        metavar="ALPHA",
        help="per-face moving average of the probabilities: weight of the newest frame, in (0, 1] (default 1: none)",
    )
    vid.add_argument(
        "--track-iou",
        type=float,
        default=0.3,
        help="a face keeps its id while its box overlaps its last one by this IoU (default 0.3)",
    )
    vid.add_argument(
        "--track-gap",
        type=float,
        default=DEFAULT_TRACK_GAP_S,
        metavar="SECONDS",
        help="a face missing for up to this long keeps its id when it comes back near where it was "
        f"(default {DEFAULT_TRACK_GAP_S:g}; 0: only while it is found in every processed frame)",
    )


def _add_runtime_arguments(p) -> None:
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="faces per forward pass (default 64); video "
        f"frames are detected and classified up to {VIDEO_CHUNK} at a time (a camera's one by one)",
    )
    p.add_argument("--device", default="auto", help="torch device for a .pt checkpoint (default: auto)")
    p.add_argument(
        "--amp",
        choices=["auto", "on", "off"],
        default="auto",
        help="precision for a .pt checkpoint, as train.amp (default auto: bf16 where the hardware "
        "computes it natively; off: fp32)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


class StopFlag:
    """Ctrl-C sets ``requested`` (the run stops after the current frame, the outputs stay
    complete); a second Ctrl-C raises KeyboardInterrupt at once. Only in the main thread."""

    def __init__(self, say) -> None:
        self.requested, self.say, self.previous = False, say, None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say("dicc predict: interrupted; finishing the current frame (Ctrl-C again to stop at once)")

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _runs(items, size: int):
    """Consecutive images in groups of at most ``size``; each video on its own."""
    group: list = []
    for item in items:
        if item[1] == "video":
            if group:
                yield "image", group
                group = []
            yield "video", [item]
        else:
            group.append(item)
            if len(group) == size:
                yield "image", group
                group = []
    if group:
        yield "image", group


class _Runner:
    """One ``dicc predict`` invocation: inputs in, records out, failures counted."""

    def __init__(self, rec: Recognizer, args, out, annotator: Annotator | None, progress, stop: StopFlag) -> None:
        self.rec, self.args, self.out, self.annotator = rec, args, out, annotator
        self.detect = not args.no_detect
        self.progress = progress  # tqdm class
        self.stop = stop
        self.succeeded = self.failed = 0
        self.processed = 0  # images and frames whose records went out
        self.summaries: list[dict] = []

    def say(self, msg: str) -> None:
        self.progress.write(msg, file=sys.stderr)

    def report(self, path, err) -> None:
        msg = str(err) if str(path) in str(err) else f"{path}: {err}"
        self.say(f"dicc predict: {msg}; skipped")

    def images(self, group) -> None:
        rec, chunk = self.rec, []
        for path, _, rel in group:
            try:
                if self.detect:
                    chunk.append((path, rel, load_image(path), None))
                else:  # decoded as training decodes; the full image is only read for --annotate
                    chunk.append((path, rel, None, rec.detect_many([path], detect=False)[0]))
            except (ValueError, OSError) as err:
                self.report(path, err)
                self.failed += 1
        if not chunk:
            return
        if self.detect:
            found = rec.detect_many([arr for _, _, arr, _ in chunk])
        else:
            found = [f for _, _, _, f in chunk]
        probs = rec.classify(np.concatenate([pixels for _, pixels in found]))
        at = 0
        for (path, rel, arr, _), (detections, pixels) in zip(chunk, found):
            faces = rec.faces(detections, probs[at : at + len(pixels)])
            at += len(pixels)
            self.out.add(records(str(path), None, None, faces))
            self.processed += 1
            self.succeeded += 1
            if self.annotator:
                try:
                    image = arr if arr is not None else load_image(path)
                except (ValueError, OSError) as err:
                    self.report(path, err)
                    continue
                self.annotator.image(rel, image, faces)  # an OutputError ends the run

    def video(self, source, name: str, rel: Path, no_bar) -> None:
        """A video file (``source`` a path) or a camera (an int)."""
        from .inputs import video_frame_count

        args, camera = self.args, isinstance(source, int)
        try:
            total = 0 if camera else video_frame_count(source)
            run = self.rec.predict_video(
                source,
                every=args.every,
                smooth=args.smooth,
                iou=args.track_iou,
                track_gap=args.track_gap,
                detect=self.detect,
                chunk=1 if camera else min(args.batch_size, VIDEO_CHUNK),
                should_stop=self.stop,
                with_images=self.annotator is not None,
            )
            with self.progress(
                total=-(-total // args.every) if total else None,
                unit="frame",
                desc=Path(name).name,
                disable=no_bar,
                file=sys.stderr,
                leave=False,
            ) as bar:
                try:
                    for frame in run:
                        self.out.add(records(name, frame["frame"], round(frame["time_s"], 3), frame["faces"]))
                        self.processed += 1
                        if self.annotator:
                            self.annotator.frame(rel, frame["frame"], frame["image"], frame["faces"])
                        bar.update(1)
                finally:  # also on a second Ctrl-C: what was seen is summarised
                    summary = run.summary()
                    self.summaries.extend({"file": name, **s} for s in summary)
                    for line in summary_lines(name, summary):
                        self.say(line)
                    if run.bad_frames:
                        self.say(f"dicc predict: {name}: {run.bad_frames} frame(s) could not be decoded; skipped")
            self.succeeded += 1
        except OutputError:  # an output that cannot be written ends the run
            raise
        except (ValueError, OSError, ImportError) as err:  # ImportError: no OpenCV to read videos
            self.report(name, err)
            self.failed += 1


def _detector(args):
    cls = DETECTORS[args.detector]
    options = {"min_size": args.min_face} if args.min_face is not None else {}
    options.update({opt.keyword: getattr(args, opt.dest) for opt in cls.cli_options})
    if cls.takes_device:
        options["device"] = args.device
    return create_detector(args.detector, **options)


def _check_options(args) -> None:
    for name, value in (
        ("--every", args.every),
        ("--batch-size", args.batch_size),
        ("--min-face", 1 if args.min_face is None else args.min_face),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if args.margin < 0:
        raise ValueError(f"--margin must be >= 0, got {args.margin}")
    if not 0 < args.smooth <= 1:
        raise ValueError(f"--smooth must be in (0, 1], got {args.smooth}")
    if not 0 < args.track_iou <= 1:
        raise ValueError(f"--track-iou must be in (0, 1], got {args.track_iou}")
    if not args.track_gap >= 0:
        raise ValueError(f"--track-gap must be >= 0 seconds, got {args.track_gap}")
    if args.camera is not None and args.camera < 0:
        raise ValueError(f"--camera must be a camera index >= 0, got {args.camera}")
    if not args.inputs and args.camera is None:
        raise ValueError("nothing to predict: give INPUT files or folders, or --camera INDEX")


def _is_model(arg: str) -> bool:
    """Whether the first positional argument names a model (else it is an input)."""
    p = Path(arg)
    if arg == "default" or p.suffix.lower() in (".pt", ".pth", ".onnx"):
        return True
    return p.is_dir() and ((p / "checkpoints").is_dir() or (p / "config.yaml").is_file())


def _model_files(checkpoint: str) -> list[Path]:
    """The files the model is read from: a checkpoint or ONNX file, or a run directory's checkpoints."""
    from ..checkpoint import resolve_checkpoint

    try:
        path = resolve_checkpoint(checkpoint)
    except FileNotFoundError:
        return []
    return sorted((path / "checkpoints").glob("*.pt")) if path.is_dir() else [path]


def _check_outputs(args, items) -> set[tuple[int, int]]:
    """Refuse (:class:`OutputError`, one line naming the clash) an output that is an input (the
    same device and inode: also through a symbolic or hard link, or another spelling of the
    path), two outputs that are one file, and ``--annotate`` copies that would replace an input.
    Returns the inputs' file ids. Nothing is read or written."""
    inputs: dict[tuple[int, int], Path] = {}
    for path in [*(p for p, _, _ in items), *_model_files(args.checkpoint)]:
        fid = file_id(path)
        if fid is not None:
            inputs.setdefault(fid, Path(path))
    files = [(flag, v) for flag, v in (("--csv", args.csv), ("--jsonl", args.jsonl), ("--summary", args.summary)) if v]
    files = [(flag, v) for flag, v in files if v != "-"]
    for flag, value in files:
        hit = inputs.get(file_id(value))
        if hit is not None:
            raise OutputError(
                f"{flag} {value} is the input {hit}: an output never replaces an input; choose another name"
            )
    for (f1, v1), (f2, v2) in itertools.combinations(files, 2):
        if same_file(v1, v2):
            raise OutputError(f"{f1} {v1} and {f2} {v2} are the same file: name two files")
    if args.annotate:
        out_dir = Path(args.annotate)
        sources = [(rel, kind) for _, kind, rel in items]
        if args.camera is not None:
            sources.append((Path(f"camera{args.camera}.jpg"), "video"))
        for rel, kind in sources:
            if kind == "image":
                targets = [out_dir / Annotator.image_name(rel)]
            else:  # the frames' copies: every file there with their names
                folder = out_dir / Annotator.frame_name(rel, "*").parent
                pattern = re.compile(re.escape(rel.stem) + r"_frame\d{6}(_\d+)?\.jpg")
                try:
                    targets = [folder / n for n in os.listdir(folder) if pattern.fullmatch(n)]
                except OSError:  # no such folder yet: nothing to replace
                    targets = []
            for target in targets:
                hit = inputs.get(file_id(target))
                if hit is not None:
                    raise OutputError(
                        f"--annotate {out_dir} would write {target} over the input {hit}: an annotated copy "
                        "never replaces an input; choose another folder"
                    )
    return set(inputs)


def run_predict(args) -> int:
    """``dicc predict``; see :data:`EPILOG` for the outputs and the exit status."""
    if args.checkpoint != "default" and not _is_model(args.checkpoint):  # `dicc predict photo.jpg`
        args.inputs = [args.checkpoint, *args.inputs]
        args.checkpoint = "default"
    _check_options(args)
    # OpenCV's and FFmpeg's own log lines repeat, in many lines, what is reported here in one (a
    # video that cannot be opened, frames that cannot be decoded); a user's own setting wins
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    from tqdm import tqdm

    from .inputs import collect_inputs

    items, errors = collect_inputs(args.inputs)
    if not items and args.camera is None:  # nothing usable: one line, before any model or output
        raise ValueError(f"{'; '.join(errors)} (nothing to predict; no output written)")
    protected = _check_outputs(args, items)  # before anything is read or written
    loaded = _load(args, protected)
    if loaded is None:
        return 2
    rec, annotator = loaded
    mode = "json" if args.json else "csv" if args.csv else "jsonl" if args.jsonl else "text"
    write = lambda line: tqdm.write(line, file=sys.stdout)  # noqa: E731
    # the files are opened (as temporary files beside their targets) before any input is read
    out = open_writer(
        mode, args.csv or args.jsonl, rec.class_names, max((len(str(p)) for p, _, _ in items), default=8), write
    )
    try:
        summary = SummaryFile(args.summary) if args.summary else None
    except BaseException:
        out.close(keep=False)
        raise
    no_bar = True if args.no_progress else None  # None: tqdm draws only on a terminal
    finished = False
    with StopFlag(lambda msg: tqdm.write(msg, file=sys.stderr)) as stop:
        run = _Runner(rec, args, out, annotator, tqdm, stop)
        for msg in errors:
            run.say(f"dicc predict: {msg}; skipped")
        run.failed += len(errors)
        try:
            interrupted = _process(run, items, args, tqdm, stop, no_bar)
            finished = True
        except KeyboardInterrupt:  # a second Ctrl-C: what was processed so far is kept
            finished = True
            raise
        finally:  # an error (an output that cannot be written, ...) keeps nothing: older files stay
            _close_outputs(out, summary, run, keep=finished and run.processed > 0, say=run.say, quiet=not finished)
    if interrupted:
        print(f"dicc predict: interrupted; the outputs hold the {out.rows} record(s) written so far", file=sys.stderr)
        return 130
    if run.succeeded == 0:
        print(f"dicc predict: error: none of the {run.failed} input(s) could be processed", file=sys.stderr)
        return 2
    return 1 if run.failed else 0


def _load(args, protected: set):
    """``(recognizer, annotator)`` for ``args``; None after one line when a package is missing."""
    try:
        detector = _detector(args)
        rec = Recognizer.load(
            args.checkpoint,
            device=args.device,
            amp=args.amp,
            detector=detector,
            align=args.align,
            margin=args.margin,
            batch_size=args.batch_size,
            tta=args.tta,
        )
        if not args.no_detect:
            detector.load()  # fail now (missing OpenCV, cascade or facenet-pytorch), not once per file
        return rec, (Annotator(args.annotate, protected) if args.annotate else None)
    except ImportError as err:
        print(f"dicc predict: error: {err}", file=sys.stderr)
        return None


def _process(run: _Runner, items, args, tqdm, stop, no_bar) -> bool:
    """Every input in order (images in batches, videos one by one), then the camera; True when
    Ctrl-C stopped it."""
    with tqdm(
        total=len(items),
        unit="file",
        desc="predict",
        disable=True if len(items) < 2 else no_bar,
        file=sys.stderr,
        leave=False,
    ) as bar:
        for kind, group in _runs(items, args.batch_size):
            if stop():
                break
            if kind == "image":
                run.images(group)
            else:
                path, _, rel = group[0]
                run.video(path, str(path), rel, no_bar)
            bar.update(len(group))
    interrupted = stop()
    if args.camera is not None and not interrupted:  # Ctrl-C is how a camera ends: not an interruption
        run.video(args.camera, f"camera:{args.camera}", Path(f"camera{args.camera}.jpg"), no_bar)
    return interrupted


def _close_outputs(out, summary: SummaryFile | None, run: _Runner, *, keep: bool, say, quiet: bool) -> None:
    """Rename the output files into place (``keep``) or remove their temporary files; a file
    that fails to be finished takes the summary with it."""
    try:
        out.close(keep)
    except BaseException:
        if summary is not None:
            summary.discard()
        raise
    if summary is not None:
        summary.close(run.summaries, keep)
    if not keep and not quiet:
        for path in (getattr(out, "path", "-"), summary and summary.path):
            if path and path != "-":
                say(f"dicc predict: nothing was processed; {path} not written (an older file is left as it was)")

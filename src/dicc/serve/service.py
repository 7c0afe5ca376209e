"""The service behind ``dicc serve``: one model, a bounded pool of workers, micro-batched classification.

:class:`Service` takes a :class:`dicc.predict.Recognizer` and answers :meth:`Service.predict`
(uploaded bytes + options -> the faces ``dicc predict --json`` gives for one image). Each request
is decoded (:func:`dicc.serve.uploads.decode_upload`: size checked before decoding), its faces
found and cut out in one of ``workers`` threads, each with its own detectors (the Recognizer's
``predict_batch``); its faces' classification (``Recognizer.classify``, the one step every face
goes through on its way to the model) is handed to a :class:`dicc.serve.batching.MicroBatcher`,
so the faces of requests that arrive together go through one ``classify`` call, on one thread. More than ``max_queue``
requests at once are refused (503) instead of piling up.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping

from ..config import TTA_MODES
from ..faces import DETECTORS, create_detector
from ..predict.outputs import records
from ..predict.recognizer import ALIGN_MODES
from .batching import MicroBatcher
from .uploads import DEFAULT_MAX_PIXELS, RequestError, decode_upload

OPTIONS = {"detector": tuple(DETECTORS), "tta": tuple(TTA_MODES), "align": tuple(ALIGN_MODES)}


class _Gauge:
    """How many requests are being decoded or detected right now (not waiting for a batch)."""

    def __init__(self) -> None:
        self.value, self._lock = 0, threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n

    def __call__(self) -> int:
        return self.value


class Service:
    """Emotions of uploaded images, with ``workers`` threads sharing one model.

    - ``recognizer``: its model, class names, normalisation, ``align``, ``margin`` and ``tta``
      (the defaults of requests) are used; its model is called by the batcher's thread only;
    - ``detector``: the default detector's name (requests may ask for another); each worker
      thread builds its own detectors (``detector_options`` apply to the default one);
    - ``window_ms``: how long the first face of a batch waits for other requests' faces (only
      while other requests are still being decoded or detected);
    - ``max_pixels``: the pixel cap of an uploaded picture (422 above it);
    - ``max_queue``: requests accepted at once (queued or running; 503 beyond);
    - ``model_name``: the model as ``/health`` names it (default: its file's name; not its path).
    """

    def __init__(
        self,
        recognizer,
        *,
        detector: str = "haar",
        detector_options: Mapping | None = None,
        workers: int = 4,
        window_ms: float = 5.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_queue: int = 64,
        model_name: str | None = None,
    ) -> None:
        for name, value in (("workers", workers), ("max_pixels", max_pixels), ("max_queue", max_queue)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if detector not in DETECTORS:
            raise ValueError(f"unknown face detector {detector!r}; choose one of: {', '.join(DETECTORS)}")
        self.recognizer = recognizer
        self.model_name = model_name or Path(recognizer.source).name or "model"
        self.defaults = {"detector": detector, "tta": recognizer.tta, "align": recognizer.align}
        self.detector_options = dict(detector_options or {})
        self.workers, self.max_pixels, self.max_queue = int(workers), int(max_pixels), int(max_queue)
        self._running = _Gauge()
        self._classifiers = {}  # tta -> the recognizer whose classify the batcher calls
        for tta in TTA_MODES:
            self._classifiers[tta] = copy.copy(recognizer)
            self._classifiers[tta].tta = tta
        self.batcher = MicroBatcher(
            self._classify_batch, window_s=window_ms / 1000.0, max_rows=recognizer.batch_size, expected=self._running
        )
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dicc-serve")
        self._local = threading.local()
        self._accepted = 0
        self._lock = threading.Lock()

    # -- what the service tells about itself --------------------------------------------------------
    def info(self) -> dict:
        from .. import __version__

        rec = self.recognizer
        return {
            "status": "ok",
            "model": self.model_name,
            "classes": list(rec.class_names),
            "version": __version__,
            "defaults": dict(self.defaults),
            "options": {k: list(v) for k, v in OPTIONS.items()},
            "workers": self.workers,
            "max_pixels": self.max_pixels,
            # since the start: classify calls (each one forward pass per test-time view) and their faces
            "batching": {
                "window_ms": self.batcher.window_s * 1000.0,
                "batches": self.batcher.calls,
                "faces": self.batcher.rows,
            },
        }

    def options(self, query: Mapping[str, str]) -> dict:
        """A request's options (``detector``, ``tta``, ``align``) from its query parameters, with
        the service's defaults for those not given; an unknown name or value is a 400."""
        unknown = sorted(set(query) - set(OPTIONS))
        if unknown:
            raise RequestError(400, f"unknown query parameter {unknown[0]!r}; valid: {', '.join(OPTIONS)}")
        out = dict(self.defaults)
        for key, valid in OPTIONS.items():
            if key in query:
                value = query[key].strip().lower()
                if value not in valid:
                    raise RequestError(400, f"{key}={query[key]!r} is not valid; choose one of: {', '.join(valid)}")
                out[key] = value
        return out

    # -- a request -------------------------------------------------------------------------------------
    async def predict(self, data: bytes, *, name: str = "upload", **options) -> dict:
        """``{"faces": [record, ...], "image": {"width", "height"}, "detector", "tta", "align",
        "time_ms"}`` of one uploaded image; records as ``dicc predict --json`` writes them
        (:func:`dicc.predict.outputs.records`). ``time_ms``: the time in the service (waiting for
        a worker, decoding, detection, classification). Raises :class:`RequestError`."""
        opts = self.options({k: v for k, v in options.items() if v is not None})
        t0 = time.perf_counter()
        with self._lock:
            if self._accepted >= self.max_queue:
                raise RequestError(
                    503, f"busy: {self._accepted} requests are being served (--max-queue); try again shortly"
                )
            self._accepted += 1
        try:
            job = self.pool.submit(self._work, data, opts)
        except RuntimeError:  # the pool was shut down
            self._release()
            raise RequestError(503, "the service is shutting down") from None
        job.add_done_callback(lambda _: self._release())
        (h, w), faces = await asyncio.wrap_future(job)
        return {
            "faces": [r for r in records(name, None, None, faces) if r.get("face") is not None],
            "image": {"width": w, "height": h},
            **opts,
            "time_ms": round((time.perf_counter() - t0) * 1000.0, 2),
        }

    def _release(self) -> None:
        with self._lock:
            self._accepted -= 1

    def _work(self, data: bytes, opts: dict):
        self._running.add(1)
        try:
            image = decode_upload(data, self.max_pixels)
            view = self._view(opts["detector"], opts["align"], opts["tta"])
            try:
                faces = view.predict_batch([image])[0]
            except ImportError as err:  # e.g. mtcnn without facenet-pytorch on this server
                msg = f"detector {opts['detector']!r} is not available on this server: {err}"
                raise RequestError(400, msg) from None
            return image.shape[:2], faces
        finally:
            self._running.add(-1)

    def _view(self, detector: str, align: str, tta: str):
        """This worker thread's Recognizer for these options: the service's model behind the
        batcher, and detectors of its own (OpenCV's cascade and MTCNN are not shared between threads)."""
        views = self._local.__dict__.setdefault("views", {})
        key = (detector, align, tta)
        view = views.get(key)
        if view is None:
            detectors = self._local.__dict__.setdefault("detectors", {})
            if detector not in detectors:
                options = self.detector_options if detector == self.defaults["detector"] else {}
                detectors[detector] = create_detector(detector, **options)
            view = copy.copy(self.recognizer)
            view.detector, view.align, view.tta = detectors[detector], align, tta
            view.classify = functools.partial(self._classify, tta)  # its faces go to the batcher
            views[key] = view
        return view

    def _classify(self, tta: str, pixels):
        if not len(pixels):  # no face: nothing to batch (no forward pass either)
            return self._classifiers[tta].classify(pixels)
        self._running.add(-1)  # waiting for a batch, no longer on its way to one
        try:
            return self.batcher.submit(pixels, key=tta)
        finally:
            self._running.add(1)

    def _classify_batch(self, pixels, tta: str):
        return self._classifiers[tta].classify(pixels)

    def close(self) -> None:
        """Finish the requests being served, then stop the workers and the batcher."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.batcher.close()

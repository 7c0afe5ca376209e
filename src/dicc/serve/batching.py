"""Micro-batching: rows that several threads submit within a few milliseconds go through one call.

:class:`MicroBatcher` owns one thread that calls ``fn`` (a backend: ``float32 [N, ...]`` in,
``[N, ...]`` out); :meth:`MicroBatcher.submit` blocks its caller until the rows it gave come
back. A batch starts with the oldest waiting rows, takes every row already waiting (up to
``max_rows``), and then waits at most ``window_s`` for more, but only while ``expected()`` says
that other callers are on their way: a lone request is not delayed.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

_STOP = object()


class _Item:
    __slots__ = ("rows", "future")

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.future: Future = Future()


class MicroBatcher:
    """``submit(x)`` from any thread -> ``fn(x)``, with concurrent submissions joined along axis 0.

    - ``window_s``: the longest a batch waits for more rows after its first (default 5 ms);
    - ``max_rows``: a batch never holds more rows than this (a single larger submission runs alone);
    - ``expected``: a callable giving how many more submissions may come soon (e.g. requests still
      being decoded and detected); while it is 0 a batch runs at once. None: always wait the window.

    ``submitted`` counts submissions, ``calls`` and ``rows`` what went through ``fn``;
    :meth:`close` ends the thread (waiting submissions then fail with RuntimeError).
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        *,
        window_s: float = 0.005,
        max_rows: int = 64,
        expected: Callable[[], int] | None = None,
        name: str = "dicc-batcher",
    ) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.fn, self.window_s, self.max_rows = fn, float(window_s), int(max_rows)
        self.expected = expected
        self.submitted = self.calls = self.rows = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, rows: np.ndarray) -> np.ndarray:
        """``fn``'s output for ``rows`` (computed in a batch with other callers' rows)."""
        item = _Item(np.asarray(rows))
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self.submitted += 1
            self._queue.put(item)
        return item.future.result()

    def pending(self) -> int:
        """Submissions waiting for a batch (approximate)."""
        return self._queue.qsize()

    def close(self, timeout: float | None = 5.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the batching thread ------------------------------------------------------------------------
    def _others_coming(self) -> bool:
        return self.expected is None or self.expected() > 0

    def _loop(self) -> None:
        carry = None
        stop = False
        while not stop:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                break
            batch, rows = [first], len(first.rows)
            deadline = time.monotonic() + self.window_s
            while rows < self.max_rows:
                try:  # everything already waiting joins; then wait only while others are on their way
                    item = self._queue.get_nowait()
                except queue.Empty:
                    wait = deadline - time.monotonic()
                    if wait <= 0 or not self._others_coming():
                        break
                    try:
                        item = self._queue.get(timeout=min(wait, 0.001))
                    except queue.Empty:
                        continue
                if item is _STOP:
                    stop = True
                    break
                if rows + len(item.rows) > self.max_rows:
                    carry = item
                    break
                batch.append(item)
                rows += len(item.rows)
            self._run(batch)
        # closed: whatever is still queued fails instead of hanging its caller
        leftovers = [carry] if carry is not None and carry is not _STOP else []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append(item)
        for item in leftovers:
            item.future.set_exception(RuntimeError("the batcher was closed"))

    def _run(self, batch: list[_Item]) -> None:
        try:
            x = batch[0].rows if len(batch) == 1 else np.concatenate([b.rows for b in batch])
            out = np.asarray(self.fn(x))
            if len(out) != len(x):
                raise ValueError(f"the batched function returned {len(out)} rows for {len(x)}")
        except BaseException as err:  # noqa: BLE001 - every caller of the batch gets the error
            for b in batch:
                b.future.set_exception(err)
            return
        self.calls += 1
        self.rows += len(x)
        at = 0
        for b in batch:
            b.future.set_result(out[at : at + len(b.rows)])
            at += len(b.rows)

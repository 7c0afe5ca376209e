"""Micro-batching: rows that several threads submit within a few milliseconds go through one call.

:class:`MicroBatcher` owns one thread that calls ``fn(rows, key)`` (e.g. a Recognizer's
``classify`` of faces, ``key`` its test-time augmentation); :meth:`MicroBatcher.submit` blocks its
caller until the rows it gave come back. A batch starts with the oldest waiting submission and
takes every waiting one with the same key (in order, up to ``max_rows``); then it waits at most
``window_s`` for more, but only while ``expected()`` says that other callers are on their way: a
lone request is not delayed.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Hashable

import numpy as np

_STOP = object()


class _Item:
    __slots__ = ("rows", "key", "future")

    def __init__(self, rows: np.ndarray, key: Hashable) -> None:
        self.rows, self.key = rows, key
        self.future: Future = Future()


class MicroBatcher:
    """``submit(x, key)`` from any thread -> ``fn(x, key)``, with concurrent submissions of one key
    joined along axis 0 and run on the batcher's own thread.

    - ``window_s``: the longest a batch waits for more rows after its first (default 5 ms);
    - ``max_rows``: a batch never holds more rows than this (a single larger submission runs alone);
    - ``expected``: a callable giving how many more submissions may come soon (e.g. requests still
      being decoded and detected); while it is 0 a batch runs at once. None: always wait the window.

    ``submitted`` counts submissions, ``calls`` and ``rows`` what went through ``fn``;
    :meth:`close` runs what is already waiting, then ends the thread (later submissions fail
    with RuntimeError).
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray, Hashable], np.ndarray],
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

    def submit(self, rows: np.ndarray, key: Hashable = None) -> np.ndarray:
        """``fn``'s output for ``rows`` (computed in one call with other callers' rows of ``key``)."""
        item = _Item(np.asarray(rows), key)
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self.submitted += 1
            self._queue.put(item)
        return item.future.result()

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
        held: collections.deque = collections.deque()  # taken off the queue, not yet run (oldest first)
        stopping = False

        def take(item) -> None:
            nonlocal stopping
            if item is _STOP:
                stopping = True
            else:
                held.append(item)

        while True:
            if not held:
                if stopping:
                    break
                take(self._queue.get())
                continue
            key, batch, rows, blocked = held[0].key, [], 0, False
            deadline = time.monotonic() + self.window_s
            while True:
                while True:  # everything already waiting is looked at
                    try:
                        take(self._queue.get_nowait())
                    except queue.Empty:
                        break
                left = collections.deque()
                for item in held:  # those of this key join, in order, while they fit
                    if item.key == key and not blocked and (not batch or rows + len(item.rows) <= self.max_rows):
                        batch.append(item)
                        rows += len(item.rows)
                    else:
                        blocked = blocked or (item.key == key)
                        left.append(item)
                held = left
                wait = deadline - time.monotonic()
                if blocked or rows >= self.max_rows or stopping or wait <= 0 or not self._others_coming():
                    break
                try:  # wait a little for others, then look again
                    take(self._queue.get(timeout=min(wait, 0.001)))
                except queue.Empty:
                    pass
            self._run(batch, key)

    def _run(self, batch: list[_Item], key) -> None:
        try:
            x = batch[0].rows if len(batch) == 1 else np.concatenate([b.rows for b in batch])
            out = np.asarray(self.fn(x, key))
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

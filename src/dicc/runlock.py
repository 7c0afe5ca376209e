"""One process per run directory: a run claims its directory with an OS file lock while it runs.

:func:`claim` takes an exclusive ``flock`` on ``<dir>/.lock`` for as long as the block runs; a
second process that asks for the same directory is refused at once (:class:`RunDirectoryBusy`,
one line naming the directory and the holder's process id) before it writes anything. The lock
belongs to the open file, so the OS releases it however the holder ends (an exception, Ctrl-C,
``kill -9``): no stale claim is ever left, and there is nothing to clean up by hand. The empty
``.lock`` file itself stays in the directory.

Claims are re-entrant within one process (``dicc compare`` holds a run's directory while
:func:`dicc.engine.fit` or :func:`dicc.rebalance.rebalance`, which claim it too, write into it).
Under torchrun only rank 0 writes, so only rank 0 claims (:func:`claim_run_dir`).
"""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"

#: this process's claims: real path -> [file descriptor, depth]
_held: dict[str, list[int]] = {}


class RunDirectoryBusy(RuntimeError):
    """Another process holds the run directory."""


def check_out_dir(path: Path, key: str = "--out") -> None:
    """Refuse an output directory that cannot be one (an existing file, a name too long) before
    anything is created; an OS error names the path."""
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise ValueError(
                f"{key} {str(path)[:40]}...: a name in this path is {len(os.fsencode(part))} bytes long; "
                "file systems allow at most 255 bytes per name"
            )
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{key} {path}: exists and is not a directory; choose a directory (new or a run's)")


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid.isdigit() else "another process"


@contextmanager
def claim(path: str | Path, key: str = "--out") -> Iterator[Path]:
    """Hold the directory ``path`` (created when missing) exclusively for the block.

    Raises :class:`RunDirectoryBusy` when another process holds it, before anything is written;
    a directory this call created is removed again when the block fails and left it empty."""
    path = Path(path)
    check_out_dir(path, key)
    real = os.path.realpath(path)
    if real in _held:  # this process holds it already (compare -> fit)
        _held[real][1] += 1
        try:
            yield path
        finally:
            _held[real][1] -= 1
        return
    created = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise RunDirectoryBusy(
                f"{path}: {_holder(lock)} is using this run directory (it holds {lock}); "
                "wait for it to finish or choose another --out"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[real] = [fd, 1]
    ok = False
    try:
        yield path
        ok = True
    finally:
        del _held[real]
        if not ok and created is not None and [p.name for p in path.iterdir()] == [LOCK_NAME]:
            lock.unlink()  # a refused run leaves nothing behind
            for p in [path, *path.parents]:
                try:
                    p.rmdir()
                except OSError:
                    break
                if p == created:
                    break
        os.close(fd)  # releases the lock


@contextmanager
def claim_run_dir(path: str | Path) -> Iterator[None]:
    """Rank 0 holds the run directory ``path`` for the block (:func:`claim`); under torchrun
    every rank raises if it cannot, so none is left waiting."""
    from . import distributed

    with ExitStack() as stack:
        err = None
        if distributed.is_main_process():
            try:
                stack.enter_context(claim(path))
            except Exception as e:  # noqa: BLE001 - raised on every rank
                err = e
        distributed.raise_if_any(err)
        yield


__all__ = ["LOCK_NAME", "RunDirectoryBusy", "check_out_dir", "claim", "claim_run_dir"]

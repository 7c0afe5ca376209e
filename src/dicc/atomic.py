"""Atomic file writes: a temporary file next to the target, renamed over it in one step, so an
interrupted write never destroys the previous file; OS errors name the target."""

from __future__ import annotations

import errno
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch


def named_os_error(err: OSError, path: str | Path) -> OSError:
    """``err`` naming ``path`` when it names no file (a write to a full disk names none) or only
    a temporary file written in its place."""
    name = Path(str(err.filename)).name
    if err.filename is not None and not (name.startswith(".") and name.endswith(".tmp")):
        return err
    named = type(err)(err.errno, err.strerror, str(path)) if err.errno is not None else OSError(f"{path}: {err}")
    return named.with_traceback(err.__traceback__)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary file name next to ``path``; when the block ends without an error the
    file replaces ``path`` in one step (``os.replace``), otherwise it is removed and ``path`` is
    left as it was. Readers never see a half-written file. An OS error (a full disk) names
    ``path``. A symlink is followed (the file it points at is replaced, the link kept); a target
    that is not a regular file (``/dev/null``, a pipe) is written in place, never replaced."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        try:
            yield str(path)
        except OSError as err:
            raise named_os_error(err, path) from None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise named_os_error(err, path) from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    except OSError as err:
        raise named_os_error(err, path) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_atomic(obj: dict, path: str | Path) -> Path:
    """``torch.save`` atomically. The bytes are made in memory and written by Python, so a
    failed write is an ``OSError`` naming ``path`` (torch's own writer reports a full disk as
    an unrelated RuntimeError)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buf.getbuffer())
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


__all__ = ["atomic_path", "named_os_error", "save_atomic", "write_text_atomic"]

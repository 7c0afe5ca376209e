"""Output files that destroy nothing: refused when they are an input, written to a temporary name, renamed into place.

:class:`AtomicFile` writes beside its target under a temporary name; :meth:`AtomicFile.commit`
renames it into place in one step, :meth:`AtomicFile.discard` removes it and leaves the target
as it was (an older file is never cut). A target that exists and is not a regular file (a
device such as ``/dev/null`` or ``/dev/full``, a FIFO) is written directly: it has no contents
to protect, and renaming over it would replace the device. A target that is a symbolic link
replaces the file it names (the link stays). Every ``OSError`` becomes an :class:`OutputError`:
one line naming the file and the problem.

:func:`file_id` identifies a file by device and inode (through symbolic links, relative paths
and hard links alike); :func:`same_file` compares two paths with it, or by their resolved paths
when one does not exist yet.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputError(ValueError):
    """An output that cannot be written, or would replace an input: the message is one line
    naming the file and the problem."""


def cannot_write(path, err: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {err.strerror or err}")


def file_id(path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file ``path`` names (symbolic links followed), None when it
    does not exist or cannot be reached."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def same_file(a, b) -> bool:
    """Whether ``a`` and ``b`` are, or will be, one file: the same device and inode when both
    exist (hard links, symbolic links), else the same resolved path."""
    ia, ib = file_id(a), file_id(b)
    if ia is not None and ib is not None:
        return ia == ib
    return os.path.realpath(a) == os.path.realpath(b)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFile:
    """A file written to a temporary name beside ``path`` (``binary``: bytes, else text with
    ``newline``); see the module docstring. Opening it already checks that the target can be
    written (its folder is created, a folder or an over-long name is refused), so a bad output
    is reported before any input is read. Use :meth:`write`, then :meth:`commit` or
    :meth:`discard` (both idempotent)."""

    def __init__(self, path, *, binary: bool = False, newline: str | None = "") -> None:
        self.path = Path(path)
        self.tmp: str | None = None
        self.is_direct = False  # written straight to the target (a device, a FIFO), not renamed into place
        self.target = Path(os.path.realpath(self.path))
        try:
            if self.target.is_dir():
                raise OutputError(f"cannot write {path}: it is a folder; name a file")
            self.is_direct = direct = self.target.exists() and not self.target.is_file()
            if not direct:
                self.target.parent.mkdir(parents=True, exist_ok=True)
                try:  # a name the file system cannot hold fails here, not at the rename
                    os.stat(self.target)
                except FileNotFoundError:
                    pass
            mode = "wb" if binary else "w"
            if direct:
                self.fh = open(self.target, mode, **({} if binary else {"newline": newline}))
            else:
                fd, self.tmp = tempfile.mkstemp(
                    prefix=f".{self.target.name[:100]}.", suffix=".tmp", dir=self.target.parent
                )
                self.fh = os.fdopen(fd, mode, **({} if binary else {"newline": newline}))
        except OSError as err:
            self._remove_tmp()
            raise cannot_write(path, err) from None

    def write(self, data) -> None:
        try:
            self.fh.write(data)
        except OSError as err:
            raise cannot_write(self.path, err) from None

    def flush(self) -> None:
        try:
            self.fh.flush()
        except OSError as err:
            raise cannot_write(self.path, err) from None

    def commit(self) -> None:
        """Finish the file and rename it into place; on any failure (or an interruption) the
        temporary file is removed and the target is left as it was."""
        if self.fh.closed:
            return
        try:
            self.fh.flush()
            if self.tmp is not None:
                os.fsync(self.fh.fileno())
            self.fh.close()
            if self.tmp is not None:
                try:  # the replaced file's permissions; mkstemp's are private
                    mode = os.stat(self.target).st_mode & 0o777
                except FileNotFoundError:
                    mode = 0o666 & ~_umask()
                os.chmod(self.tmp, mode)
                os.replace(self.tmp, self.target)
                self.tmp = None
        except OSError as err:
            self.discard()
            raise cannot_write(self.path, err) from None
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Close and remove the temporary file; the target stays as it was."""
        try:
            self.fh.close()
        except OSError:
            pass  # what could not be flushed is dropped with the file
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None


def write_bytes_atomic(path, data: bytes) -> None:
    """``data`` into ``path`` through an :class:`AtomicFile`."""
    out = AtomicFile(path, binary=True)
    try:
        out.write(data)
    except BaseException:
        out.discard()
        raise
    out.commit()


def check_writable_folder(folder) -> Path:
    """Create ``folder`` (and its parents) and check that a file can be made in it; raises
    :class:`OutputError` naming it otherwise."""
    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"cannot write into {folder}: it is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dicc-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"cannot write into {folder}: {err.strerror or err}") from None
    return folder

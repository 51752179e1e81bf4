"""The data directory: usable (a writable folder), and held by one server at a time.

A second server on the same directory would split the streams' state between two writers; it is refused,
naming the process that holds the directory. The hold is an exclusive ``flock`` on ``data_dir/lock``, which
the OS releases when the holder dies (even by kill -9), so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "lock"


class DataDirUnusable(Exception):
    """The data directory cannot be used; the message says why and what to do."""


class DataDirLock:
    """Held from ``acquire`` to ``release`` (or the process's end)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        check_usable(self.data_dir)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise _in_use(self.data_dir, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def check_usable(data_dir: Path) -> None:
    """A folder this process can create files in, or a ``DataDirUnusable`` that says what is wrong."""
    hint = "set --data-dir (TBPTT_DATA_DIR) to a writable folder"
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirUnusable(f"{data_dir} is not a folder: {hint}")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataDirUnusable(f"{data_dir} cannot be written ({exc.strerror or exc}): {hint}") from exc


def preflight(data_dir: Path) -> None:
    """Before a server starts: the directory is usable and no other server holds it (checked, not held:
    the engine takes the hold when it opens the store)."""
    check_usable(data_dir)
    path = data_dir / LOCK_FILE
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(data_dir, _holder(fd)) from None
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"


def _in_use(data_dir: Path, holder: str) -> DataDirUnusable:
    return DataDirUnusable(
        f"{data_dir} is in use by another tbptt server (pid {holder}): stop it, or give this one its own "
        "--data-dir (TBPTT_DATA_DIR)"
    )

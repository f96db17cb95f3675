"""One writer per run directory: an advisory lock on RUN_DIR/.lock, held for the life of the process.

Two processes writing one run directory (the same `--out` twice, or `--resume` while the run still goes) corrupt
each other's checkpoints and metrics. `RunLock.acquire(run_dir)` takes an exclusive `fcntl.flock` on RUN_DIR/.lock
and writes its PID and host into the file; a second writer gets `RunLockError`, one line naming that PID.

The kernel releases a flock when its process dies, however it dies (SIGKILL included), so a killed run never
leaves the directory stuck: the stale PID left in the file means nothing without the lock. The file is never
deleted (deleting it would let two processes lock two different files of the same name).

Limits: the lock is per open file, so it also refuses a second acquire in the same process; a child created by a
bare fork (not exec) inherits it. Where the file system has no locks (some network mounts) `acquire` returns a
lock with `held=False`, and the caller may say so and go on unprotected.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"


class RunLockError(OSError):
    """The run directory is in use by another writer (one line naming it)."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode(errors="replace").split()
    except OSError:
        text = []
    if not text or not text[0].isdigit():
        return "another process"
    pid = int(text[0])
    host = text[1] if len(text) > 1 else ""
    if pid == os.getpid() and host in ("", socket.gethostname()):
        return "this process"
    return f"process {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


class RunLock:
    """An exclusive lock on a run directory; `release()` (or leaving a `with` block, or exiting) frees it."""

    def __init__(self, run_dir: Path, fd: int | None, held: bool):
        self.run_dir = run_dir
        self._fd = fd
        self.held = held

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        """Lock `run_dir` (which must exist) for this process, or raise RunLockError naming the holder."""
        import fcntl

        run_dir = Path(run_dir)
        path = run_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise RunLockError(f"cannot lock the run directory {str(run_dir)!r}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = _holder(fd)
                os.close(fd)
                raise RunLockError(f"{str(run_dir)!r} is in use by {holder} (a run writing it); wait for it to "
                                   "end or stop it first") from None
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return cls(run_dir, fd, held=False)  # no locks on this file system
            os.close(fd)
            raise RunLockError(f"cannot lock the run directory {str(run_dir)!r}: {err.strerror or err}") from None
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError:
            pass  # the lock holds without the note (e.g. a full disk): the holder is then "another process"
        return cls(run_dir, fd, held=True)

    def release(self) -> None:
        """Free the lock (idempotent). The file stays, see the module docstring."""
        fd, self._fd, self.held = self._fd, None, False
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file releases its flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

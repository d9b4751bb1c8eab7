"""One writer per output directory: an advisory `flock` on `<dir>/.lock` holding the owner's PID.

A second trainer or decoder started on the same directory (e.g. after killing only run.sh, which
leaves the trainer running) refuses at once with the PID that holds it, instead of two processes
interleaving checkpoints. The kernel releases a `flock` when its process dies, so a crash or
`kill -9` never leaves a stale lock behind.

A `flock` belongs to the open file, which a `fork()` shares with the child: a DataLoader worker
forked by a trainer would keep the trainer's lock alive after the trainer is killed (its workers
notice only seconds later), so a restart would be refused with the dead trainer's PID. Forked
children therefore close their copies of every held lock at once (`os.register_at_fork`); only
the process that acquired a lock holds it. (Children that `exec` never see it: the descriptor
is not inheritable.)

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with DirLock(d, "training"):
...     try:
...         DirLock(d, "decoding").acquire()
...     except LockedError as e:
...         print("refused:", "in use by PID" in str(e))
refused: True
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".lock"


class LockedError(RuntimeError):
    """Another process holds the directory; the message names it and its PID."""


class DirLock:
    """Exclusive lock of `directory` (or of one job's share of it, `name`) for a `with` block."""

    def __init__(self, directory: str | Path, purpose: str, name: str = LOCK_NAME) -> None:
        self.directory = Path(directory)
        self.purpose = purpose  # said in the refusal, e.g. "training"
        self.name = name  # lock file in `directory`: parallel jobs writing disjoint parts use one each
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / self.name
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{self.directory} is in use by PID {holder} (lock {path}); stop that process or wait for it, "
                f"then start {self.purpose} again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.purpose}\n".encode(), 0)
        self._fd = fd
        _HELD[fd] = self
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            _HELD.pop(self._fd, None)
            self._fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


_HELD: dict[int, DirLock] = {}  # descriptor -> lock, for every lock this process holds


def _drop_held_locks_in_child() -> None:
    """In a forked child: close (NOT unlock, which would release the parent's lock) every held lock."""
    for fd, lock in _HELD.items():
        os.close(fd)
        lock._fd = None
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_held_locks_in_child)

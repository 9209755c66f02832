"""The advisory lock on an output directory: one run writes to a directory at a time.

Standard library only, so that the CLI can refuse a busy directory before it imports torch
(a second ``run`` is refused within a second, not after seconds of imports)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import IO, Iterator

__all__ = ["LOCK_NAME", "lock_directory", "refuse_if_locked"]

LOCK_NAME = "results.lock"


def _refuse(out: Path | str, handle: IO[str]) -> None:
    """A ``ValueError`` naming the run that holds the lock (whose pid it wrote)."""
    handle.seek(0)
    holder = handle.read().strip() or "another process"
    raise ValueError(f"output directory {out} is in use by another run ({holder}); wait for it to "
                     f"finish or choose another --out")


@contextlib.contextmanager
def lock_directory(out: Path | str) -> Iterator[None]:
    """Hold an advisory lock on the output directory ``out`` while a run writes to it: a
    second run on the same directory is refused at once (``ValueError`` naming the process
    that holds it), instead of computing every cell again and deleting the first run's
    half-written files. The operating system releases the lock when the holder exits, even
    by ``kill -9``."""
    with Path(out, LOCK_NAME).open("a+") as handle:  # closing the file releases the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _refuse(out, handle)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield


def refuse_if_locked(out: Path | str) -> None:
    """Raise the same ``ValueError`` as :func:`lock_directory` if a run holds ``out`` now;
    create nothing. A quick check before a slow start-up: the run still takes the lock
    itself, so a run that starts in between is refused then."""
    path = Path(out, LOCK_NAME)
    if not str(out).strip() or not path.is_file():
        return
    with path.open("r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when the file closes
        except BlockingIOError:
            _refuse(out, handle)
        except OSError:  # a file system without locks: the run's own lock will say so
            return

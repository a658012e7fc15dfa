"""The lock of a run folder: one process writes a run at a time.

An ``fcntl.flock`` on the folder itself, which the kernel releases when its process dies (a stale
lock is simply free), and ``run.lock`` beside it whose text names the holder: a second process is
told who holds the run, and the next process after a dead one says that it takes the run over.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import PipelineError


class RunLockedError(PipelineError):
    """Another live process holds the run's lock."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunLock:
    """An exclusive ``flock`` on the run folder; ``run.lock``'s text names the holder for the others."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None  # the run folder's: the lock itself
        self._text_fd: int | None = None  # run.lock's: the holder's name

    def holder(self) -> dict:
        try:
            text = self.path.read_text()
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}

    def acquire(self, run_label: str) -> dict:
        """Take the lock or raise RunLockedError naming the holder. Returns the previous holder's
        record when it died holding the lock (empty otherwise)."""
        # The lock is on the folder: a file's lock would not survive `rm run.lock` (a second process
        # would lock a new file of the same name and write the same run).
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = {}
            for _ in range(20):  # the winner writes its name right after taking the lock
                holder = self.holder()
                if holder:
                    break
                time.sleep(0.05)
            who = (f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"
                   if holder else "another process")
            raise RunLockedError(f"{self.path.parent}: run {run_label!r} is being written by {who}. Wait for it "
                                 f"to finish, or use another --run-name.") from None
        previous = self.holder()
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}
        self._fd = fd
        self._text_fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self._text_fd, 0)
        os.pwrite(self._text_fd, json.dumps(record).encode(), 0)
        mine = previous.get("pid") == os.getpid() and previous.get("host") == socket.gethostname()
        return {} if mine else previous

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self.path.exists():  # an empty lock file: released cleanly, nobody to take over from
                os.ftruncate(self._text_fd, 0)
        finally:
            os.close(self._text_fd)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = self._text_fd = None

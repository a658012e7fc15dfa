"""Console and per-run log file for the "pipeline" logger (one compact line per event)."""
from __future__ import annotations

import logging
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

LOGGER = logging.getLogger("pipeline")
_FORMAT = logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")


class _Stdout(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time (notebooks and test runners replace it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def console() -> None:
    if not any(isinstance(h, _Stdout) for h in LOGGER.handlers):
        handler = _Stdout()
        handler.setFormatter(_FORMAT)
        LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


@contextmanager
def run_logging(log_file: Path):
    """Log to the console and append to ``log_file`` for the duration of a run. The file takes only
    the lines of the thread that opened it: two runs in two threads of one notebook share the
    logger, and each run.log must hold its own run's lines alone."""
    console()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(_FORMAT)
    owner = threading.get_ident()
    handler.addFilter(lambda record: record.thread == owner)
    LOGGER.addHandler(handler)
    try:
        yield LOGGER
    finally:
        LOGGER.removeHandler(handler)
        handler.close()

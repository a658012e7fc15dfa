"""Console and per-run log file for the "pipeline" logger (one compact line per event)."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

LOGGER = logging.getLogger("pipeline")
_FORMAT = logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")


def _console() -> None:
    if not any(getattr(h, "_pipeline_console", False) for h in LOGGER.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_FORMAT)
        handler._pipeline_console = True
        LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


@contextmanager
def run_logging(log_file: Path):
    """Log to the console and append to ``log_file`` for the duration of a run."""
    _console()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(_FORMAT)
    LOGGER.addHandler(handler)
    try:
        yield LOGGER
    finally:
        LOGGER.removeHandler(handler)
        handler.close()

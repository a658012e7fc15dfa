"""A wall-clock budget for a run (``--time-limit 8h``): Kaggle sessions end at 9-12 hours, and a
run that is cut off mid-fold leaves no submission at all.

The plan is measured, not guessed: each fold gets an equal share of the time left (minus a
reserve for writing the outputs); a fold's epochs stop when the next epoch would pass its share
(its best weights so far are kept, as early stopping keeps them); a fold is not started when the
cheapest fold measured so far (one epoch plus its setup and predictions) no longer fits. The first
fold always runs, so there is always a submission. The scores say how many folds ran.
"""
from __future__ import annotations

import re
import time

from .errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(value, what: str = "--time-limit") -> float:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"8h"``, ``"1h30m"``; one ConfigError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(r"(\d+(\.\d+)?[smhd])+", text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
        else:
            raise ConfigError(f"{what} {value!r}: expected a duration such as 90s, 30m, 8h or 1h30m.")
    if not seconds > 0:
        raise ConfigError(f"{what} {value!r}: the time limit must be more than 0 seconds.")
    return seconds


class TimeBudget:
    """The deadline of one training session and what its folds cost so far."""

    def __init__(self, seconds: float, reserve: float = 0.1, clock=time.monotonic):
        self.seconds = float(seconds)
        self.clock = clock
        self.start = clock()
        # Writing oof/test/submission and the diagnostics: a share of the budget, at least 1 s.
        self.reserve = max(1.0, reserve * self.seconds)
        self.cheapest_fold: float | None = None  # one epoch + setup + prediction, the least seen
        self.folds_cut: list[str] = []  # folds whose epochs the budget stopped
        self.folds_skipped: list[str] = []

    @property
    def deadline(self) -> float:
        return self.start + self.seconds

    def left(self) -> float:
        return self.deadline - self.clock()

    def usable(self) -> float:
        """Time left for training, the outputs' reserve kept aside."""
        return self.left() - self.reserve

    def fold_deadline(self, remaining_units: int) -> float:
        """When the next fold must end: an equal share of the usable time of the folds left."""
        return self.clock() + max(0.0, self.usable()) / max(1, remaining_units)

    def can_start(self, trained: int) -> bool:
        """Whether another fold fits; the first fold of a session always starts."""
        return trained == 0 or self.cheapest_fold is None or self.cheapest_fold <= self.usable()

    def record(self, fold_seconds: float, train_seconds: float, slowest_epoch: float) -> None:
        """A fold finished: its cost with a single epoch (setup and predictions included)."""
        one_epoch = fold_seconds - train_seconds + slowest_epoch
        self.cheapest_fold = one_epoch if self.cheapest_fold is None else min(self.cheapest_fold, one_epoch)

    def summary(self, folds_run: int, folds_planned: int) -> dict:
        return {"seconds": self.seconds, "folds_run": folds_run, "folds_planned": folds_planned,
                "folds_cut": list(self.folds_cut), "folds_skipped": list(self.folds_skipped)}

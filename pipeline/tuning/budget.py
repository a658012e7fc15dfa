"""Which trials count toward a study's ``--trials``, shared by the parent, its workers and every
other process on the same storage (the storage is the only thing they share).

A trial counts unless it carries the user attribute ``uncounted`` (the reason): its worker died,
it repeated a parameter set already evaluated, or it started after the study was already full
(two processes can start a trial at the same moment; the storage numbers trials once, so the one
whose number comes later than the budget stands down). Trials that fail for their own reasons (a
config the schema refuses, NaN loss) count: they were evaluated.
"""
from __future__ import annotations

UNCOUNTED = "uncounted"
LIVE = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
DUPLICATE_STREAK = 10  # this many duplicates in a row: the space has no new points left


def counts(trial) -> bool:
    return trial.state.name in LIVE and UNCOUNTED not in trial.user_attrs


def counted(trials) -> int:
    return sum(counts(t) for t in trials)


def counted_before(trials, number: int) -> int:
    """Counting trials numbered before ``number``: this trial's place in the budget."""
    return sum(counts(t) for t in trials if t.number < number)


def duplicate_of(trials, trial):
    """An evaluated (or running) trial with exactly this trial's parameters, or None."""
    for t in trials:
        if (t.number != trial.number and t.state.name in ("COMPLETE", "PRUNED", "RUNNING")
                and UNCOUNTED not in t.user_attrs and t.params == trial.params):
            return t
    return None


def exhausted(trials) -> bool:
    """The last DUPLICATE_STREAK trials all repeated earlier ones."""
    last = sorted((t for t in trials if t.state.name != "WAITING"), key=lambda t: t.number)[-DUPLICATE_STREAK:]
    return len(last) == DUPLICATE_STREAK and all(
        str(t.user_attrs.get(UNCOUNTED, "")).startswith("duplicate") for t in last)


def uncount(trial, reason: str) -> None:
    """Mark a live trial (an optuna.Trial) as not counting toward the budget."""
    trial.set_user_attr(UNCOUNTED, reason)

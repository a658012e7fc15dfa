"""How a run weighs its members, and a stack its runs: every piece of ensemble arithmetic.

A run's members (``model.members``: the Keras model, HGB, ...) each predict every OOF row and every
test row. Their weights are non-negative and sum to one, and are fitted on the OOF predictions:

- ``caruana``: Caruana et al. (2004) ensemble selection with replacement, as AutoGluon's
  WeightedEnsemble runs it: every round adds the member that scores best with the ones already
  chosen (even when the score falls), and the round with the best score gives the weights (the
  counts). Starting from the best member, so the in-sample score is never below it. Written here:
  scikit-learn has no ensemble selection.
- ``mean``: equal weights; ``fixed``: ``ensemble.weights`` as the user gave them.

The run's reported OOF score is cross-fitted: fold k's rows are combined with weights fitted on the
other folds' rows only, so no row's ensemble prediction saw its label. The final weights, fitted on
every OOF row, make the test predictions and ``--predict``. Two guards keep the run honest:

- a member scoring no better on OOF than a constant (the training mean, the class prior), within
  twice its score's chance spread (``null_spread``), gets weight 0 and a warning line naming it,
  its score and the constant's;
- when the cross-fitted ensemble scores below the best member alone, the run is that member alone
  (``method: best member``), so a run is never worse than its best member.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger("pipeline")


def weighted(preds: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of predictions (probabilities for classification); weights sum to one."""
    total = np.zeros(np.shape(preds[0]), dtype=np.float64)
    for w, p in zip(weights, preds):
        if w > 0:
            total += w * np.asarray(p, dtype=np.float64)
    return total


def caruana(preds: Sequence[np.ndarray], y: np.ndarray, task: str, metric, rounds: int = 50) -> np.ndarray:
    """Ensemble-selection weights (summing to one) that optimize ``metric`` on these rows."""
    sign = 1.0 if metric.direction == "maximize" else -1.0
    scores = [sign * metric(y, p, task) for p in preds]
    first = int(np.argmax(scores))
    counts = np.zeros(len(preds))
    counts[first] = 1
    total = np.asarray(preds[first], dtype=np.float64).copy()
    best_score, best_counts = scores[first], counts.copy()
    for n in range(1, rounds):
        trial = [sign * metric(y, (total + p) / (n + 1), task) for p in preds]
        j = int(np.argmax(trial))
        counts[j] += 1
        total += preds[j]
        if trial[j] > best_score + 1e-12:
            best_score, best_counts = trial[j], counts.copy()
        if len(preds) == 1:
            break
    return best_counts / best_counts.sum()


def cross_fit(fit: Callable[[list[np.ndarray], np.ndarray], Callable], preds: Sequence[np.ndarray],
              y: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, dict]:
    """Out-of-sample predictions of a fitted combiner: for each fold k, ``fit`` on the other folds'
    rows, applied to fold k's rows. Returns the combined predictions and each fold's fitted
    combiner (by fold)."""
    out = np.zeros(np.shape(preds[0]), dtype=np.float64)
    fitted = {}
    for k in sorted(np.unique(folds)):
        train, held = folds != k, folds == k
        fitted[k] = fit([p[train] for p in preds], y[train])
        out[held] = fitted[k]([p[held] for p in preds])
    return out, fitted


def constant_prediction(y: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    """A constant for every row: the target mean (regression) or the class prior. One constant
    over all rows (not per fold: pooled per-fold priors drift below AUC 0.5); it is a little
    optimistic for the constant, so the guard errs on the strict side."""
    if task == "multiclass":
        prior = np.bincount(y.astype(int), minlength=n_classes) / len(y)
        return np.tile(prior, (len(y), 1))
    return np.full(len(y), float(np.mean(y)))


class Combiner:
    """Fitted weights, applied to a list of predictions."""

    def __init__(self, weights: np.ndarray):
        self.weights = weights

    def __call__(self, preds: Sequence[np.ndarray]) -> np.ndarray:
        return weighted(preds, self.weights)


def null_spread(y: np.ndarray, pred: np.ndarray, task: str, metric, shuffles: int = 8) -> float:
    """How much a member's score moves by chance: its spread when its predictions are shuffled over
    the rows (no signal left). A member must beat the constant by twice that to count as better:
    pure noise scores near a constant's AUC, a little above or below, by luck."""
    rng = np.random.default_rng(0)
    return float(np.std([metric(y, pred[rng.permutation(len(pred))], task) for _ in range(shuffles)]))


@dataclass
class Ensemble:
    """A run's fitted ensemble: member names, final weights, and the cross-fitted OOF."""

    names: list[str]
    weights: list[float]  # fitted on every OOF row; they make the test predictions and --predict
    method: str  # caruana | mean | fixed | single | best member
    oof: np.ndarray  # cross-fitted OOF predictions (NaN where no member predicted the row)
    member_scores: dict[str, float] = field(default_factory=dict)
    constant_score: float | None = None
    dropped: list[str] = field(default_factory=list)  # members worse than the constant
    fold_weights: dict[str, list[float]] = field(default_factory=dict)  # the weights fold k's rows got
    in_sample: float | None = None  # the final weights' score on every OOF row (optimistic)
    note: str = ""

    def predict(self, preds: dict[str, np.ndarray]) -> np.ndarray:
        """The members' predictions (by name) combined with the final weights."""
        return weighted([preds[n] for n in self.names], self.weights)

    def to_dict(self) -> dict:
        # The weights whole, not rounded: --predict weighs with these and gives the run's own test
        # predictions to the bit (rounded to 6 digits, 5/9 moved them by up to 4e-5 of a price).
        out = {"method": self.method, "weights": {n: float(w) for n, w in zip(self.names, self.weights)},
               "in_sample_cv": self.in_sample, "constant_cv": self.constant_score, "dropped": self.dropped}
        if self.fold_weights:
            out["fold_weights"] = {k: [round(float(w), 6) for w in v] for k, v in self.fold_weights.items()}
        if self.note:
            out["note"] = self.note
        return out

    @staticmethod
    def weights_of(saved: dict) -> dict[str, float]:
        """Member name → weight, from ``to_dict``'s output (ensemble.json)."""
        return {n: float(w) for n, w in saved["weights"].items()}


def fit_ensemble(member_oof: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray, task: str, metric,
                 n_classes: int = 0, cfg=None) -> Ensemble:
    """Weigh a run's members on their OOF predictions (``cfg``: the ensemble section)."""
    names = list(member_oof)
    method, rounds = (cfg.method, cfg.rounds) if cfg is not None else ("caruana", 50)
    first = member_oof[names[0]]
    seen = np.isfinite(first.reshape(len(first), -1)).all(axis=1)
    y_s, folds_s = y[seen], np.asarray(folds)[seen]
    preds = [member_oof[n][seen] for n in names]
    scores = {n: float(metric(y_s, p, task)) for n, p in zip(names, preds)}
    sign = 1.0 if metric.direction == "maximize" else -1.0
    constant = float(metric(y_s, constant_prediction(y_s, task, n_classes), task))
    spread = {n: null_spread(y_s, p, task, metric) for n, p in zip(names, preds)}
    dropped = [n for n in names if sign * scores[n] < sign * constant + 2 * spread[n]]
    for n in dropped:
        log.warning("warning: member %s scores OOF %s %.5g, no better than a constant prediction (%.5g; its own "
                    "predictions shuffled over the rows score within +-%.2g): %s", n, metric.name, scores[n],
                    constant, spread[n], "it keeps the weight ensemble.weights gives it" if method == "fixed"
                    else "it gets weight 0")
    keep = [i for i, n in enumerate(names) if n not in dropped]
    if not keep:
        log.warning("warning: no member scores better than a constant prediction (OOF %s %.5g); the run keeps "
                    "its best member, but its predictions are not to be trusted", metric.name, constant)
        keep = [int(np.argmax([sign * scores[n] for n in names]))]
    best = max(keep, key=lambda i: sign * scores[names[i]])

    def full(sub: np.ndarray) -> list[float]:  # weights over the kept members → over every member
        w = np.zeros(len(names))
        w[keep] = sub
        return w.tolist()

    def result(weights, oof_seen, how, fold_weights=None, note=""):
        oof = np.full(first.shape, np.nan)
        oof[seen] = oof_seen
        in_sample = float(metric(y_s, weighted(preds, weights), task))
        return Ensemble(names, weights, how, oof, scores, constant, dropped, fold_weights or {}, in_sample, note)

    if method == "fixed":
        given = np.array([float(cfg.weights.get(n, 0.0)) for n in names])
        w = (given / given.sum()).tolist()
        return result(w, weighted(preds, w), "fixed")
    if len(keep) == 1:
        w = full([1.0])
        return result(w, preds[keep[0]], "single" if len(names) == 1 else "best member",
                      note="" if len(names) == 1 else "the other members scored no better than a constant")
    kept = [preds[i] for i in keep]
    if method != "mean" and len(np.unique(folds_s)) < 2:
        # One fold predicted (a time limit stopped the rest): no other fold to fit weights on.
        note = f"only one fold predicted, so no weights can be cross-fitted; the run is {names[best]} alone"
        log.info("ensemble: %s", note)
        return result(full([1.0 if i == best else 0.0 for i in keep]), preds[best], "best member", note=note)
    if method == "mean":
        w = full(np.full(len(keep), 1.0 / len(keep)))
        return result(w, weighted(preds, w), "mean")

    def fit(ps, target):
        return Combiner(caruana(ps, target, task, metric, rounds))

    oof_seen, fitted = cross_fit(fit, kept, y_s, folds_s)
    fold_weights = {str(k): full(f.weights) for k, f in fitted.items()}
    w = full(caruana(kept, y_s, task, metric, rounds))
    cv = float(metric(y_s, oof_seen, task))
    if sign * cv < sign * scores[names[best]]:
        note = (f"the cross-fitted ensemble scored {cv:.6g}, below {names[best]} alone ({scores[names[best]]:.6g}); "
                f"the run is {names[best]} alone")
        log.info("ensemble: %s", note)
        one = np.zeros(len(names))
        one[best] = 1.0
        return result(one.tolist(), preds[best], "best member", fold_weights, note)
    return result(w, oof_seen, "caruana", fold_weights)

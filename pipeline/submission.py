"""Predictions in the competition's submission format: the sample submission's columns and id order.

``SubmissionFormat`` is what formatting needs (id column, prediction columns, task, classes,
probabilities or labels). A run keeps it in run.json, so predicting new rows with a finished run
needs none of the competition's files.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SubmissionFormat:
    id: str
    columns: list  # the sample submission's prediction columns
    task: str
    classes: list
    proba: bool  # probabilities (per the config, else the metric) rather than labels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SubmissionFormat":
        return cls(**d)


def format_predictions(fmt: SubmissionFormat, ids, pred: np.ndarray) -> pd.DataFrame:
    """Internal predictions (see metrics.py) → DataFrame[id, submission columns...].

    Label submissions of classification tasks also get ``p_<class>`` probability columns in
    oof.csv and test_pred.csv (not in submission.csv), so later stacking has probabilities.
    """
    cols = fmt.columns
    out = pd.DataFrame({fmt.id: np.asarray(ids)})
    if fmt.task == "regression":
        out[cols[0]] = pred
        return out
    proba = np.column_stack([1 - pred, pred]) if fmt.task == "binary" else pred
    if fmt.proba:
        if len(cols) == 1:  # one column: P(positive class)
            out[cols[0]] = proba[:, -1]
        else:  # one column per class, named by the class label
            by_name = {str(c): i for i, c in enumerate(fmt.classes)}
            for c in cols:
                out[c] = proba[:, by_name[str(c)]] if str(c) in by_name else 0.0
        return out
    out[cols[0]] = np.asarray(fmt.classes, dtype=object)[proba.argmax(axis=1)]
    for i, c in enumerate(fmt.classes):
        out[f"p_{c}"] = proba[:, i]
    return out


def make_submission(data, test_pred: np.ndarray) -> pd.DataFrame:
    """Exactly the sample submission's columns, in its id order."""
    id_col = data.cfg.data.id
    frame = format_predictions(data.submission_format, data.test[id_col], test_pred)[data.sample_submission.columns]
    return frame.set_index(id_col).loc[data.sample_submission[id_col]].reset_index()


def parse_predictions(fmt: SubmissionFormat, frame: pd.DataFrame, source) -> np.ndarray:
    """oof.csv / test_pred.csv rows → internal predictions (the inverse of format_predictions)."""
    from .errors import DataError

    cols = fmt.columns
    if fmt.task == "regression":
        return frame[cols[0]].to_numpy(dtype=np.float64)
    names = [f"p_{c}" for c in fmt.classes]
    if all(n in frame.columns for n in names):
        proba = frame[names].to_numpy(dtype=np.float64)
    elif fmt.task == "binary" and cols[0] in frame.columns:
        return frame[cols[0]].to_numpy(dtype=np.float64)
    elif all(str(c) in map(str, frame.columns) for c in fmt.classes):
        by_str = {str(c): c for c in frame.columns}
        proba = frame[[by_str[str(c)] for c in fmt.classes]].to_numpy(dtype=np.float64)
    else:
        raise DataError(f"{source}: no probability columns for classes {fmt.classes} "
                        f"(expected p_<class> or one column per class).")
    return proba[:, 1] if fmt.task == "binary" else proba

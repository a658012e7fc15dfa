"""Predictions in the competition's submission format: the sample submission's columns and id order."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .data import is_proba_submission


def prediction_columns(data) -> list[str]:
    return [c for c in data.sample_submission.columns if c != data.cfg.data.id]


def format_predictions(data, ids, pred: np.ndarray) -> pd.DataFrame:
    """Internal predictions (see metrics.py) → DataFrame[id, submission columns...].

    Label submissions of classification tasks also get ``p_<class>`` probability columns in
    oof.csv and test_pred.csv (not in submission.csv), so later stacking has probabilities.
    """
    id_col, cols = data.cfg.data.id, prediction_columns(data)
    out = pd.DataFrame({id_col: np.asarray(ids)})
    if data.task == "regression":
        out[cols[0]] = pred
        return out
    proba = np.column_stack([1 - pred, pred]) if data.task == "binary" else pred
    if is_proba_submission(data):
        if len(cols) == 1:  # one column: P(positive class)
            out[cols[0]] = proba[:, -1]
        else:  # one column per class, named by the class label
            by_name = {str(c): i for i, c in enumerate(data.classes)}
            for c in cols:
                out[c] = proba[:, by_name[str(c)]] if str(c) in by_name else 0.0
        return out
    out[cols[0]] = np.asarray(data.classes, dtype=object)[proba.argmax(axis=1)]
    for i, c in enumerate(data.classes):
        out[f"p_{c}"] = proba[:, i]
    return out


def make_submission(data, test_pred: np.ndarray) -> pd.DataFrame:
    """Exactly the sample submission's columns, in its id order."""
    id_col = data.cfg.data.id
    frame = format_predictions(data, data.test[id_col], test_pred)[data.sample_submission.columns]
    return frame.set_index(id_col).loc[data.sample_submission[id_col]].reset_index()


def parse_predictions(data, frame: pd.DataFrame, source) -> np.ndarray:
    """oof.csv / test_pred.csv rows → internal predictions (the inverse of format_predictions)."""
    from .errors import DataError

    cols = prediction_columns(data)
    if data.task == "regression":
        return frame[cols[0]].to_numpy(dtype=np.float64)
    names = [f"p_{c}" for c in data.classes]
    if all(n in frame.columns for n in names):
        proba = frame[names].to_numpy(dtype=np.float64)
    elif data.task == "binary" and cols[0] in frame.columns:
        return frame[cols[0]].to_numpy(dtype=np.float64)
    elif all(str(c) in map(str, frame.columns) for c in data.classes):
        by_str = {str(c): c for c in frame.columns}
        proba = frame[[by_str[str(c)] for c in data.classes]].to_numpy(dtype=np.float64)
    else:
        raise DataError(f"{source}: no probability columns for classes {data.classes} "
                        f"(expected p_<class> or one column per class).")
    return proba[:, 1] if data.task == "binary" else proba

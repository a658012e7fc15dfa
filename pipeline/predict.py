"""``python run.py --predict RUN --input rows.csv [--out preds.csv]`` (``pipeline.predict_file``):
new rows through a finished run's fold models, averaged as the run averaged its test predictions,
written in the run's prediction format (the columns of its test_pred.csv)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .outputs import write_csv
from .runs import Run

log = logging.getLogger("pipeline")


def read_rows(path: Path, run: Run) -> pd.DataFrame:
    """The input CSV, with the id and image columns read as text as the run read them."""
    from .data.read import read_table

    if not path.is_file():
        raise DataError(f"--input {path}: file not found.")
    text = tuple(c for c in (run.cfg.image.column, run.cfg.data.id) if c)
    return read_table(path, "--input", text)


def predict_rows(the_run: Run, input_csv: str | Path | None, out: str | Path | None = None) -> Path:
    """Predict ``input_csv`` with a finished run; returns the written CSV's path."""
    from .logs import console
    from .paths import output_file

    if not input_csv:
        raise ConfigError("--predict needs --input CSV: the rows to predict")
    path = Path(input_csv)
    if out:  # refused before any model is loaded
        output_file(out, "--out", (path,))
    frame = read_rows(path, the_run)
    # Relative image names resolve against the input's folder when the files are there.
    image_dir = path.parent if the_run.cfg.image.column and _images_beside(frame, the_run, path.parent) else None
    preds = the_run.predict(frame, source=f"--input {path}", image_dir=image_dir)
    target = Path(out) if out else path.with_name(path.name.split(".")[0] + ".pred.csv")
    write_csv(preds, output_file(target, "--out" if out else "--predict's default output", (path,)))
    console()
    log.info("predicted %d rows with run %s (%d fold models): %s", len(preds), the_run.name,
             len(the_run.trained_units()), target)
    return target


def _images_beside(frame: pd.DataFrame, run: Run, folder: Path) -> bool:
    first = f"{frame[run.cfg.image.column].iloc[0]}{run.cfg.image.extension}"
    return (folder / first).is_file()


def predict_frame(run: Run, frame: pd.DataFrame, *, source: str = "rows", image_dir: str | Path | None = None):
    """Predictions for new rows, as the run made its test predictions: the mean over every fold
    of its members' predictions weighed by the run's ensemble (image runs average the TTA
    views). Returns a DataFrame in the run's prediction format (id, prediction column(s), and
    ``p_<class>`` for labels)."""
    from .ensemble import weighted
    from .submission import format_predictions

    run.require_finished("predict")
    if run.kind != "train":
        raise ConfigError(f"predict: run {run.name} is a {run.kind} run; it has no fold models. Predict "
                          f"with its member runs.")
    fmt = run.submission_format
    if fmt.id not in frame.columns:
        raise DataError(f"{source}: no id column {fmt.id!r} (data.id of run {run.name}). Add it; the "
                        f"predictions are written by id.")
    _check_rows(run, frame, source)
    images = None
    if run.cfg.image.column:
        from .data.images import image_paths

        col = run.cfg.image.column
        if col not in frame.columns:
            raise DataError(f"{source}: no column {col!r} (image.column of run {run.name}) with the image files.")
        folder = Path(image_dir) if image_dir is not None else _image_dir(run)
        images = image_paths(frame[col].astype(str), folder, run.cfg.image.extension)
    # Each member's mean over the folds, then the run's weights: the order in which the run combined
    # its own test predictions, so that its test rows come back to the bit. One fold loaded at a time.
    per_member, weights = {}, {}
    for unit in run.trained_units():
        artifact = run.artifact(unit)
        weights = artifact.member_weights()
        used = {n for n, w in weights.items() if w > 0}
        for name, pred in artifact.predict_members(frame, images, source=source, only=used).items():
            per_member.setdefault(name, []).append(pred)
    means = {n: np.mean(preds, axis=0) for n, preds in per_member.items()}
    return format_predictions(fmt, frame[fmt.id], weighted(list(means.values()), [weights[n] for n in means]))


def _check_rows(run: Run, frame: pd.DataFrame, source: str) -> None:
    """The rows' ids present and unique, and the run's numeric columns numbers: one error
    naming the row, not a parsing traceback from inside a fold's preprocessing."""
    from .data.load import check_ids, first_non_number

    check_ids(frame[run.submission_format.id], run.submission_format.id, source)
    for col, spec in run.cfg.features.columns.items():
        found = first_non_number(frame[col]) if spec.type == "numeric" and col in frame.columns else None
        if found:
            raise DataError(f"{source}: column {col!r} is numeric in run {run.name}, but row {found[0]} holds "
                            f"{str(found[1])!r}. Fix the value (or leave it empty: missing).")


def _image_dir(run: Run) -> Path:
    base = Path(run.info.get("data_dir") or run.cfg.root)
    return base / run.cfg.image.test_dir

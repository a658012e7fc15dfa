"""``python run.py --predict RUN --input rows.csv [--out preds.csv]`` and ``pipeline.load_run``:
new rows through a finished run's fold models, averaged as the run averaged its test predictions,
written in the run's prediction format (the columns of its test_pred.csv)."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from .errors import ConfigError, DataError
from .outputs import OUTPUT_ROOT, write_csv
from .runs import Run

log = logging.getLogger("pipeline")


def load_run(run: str | Path, output_dir: str | Path | None = None, competition: str | None = None) -> Run:
    """A finished run, to predict with: ``load_run(path).predict(dataframe)``. ``run`` is a run
    folder, or a run name of ``competition`` under ``output_dir`` (default outputs/)."""
    from .paths import is_path

    if output_dir is not None:
        root = Path(output_dir)
    elif is_path(run):  # a folder named in code: its own output root (<root>/<competition>/<run>)
        root = Path(run).resolve().parent.parent
    else:
        root = OUTPUT_ROOT
    return Run.open(run, root, competition, what="--predict").require_finished("predict")


def read_rows(path: Path, run: Run) -> pd.DataFrame:
    """The input CSV, with the id and image columns read as text as the run read them."""
    from .data.load import read_table

    if not path.is_file():
        raise DataError(f"--input {path}: file not found.")
    text = tuple(c for c in (run.cfg.image.column, run.cfg.data.id) if c)
    return read_table(path, "--input", text)


def predict_file(comp, run: str | Path, input_csv: str | Path | None, out: str | Path | None = None, *,
                 output_dir: str | Path | None = None) -> Path:
    """Predict ``input_csv`` with a finished run; returns the written CSV's path."""
    from .config_files import load_config
    from .logs import console

    if not input_csv:
        raise ConfigError("--predict needs --input CSV: the rows to predict")
    from .paths import output_file

    the_run = load_run(run, output_dir if output_dir is not None else OUTPUT_ROOT, load_config(comp).name)
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

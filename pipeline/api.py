"""The Python entry points: each resolves its inputs once (``Setup.resolve``, or ``Run.open``
for a finished run) and hands them to its command, as run.py does for the command line.

    import pipeline
    run = pipeline.fit(train=train_df, test=test_df, target="price", train__epochs=20, cv__folds=5)
    run.scores["cv"], run.oof, run.submission, run.predict(new_rows), run.leaderboard()
    pipeline.run_competition("diamonds", ["train.epochs=5"]); pipeline.tune("diamonds", trials=20)
    pipeline.stack_runs("diamonds", ["run-a", "run-b"]); pipeline.export_run("diamonds", "run-a", ["int8"])
    pipeline.predict_file("diamonds", "run-a", "rows.csv"); pipeline.find_learning_rate("diamonds")

``fit`` is the command line's run with Python arguments: the config may be a dict, a YAML path
or a Config; DataFrames are written once into the output folder (under
``<competition>/inputs/<content hash>/``, so a run folder's fingerprint sees the same files on a
rerun and resume works as on the command line). Errors name this function's parameters.
"""
from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Config
from .config_files import DEFAULT_COMPETITION
from .errors import ConfigError, PipelineError

DEFAULT_NAME = "notebook"  # the competition folder of a run whose config names none

# The library's messages are written once for both front ends and speak of the command line's
# flags; at this boundary they are reworded into this function's parameters.
_FLAG_TO_PARAMETER = {
    "--run-name": "run_name=", "--data-dir": "data_dir=", "--output-dir": "output_dir=",
    "--params": "params=", "--time-limit": "time_limit=", "--comp": "config=", "--submission": "submission=",
    "--set": "fit(**overrides)", "--smoke": "smoke=True",
}


# The files fit() writes for DataFrames and the config fields its parameters set: a message names
# the parameter the user gave, not the inputs/<hash>/ copy or the config key behind it.
_INPUT_FILE = re.compile(r"\S*/inputs/[0-9a-f]{16}/(train|test)\.parquet|\S*/inputs/[0-9a-f]{16}/(sample_submission)\.csv")
_FIELD_TO_PARAMETER = {"data.target": "fit(target=...)", "data.id": "fit(id=...)"}


def _reworded(exc: PipelineError) -> PipelineError:
    text = str(exc)
    for flag, parameter in _FLAG_TO_PARAMETER.items():
        text = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", parameter, text)
    text = _INPUT_FILE.sub(lambda m: f"fit({m.group(1) or m.group(2)}=...)", text)
    for field_name, parameter in _FIELD_TO_PARAMETER.items():
        text = re.sub(rf"(?<![\w.]){re.escape(field_name)}(?![\w])", parameter, text)
    return type(exc)(text)


def fit(train: pd.DataFrame | str | Path | None = None, test: pd.DataFrame | str | Path | None = None, *,
        target: str | None = None, config: dict | str | Path | Config | None = None,
        sample_submission: pd.DataFrame | str | Path | None = None, id: str | None = None,
        name: str | None = None, output_dir: str | Path | None = None, run_name: str | None = None,
        params: str | Path | None = None, time_limit: str | float | None = None, smoke: bool = False,
        submission: str | Path | None = None, **overrides: Any):
    """Train a run with K-fold CV and return it (``pipeline.runs.Run``).

    train, test: DataFrames or paths to CSV / Parquet files. Leave both out to train the files
        that ``config`` names (a competition under competitions/ or a config path).
    target: the target column (the config's ``data.target``); id: the id column (``data.id``,
        default ``id``).
    config: a dict of config sections, a YAML path, a competition name, or a Config.
    sample_submission: its columns shape submission.csv; default: the id and the target column.
    name: the competition's name (its folder under output_dir); default: the config's name, else
        ``notebook``.
    output_dir: the output root (default ``outputs/``; ``/kaggle/working`` in a kernel).
    run_name: a run folder name; the same name resumes an unfinished run and returns a finished
        one as it is.
    params: a YAML overlay (a study's best.yaml). time_limit: seconds, or "90s", "30m", "8h".
    smoke: a few hundred rows, 2 folds, 1 epoch. submission: also copy submission.csv there.
    **overrides: config values by dotted path with ``__`` for the dots, over ``config``:
        ``train__epochs=20, model__hidden=[256], metric="auc"`` (the command line's ``--set``).
    """
    from .runs import Run

    try:
        cfg = _config(train, test, target, config, sample_submission, id, name, output_dir, overrides)
        result = run_competition(cfg, run_name=run_name, output_dir=output_dir, params=params, smoke=smoke,
                                 submission=submission, time_limit=time_limit)
        return Run.open(result.run_dir)
    except PipelineError as exc:
        raise _reworded(exc) from None
    except RecursionError:
        raise ConfigError("fit(config=...): values are nested too deeply (thousands of levels). Give a config of "
                          "sections and values.") from None


def run_competition(comp: str | Path | Config = DEFAULT_COMPETITION, overrides=None, *, run_name: str | None = None,
                    data_dir: str | Path | None = None, output_dir: str | Path | None = None,
                    params: str | Path | None = None, smoke: bool = False,
                    submission: str | Path | None = None, time_limit=None):
    """Run K-fold CV for a competition and write its outputs (``python run.py``); returns a
    runner.RunResult (scores, run_dir, files).

    comp: a name under competitions/, a config path or a Config. overrides: ``["train.epochs=2", ...]``
    or a dict of dotted keys. params: a YAML overlay (a study's best.yaml). data_dir / output_dir:
    replace the config's data folder and ``outputs/`` (e.g. /kaggle/input/<comp> and
    /kaggle/working). run_name: reuse one to resume a killed run; a finished run is returned as it is.
    submission: also copy submission.csv there; in a Kaggle kernel (/kaggle/working exists) it is
    copied to <output_dir>/submission.csv by default, where Kaggle looks for it.
    time_limit: a wall-clock budget (seconds, or "90s", "30m", "8h", or a TimeBudget) for this call:
    folds and epochs are cut so that it ends with a submission in time (time_budget.py).
    """
    from .runner import train
    from .setup import Setup
    from .time_budget import TimeBudget, parse_duration

    budget = time_limit if isinstance(time_limit, TimeBudget) or time_limit is None else \
        TimeBudget(parse_duration(time_limit))  # the clock starts before the data is read
    setup = Setup.resolve(comp, overrides, params, data_dir=data_dir, output_dir=output_dir, smoke=smoke)
    return train(setup, run_name=run_name, submission=submission, budget=budget)


def tune(comp: str | Path | Config = DEFAULT_COMPETITION, overrides=None, *, trials: int | None = None,
         timeout: float | None = None, study: str | None = None, storage: str | None = None,
         jobs: int | None = None, data_dir=None, output_dir=None, params=None, smoke: bool = False) -> dict:
    """Run (or continue) an Optuna study on the competition's CV (``--tune``); returns its summary.
    ``params``: a YAML overlay that is the base of every trial's config; ``smoke``: every trial
    smoke-sized (400 rows, 2 folds, 1 epoch), to check a whole study path in a minute."""
    from .setup import Setup
    from .tuning.study import run_study

    setup = Setup.resolve(comp, overrides, params, data_dir=data_dir, output_dir=output_dir, smoke=smoke)
    return run_study(setup, trials=trials, timeout=timeout, study=study, storage=storage, jobs=jobs)


def stack_runs(comp: str | Path | Config = DEFAULT_COMPETITION, runs: list[str] | None = None, *,
               methods: list[str] | None = None, run_name: str | None = None, data_dir=None, output_dir=None,
               overrides=None, params=None):
    """Stack finished runs of a competition (``--stack RUN ...``; default: stack.runs); returns a
    runner.RunResult like a training run."""
    from .setup import Setup
    from .stacking.stack import open_members, stack

    setup = Setup.resolve(comp, overrides, params, data_dir=data_dir, output_dir=output_dir)
    return stack(setup, open_members(setup, runs), methods=methods, run_name=run_name)


def export_run(comp: str | Path | Config = DEFAULT_COMPETITION, run: str | Path | None = None, artifacts=None, *,
               overrides=None, data_dir=None, output_dir=None) -> Path:
    """Write ``<run>/export/`` (TFLite artifacts and their report) for a finished run: a name of
    ``comp``'s runs, or a run folder. ``overrides`` may change ``export.*`` only."""
    from .errors import ConfigError
    from .export.run import check_artifacts, export
    from .setup import Setup

    setup = Setup.resolve(comp, overrides, data_dir=data_dir, output_dir=output_dir)  # checked before a run opens
    check_artifacts(artifacts or [], "--export")
    if not run:
        raise ConfigError("--export needs a finished run: --export-run RUN (or train one with --run-name and --export)")
    the_run = setup.open_run(run, "--export-run").require_finished("--export-run")
    return export(the_run, artifacts, overrides=overrides, data_dir=setup.data_dir)


def predict_file(comp: str | Path | Config, run: str | Path, input_csv: str | Path | None,
                 out: str | Path | None = None, *, output_dir: str | Path | None = None) -> Path:
    """Predict ``input_csv`` with a finished run (``--predict RUN --input CSV``); returns the
    written CSV's path."""
    from .predict import predict_rows
    from .setup import Setup

    setup = Setup.resolve(comp, output_dir=output_dir, writable=False)
    return predict_rows(setup.open_run(run, "--predict").require_finished("predict"), input_csv, out)


def find_learning_rate(comp: str | Path | Config = DEFAULT_COMPETITION, overrides=None, *, data_dir=None,
                       output_dir=None, params=None):
    """The LR range test (``--lr-find``): returns (suggested LR, the curve's PNG)."""
    from .runner import lr_find_command
    from .setup import Setup

    return lr_find_command(Setup.resolve(comp, overrides, params, data_dir=data_dir, output_dir=output_dir))


def load_run(run: str | Path, output_dir: str | Path | None = None, competition: str | None = None):
    """A finished run, to predict with: ``load_run(path).predict(dataframe)``. ``run`` is a run
    folder, or a run name of ``competition`` under ``output_dir`` (default outputs/)."""
    from .outputs import output_root
    from .paths import is_path
    from .runs import Run

    if output_dir is None and is_path(run):  # a folder named in code: its own root (<root>/<competition>/<run>)
        root = Path(run).resolve().parent.parent
    else:
        root = output_root(output_dir, writable=False)
    return Run.open(run, root, competition, what="--predict").require_finished("predict")


def _config(train, test, target, config, sample_submission, id_col, name, output_dir, overrides) -> Config:
    from .config_files import apply_overrides, competition_name, config_from_dict, resolve

    raw, path = _base_config(config)
    if overrides:
        raw = apply_overrides(raw, {k.replace("__", "."): v for k, v in overrides.items()}, "fit(**overrides)")
    data = raw.setdefault("data", {})
    if target is not None:
        data["target"] = target
    if id_col is not None:
        data["id"] = id_col
    if name is not None:
        raw["name"] = name
    elif not raw.get("name"):
        raw["name"] = competition_name(path, raw) if path is not None else DEFAULT_NAME
    if train is None and test is None:  # the files the config names
        return resolve(raw, str(path) if path is not None else "fit(config=...)", path)
    if train is None or test is None:
        missing = "train" if train is None else "test"
        raise ConfigError(f"fit({missing}=...): missing; give both train and test (DataFrames or CSV/Parquet paths).")
    if not data.get("target"):
        raise ConfigError("fit(target=...): name the target column (or set data.target in config).")
    folder = _write_inputs(raw, train, test, sample_submission, output_dir)
    data.update(dir=str(folder), train=_file_name(train, "train"), test=_file_name(test, "test"),
                sample_submission="sample_submission.csv", solution=None)
    return config_from_dict(raw, folder)


def _base_config(config) -> tuple[dict, Path | None]:
    from .config_files import find_config, read_yaml

    if config is None:
        return {}, None
    if isinstance(config, Config):
        return config.to_dict(), config.path
    if isinstance(config, dict):
        return copy.deepcopy(config), None
    if isinstance(config, (str, Path)):
        path = find_config(str(config))
        return read_yaml(path), path
    raise ConfigError(f"fit(config=...): expected a dict, a YAML path or a Config, got {type(config).__name__}.")


def _frame(value, what: str) -> pd.DataFrame:
    if isinstance(value, pd.DataFrame):
        repeated = sorted({str(c) for c in value.columns[value.columns.duplicated()]})
        if repeated:
            raise ConfigError(f"fit({what}=...): column name(s) {repeated[:5]} appear more than once. Rename them so "
                              f"each column has its own name.")
        return value
    from .data.read import read_table

    return read_table(Path(value), f"fit({what}=...)")


def _file_name(value, what: str) -> str:
    """A DataFrame's file in the inputs folder, or the given file's absolute path (never copied)."""
    return f"{what}.parquet" if isinstance(value, pd.DataFrame) else str(Path(value).resolve())


def _frame_hash(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _write_inputs(raw: dict, train, test, sample, output_dir) -> Path:
    """The folder holding this call's data files: DataFrames as Parquet, and a sample submission
    made from the test ids when none is given. Named by the content, so the same rows give the
    same folder (and the same fingerprint) on every call."""
    from .outputs import atomic_path, output_root
    from .paths import check_name

    id_col, target = raw["data"].get("id", "id"), raw["data"]["target"]
    if isinstance(train, pd.DataFrame):
        _frame(train, "train")  # checked before it is hashed and written
    test_df = _frame(test, "test")
    if id_col not in test_df.columns:
        raise ConfigError(f"fit(test=...): no id column {id_col!r}. Name the id column with id=..., or add one.")
    if sample is None:
        sample_df = pd.DataFrame({id_col: test_df[id_col], target: 0})
    else:
        sample_df = _frame(sample, "sample_submission")
    h = hashlib.sha256()
    for value in (train, test_df, sample_df):
        h.update((_frame_hash(value) if isinstance(value, pd.DataFrame) else str(Path(value).resolve())).encode())
    root = output_root(output_dir)
    folder = root / check_name(raw["name"], "fit(name=...)") / "inputs" / h.hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    files = {"sample_submission.csv": sample_df}
    for what, value in (("train", train), ("test", test)):
        if isinstance(value, pd.DataFrame):
            files[f"{what}.parquet"] = value
    for file_name, df in files.items():
        target_path = folder / file_name
        if target_path.is_file():  # written by an earlier call with the same content
            continue
        with atomic_path(target_path) as tmp:
            if file_name.endswith(".parquet"):
                _check_parquet_columns(df, file_name)
                df.to_parquet(tmp, index=False)
            else:
                df.to_csv(tmp, index=False)
    return folder


def _check_parquet_columns(df: pd.DataFrame, file_name: str) -> None:
    bad = [c for c in df.columns if not isinstance(c, str)]
    if bad:
        what = file_name.split(".")[0]
        raise ConfigError(f"fit({what}=...): column names must be text, got {bad[:3]}. Rename them "
                          f"(df.columns = df.columns.astype(str)).")

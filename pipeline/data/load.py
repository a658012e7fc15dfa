"""Load a competition's files (Kaggle layout) and check them against the config before training.

``load_competition`` reads train/test/sample_submission (and solution when present), infers what the
config leaves open (task, metric, CV scheme, column types), and raises one DataError per problem,
naming the file, the column or config field, and the fix. Nothing is trained on data that failed a
check.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..config import Config, validate
from ..errors import DataError
from ..metrics import DEFAULT_METRIC, METRICS, get_metric
from ..preprocessing.categorical import ENCODERS
from ..preprocessing.numeric import SCALERS

_POSITIVE_NAMES = ("1", "true", "yes", "y", "positive", "pos")


@dataclass
class CompetitionData:
    """Everything the CV loop needs, checked and aligned."""

    cfg: Config  # resolved: task, metric, cv.scheme and every column's type filled in
    train: pd.DataFrame
    test: pd.DataFrame
    sample_submission: pd.DataFrame
    solution: Optional[pd.DataFrame]
    y: np.ndarray  # regression: float; classification: class index
    classes: list = field(default_factory=list)  # classification: label of each index
    columns: dict[str, dict] = field(default_factory=dict)  # feature → preprocessing plan
    paths: dict[str, Path] = field(default_factory=dict)
    images: Optional[dict[str, np.ndarray]] = None  # "train" / "test" → image file paths, row-aligned

    @property
    def task(self) -> str:
        return self.cfg.task

    @property
    def submission_format(self):
        """How predictions are written (submission.py): columns, classes, probabilities or labels."""
        from ..submission import SubmissionFormat

        proba = False
        if self.task != "regression":
            proba = (self.cfg.data.submission == "proba" if self.cfg.data.submission != "auto"
                     else METRICS.get(self.cfg.metric).needs_proba)
        columns = [c for c in self.sample_submission.columns if c != self.cfg.data.id]
        return SubmissionFormat(self.cfg.data.id, columns, self.task, list(self.classes), proba)


def data_dir(cfg: Config, override: str | Path | None = None) -> Path:
    if override is not None:
        return Path(override)
    d = Path(cfg.data.dir)
    return d if d.is_absolute() else cfg.root / d


def read_table(path: Path, field_name: str, text_columns: tuple = ()) -> pd.DataFrame:
    """A CSV (or .csv.gz) with ``text_columns`` kept as text; one DataError if it cannot be read."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (config field {field_name}). "
                        f"Put the file there, fix {field_name}, or pass --data-dir.")
    try:
        # Image names such as 00042 must stay text, or they would lose their zeros.
        df = pd.read_csv(path, dtype={c: str for c in text_columns} or None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as CSV ({first}). Check the file.") from None
    if df.empty:
        raise DataError(f"{path}: has no rows.")
    return df


def _need_column(df: pd.DataFrame, col: str, path: Path, field_name: str) -> None:
    if col not in df.columns:
        near = difflib.get_close_matches(str(col), [str(c) for c in df.columns], n=3)
        hint = f" Did you mean: {', '.join(near)}?" if near else f" Columns: {list(df.columns)[:20]}"
        raise DataError(f"{path}: no column {col!r} ({field_name}).{hint}")


def _unique_ids(df: pd.DataFrame, id_col: str, path: Path) -> None:
    dup = df[id_col].duplicated()
    if dup.any():
        raise DataError(f"{path}: {int(dup.sum())} duplicated ids in {id_col!r} "
                        f"(first: {df[id_col][dup].iloc[0]!r}). Ids must be unique.")


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _check_numeric(s: pd.Series, path: Path, col: str) -> None:
    if _is_numeric(s):
        return
    coerced = pd.to_numeric(s, errors="coerce")
    bad = coerced.isna() & s.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: column {col!r} is numeric but row {row + 2} holds {s[bad].iloc[0]!r}. "
                        f"Fix the value, or declare it with features.columns.{col}.type=categorical.")


def _infer_task(y: pd.Series) -> str:
    if not _is_numeric(y) or y.nunique() <= 2:
        return "binary" if y.nunique() <= 2 else "multiclass"
    values = y.to_numpy(dtype=float)
    integer = np.all(np.mod(values, 1) == 0)
    return "multiclass" if integer and y.nunique() <= 10 else "regression"


def _positive_label(classes: list, given: Any, path: Path, target: str):
    if given is not None:
        for c in classes:
            if c == given or str(c) == str(given):
                return c
        raise DataError(f"{path}: data.positive_label {given!r} is not a value of {target!r}: {classes}")
    for c in classes:
        if str(c).lower() in _POSITIVE_NAMES:
            return c
    return classes[-1]


def _resolve_features(cfg: Config, train: pd.DataFrame, paths: dict) -> list[str]:
    reserved = {cfg.data.id, cfg.data.target, cfg.cv.group, cfg.image.column}
    for name in list(cfg.features.columns) + list(cfg.features.drop) + list(cfg.features.include or []):
        if name not in train.columns:
            _need_column(train, name, paths["train"], f"features: {name}")
    names = cfg.features.include or [c for c in train.columns if c not in reserved]
    return [c for c in names if c not in set(cfg.features.drop) and c not in reserved]


def load_competition(cfg: Config, data_dir_override: str | Path | None = None) -> CompetitionData:
    """Read and check the files; return the data with a resolved config. Each step below raises
    one DataError naming the file, the column or field, and the fix."""
    base = data_dir(cfg, data_dir_override)
    paths, (train, test, sample, solution) = _read_files(cfg, base)
    _check_ids_and_target(cfg, train, test, sample, paths)
    task, y, classes = _encode_target(cfg, train[cfg.data.target], paths["train"])
    metric, scheme = _scoring(cfg, task)
    images = _image_files(cfg, base, train, test, paths) if cfg.image.column else None
    columns = _plan_columns(cfg, train, test, paths, images)
    _check_submission_files(cfg, sample, solution, test, task, classes, paths)
    rcfg = _resolved_config(cfg, task, metric, scheme, columns)
    return CompetitionData(rcfg, train, test, sample, solution, y, classes, columns, paths, images)


def _read_files(cfg: Config, base: Path) -> tuple[dict, tuple]:
    d = cfg.data
    paths = {"train": base / d.train, "test": base / d.test, "sample_submission": base / d.sample_submission}
    text = tuple(c for c in (cfg.image.column,) if c) + ((d.id,) if cfg.image.column else ())
    train = read_table(paths["train"], "data.train", text)
    test = read_table(paths["test"], "data.test", text)
    sample = read_table(paths["sample_submission"], "data.sample_submission", text[-1:])
    solution = None
    if d.solution and (base / d.solution).is_file():
        paths["solution"] = base / d.solution
        solution = read_table(paths["solution"], "data.solution", text[-1:])
    return paths, (train, test, sample, solution)


def _check_ids_and_target(cfg: Config, train, test, sample, paths: dict) -> None:
    d = cfg.data
    for key, df in (("train", train), ("test", test)):
        _need_column(df, d.id, paths[key], "data.id")
    _need_column(sample, d.id, paths["sample_submission"], "data.id")
    _unique_ids(train, d.id, paths["train"])
    _unique_ids(test, d.id, paths["test"])
    _need_column(train, d.target, paths["train"], "data.target")
    target = train[d.target]
    if target.isna().all():
        raise DataError(f"{paths['train']}: target {d.target!r} is empty in every row.")
    if target.isna().any():
        raise DataError(f"{paths['train']}: target {d.target!r} is missing in {int(target.isna().sum())} "
                        f"rows (first id {train[d.id][target.isna()].iloc[0]!r}). Drop or fill those rows.")
    if target.nunique() < 2:
        raise DataError(f"{paths['train']}: target {d.target!r} has a single value "
                        f"({target.iloc[0]!r}); there is nothing to learn.")
    if cfg.cv.group is not None:
        _need_column(train, cfg.cv.group, paths["train"], "cv.group")


def _encode_target(cfg: Config, target: pd.Series, path: Path) -> tuple[str, np.ndarray, list]:
    """The task (given or inferred), the encoded target and the classes (positive class last)."""
    d = cfg.data
    task = cfg.task or _infer_task(target)
    if task == "regression":
        _check_numeric(target, path, d.target)
        y = pd.to_numeric(target).to_numpy(dtype=np.float64)
        if cfg.preprocessing.target_log1p and (y <= -1).any():
            raise DataError(f"{path}: preprocessing.target_log1p needs targets > -1, "
                            f"{d.target!r} has {y.min()!r}. Turn it off.")
        return task, y, []
    classes = sorted(pd.unique(target).tolist(), key=lambda v: (str(type(v)), v))
    if task == "binary":
        if len(classes) != 2:
            raise DataError(f"{path}: task binary needs 2 target values, {d.target!r} has "
                            f"{len(classes)}: {classes[:10]}. Set task: multiclass.")
        pos = _positive_label(classes, d.positive_label, path, d.target)
        classes = [c for c in classes if c != pos] + [pos]
    if d.classes is not None:
        declared = {str(c): c for c in d.classes}
        outside = sorted({str(c) for c in classes} - set(declared))
        if outside:
            raise DataError(f"{path}: target {d.target!r} has labels {outside[:5]} outside "
                            f"data.classes {list(d.classes)}. Fix the labels or the declared classes.")
        if task == "multiclass":  # the declared order, matched to the file's values
            by_str = {str(c): c for c in classes}
            classes = [by_str[str(c)] for c in d.classes if str(c) in by_str]
    index = {c: i for i, c in enumerate(classes)}
    return task, target.map(index).to_numpy(dtype=np.int64), classes


def _scoring(cfg: Config, task: str) -> tuple[str, str]:
    """The metric (default per task) and the CV scheme ("auto" resolved)."""
    metric = cfg.metric or DEFAULT_METRIC[task]
    get_metric(metric, task)
    scheme = cfg.cv.scheme
    if scheme == "auto":
        scheme = "stratified" if task != "regression" else "kfold"
        if cfg.cv.group is not None:
            scheme = "stratified_group" if task != "regression" else "group"
    if scheme in ("group", "stratified_group") and cfg.cv.group is None:
        raise DataError(f"cv.scheme {scheme} needs cv.group, the column that holds each row's group.")
    return metric, scheme


def _image_files(cfg: Config, base: Path, train, test, paths: dict) -> dict[str, np.ndarray]:
    from .images import check_images, image_paths  # TensorFlow loads only for image competitions

    col = cfg.image.column
    images = {}
    for key, df, folder in (("train", train, cfg.image.train_dir), ("test", test, cfg.image.test_dir)):
        _need_column(df, col, paths[key], "image.column")
        if df[col].isna().any():
            raise DataError(f"{paths[key]}: image column {col!r} is empty in {int(df[col].isna().sum())} rows.")
        images[key] = image_paths(df[col], base / folder, cfg.image.extension)
        check_images(images[key], paths[key], col)
    return images


def _plan_columns(cfg: Config, train, test, paths: dict, images) -> dict[str, dict]:
    """Each feature's preprocessing plan (type, and the per-column overrides), after applying the
    declared missing values and checking the columns against test."""
    features = _resolve_features(cfg, train, paths)
    if not features and images is None:
        raise DataError(f"{paths['train']}: no feature columns are left after excluding id, target and "
                        f"features.drop.")
    missing_in_test = [c for c in features if c not in test.columns]
    if missing_in_test:
        raise DataError(f"{paths['test']}: lacks training feature(s) {missing_in_test}. "
                        f"Add them or list them in features.drop.")
    for col, spec in cfg.features.columns.items():
        if spec.missing_values:
            for df in (train, test):
                df[col] = df[col].mask(df[col].isin(spec.missing_values))
    columns = {}
    for col in features:
        spec = cfg.features.columns.get(col)
        if train[col].isna().all():
            raise DataError(f"{paths['train']}: column {col!r} is missing in every row. "
                            f"Drop it with features.drop=[{col}].")
        kind = (spec.type if spec and spec.type else
                ("numeric" if _is_numeric(train[col]) else "categorical"))
        if kind == "numeric":
            _check_numeric(train[col], paths["train"], col)
            _check_numeric(test[col], paths["test"], col)
        plan = {"type": kind}
        if spec:
            plan.update({k: v for k, v in spec.model_dump().items()
                         if k in ("scaler", "encoder", "order", "embedding_dim") and v is not None})
        if plan.get("order"):
            unknown = set(train[col].dropna().astype(str)) - {str(v) for v in plan["order"]}
            if unknown:
                raise DataError(f"{paths['train']}: column {col!r} has values {sorted(unknown)[:5]} not in "
                                f"features.columns.{col}.order. Add them to the order.")
        for key, registry in (("scaler", SCALERS), ("encoder", ENCODERS)):
            if key in plan:
                registry.get(plan[key], f"features.columns.{col}.{key}")
        columns[col] = plan
    return columns


def _check_submission_files(cfg: Config, sample, solution, test, task: str, classes: list, paths: dict) -> None:
    """The sample submission and the solution line up with test, and their columns fit the task."""
    d = cfg.data
    test_ids = pd.Index(test[d.id])
    for key, df in (("sample_submission", sample), ("solution", solution)):
        if df is None:
            continue
        ids = pd.Index(df[d.id])
        if len(ids) != len(test_ids) or not ids.isin(test_ids).all():
            extra = ids.difference(test_ids)
            lacking = test_ids.difference(ids)
            raise DataError(f"{paths[key]}: ids do not match {paths['test'].name}: {len(extra)} not in test "
                            f"(e.g. {list(extra[:3])}), {len(lacking)} test ids absent "
                            f"(e.g. {list(lacking[:3])}). Use the sample submission of this test set.")
    if solution is not None:
        _need_column(solution, d.target, paths["solution"], "data.target")
    pred_cols = [c for c in sample.columns if c != d.id]
    if not pred_cols:
        raise DataError(f"{paths['sample_submission']}: has only the id column; expected prediction column(s).")
    if len(pred_cols) > 1:
        names = {str(c) for c in classes}
        if task != "multiclass" or set(map(str, pred_cols)) != names:
            raise DataError(f"{paths['sample_submission']}: prediction columns {pred_cols[:10]} do not fit a "
                            f"{task} task" + (f" with classes {sorted(names)}" if task == "multiclass" else "")
                            + ". Expected one column, or one column per class.")


def _resolved_config(cfg: Config, task: str, metric: str, scheme: str, columns: dict) -> Config:
    """The config with everything inferred written in: what the run saves as config.yaml."""
    resolved = cfg.to_dict()
    if cfg.model.weights:  # relative to the config's folder, checked before any training
        weights = Path(cfg.model.weights)
        weights = weights if weights.is_absolute() else cfg.root / weights
        if not weights.is_file():
            raise DataError(f"model.weights {cfg.model.weights}: file not found (looked at {weights}). "
                            f"Attach the backbone's weights file and set model.weights to its path.")
        resolved["model"]["weights"] = str(weights)
    resolved.update(task=task, metric=metric)
    resolved["cv"]["scheme"] = scheme
    cols = resolved["features"]["columns"]
    for col, plan in columns.items():
        cols.setdefault(col, {})["type"] = plan["type"]
    rcfg = validate(resolved, str(cfg.path or "config"))
    rcfg._path = cfg.path
    return rcfg

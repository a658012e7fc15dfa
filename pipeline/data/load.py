"""Load a competition's files (Kaggle layout) and check them against the config before training.

``load_competition`` reads train/test/sample_submission (and solution when present; read.py),
cleans them in place (surrounding spaces, declared missing values, numbers with a few tokens),
checks them, encodes the target and plans each column, then hands what the data says to
infer.py, which writes the inferred settings into the resolved config. One DataError per
problem, naming the file, the column or config field, and the fix. Nothing is trained on data
that failed a check.
"""
from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import ConfigError, DataError
from ..metrics import METRICS
from ..preprocessing.categorical import ENCODERS
from ..preprocessing.numeric import SCALERS
from .infer import is_numeric, resolved_config, scoring, task_and_reason
from .read import data_dir, lean_memory, read_files, read_table

__all__ = ["CompetitionData", "load_competition", "data_dir", "read_table", "check_ids", "first_non_number",
           "narrow_dtypes"]

_POSITIVE_NAMES = ("1", "true", "yes", "y", "positive", "pos")
log = logging.getLogger("pipeline")


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
    # Why each inference was made and what was changed while reading (profile.py reports them).
    notes: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.cfg.task

    def holdout(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the test set, encoded labels) of the solution file's scored rows."""
        id_col, sol = self.cfg.data.id, self.solution
        if "Usage" in sol.columns:  # Kaggle solution files mark rows to ignore
            sol = sol[sol["Usage"] != "Ignored"]
        pos = pd.Series(np.arange(len(self.test)), index=self.test[id_col].astype(str)).loc[
            sol[id_col].astype(str)].to_numpy()
        return pos, self._encode_labels(sol[self.cfg.data.target], self.paths["solution"])

    def _encode_labels(self, values: pd.Series, path) -> np.ndarray:
        if self.task == "regression":
            y = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(y)
            if bad.any():
                raise DataError(f"{path}: target {self.cfg.data.target!r} holds {values[bad].iloc[0]!r}, not a finite "
                                f"number ({int(bad.sum())} rows). Fix the held-out labels.")
            return y
        index = {str(c): i for i, c in enumerate(self.classes)}
        unknown = sorted(set(values.astype(str)) - set(index))
        if unknown:
            raise DataError(f"{path}: labels {unknown[:5]} are not classes of the training target {self.classes}.")
        return values.astype(str).map(index).to_numpy(dtype=np.int64)

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


def _need_column(df: pd.DataFrame, col: str, path: Path, field_name: str) -> None:
    if col not in df.columns:
        near = difflib.get_close_matches(str(col), [str(c) for c in df.columns], n=3)
        hint = f" Did you mean: {', '.join(near)}?" if near else f" Columns: {list(df.columns)[:20]}"
        raise DataError(f"{path}: no column {col!r} ({field_name}).{hint}")


def check_ids(ids: pd.Series, id_col: str, path) -> None:
    """Every id present and unique; errors name the file's row (its header is row 1)."""
    blank = ids.isna() | (ids.astype(str).str.strip() == "")
    if blank.any():
        row = int(np.flatnonzero(blank.to_numpy())[0])
        raise DataError(f"{path}: id column {id_col!r} is blank in {int(blank.sum())} row(s) (first: row "
                        f"{row + 2}). Give every row its id.")
    dup = ids.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: {int(dup.sum())} duplicated id(s) in {id_col!r} (first: {ids[dup].iloc[0]!r} "
                        f"at row {row + 2}). Ids must be unique.")


def first_non_number(s: pd.Series) -> tuple[int, Any] | None:
    """(row in the file, counting the header as row 1; the value) of the first present value
    that is not a number, or None."""
    if is_numeric(s):
        return None
    bad = pd.to_numeric(s, errors="coerce").isna() & s.notna()
    if not bad.any():
        return None
    return int(np.flatnonzero(bad.to_numpy())[0]) + 2, s[bad].iloc[0]


def _check_numeric(s: pd.Series, path: Path, col: str) -> None:
    found = first_non_number(s)
    if found:
        raise DataError(f"{path}: column {col!r} is numeric but row {found[0]} holds {found[1]!r}. "
                        f"Fix the value, or declare it with features.columns.{col}.type=categorical.")


def _positive_label(classes: list, given: Any, path: Path, target: str):
    if isinstance(given, bool) and not any(isinstance(c, (bool, np.bool_)) or str(c) == str(given) for c in classes):
        raise DataError(f"{path}: data.positive_label was read as the YAML boolean {str(given).lower()} (YAML reads "
                        f"Yes/No/On/Off unquoted as booleans), and {target!r} holds {classes}. Quote the label in the "
                        f"config: positive_label: '{classes[-1]}'.")
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
    with lean_memory():
        return _load(cfg, data_dir(cfg, data_dir_override))


def _load(cfg: Config, base: Path) -> CompetitionData:
    paths, (train, test, sample, solution) = read_files(cfg, base)
    notes = {"stripped": _strip_text(cfg, train, test, solution)}
    _check_ids_and_target(cfg, train, test, sample, paths)
    task, why = task_and_reason(cfg, train[cfg.data.target])
    notes["task"] = {"task": task, "why": why}
    y, classes = _encode_target(cfg, task, train[cfg.data.target], paths["train"], notes)
    metric, scheme = scoring(cfg, task)
    images = _image_files(cfg, base, train, test, paths) if cfg.image.column else None
    columns = _plan_columns(cfg, train, test, paths, images, notes)
    narrow_dtypes((train, test), columns)
    _check_submission_files(cfg, sample, solution, test, task, classes, paths)
    rcfg = resolved_config(cfg, task, metric, scheme, columns, y, images)
    data = CompetitionData(rcfg, train, test, sample, solution, y, classes, columns, paths, images, notes)
    if solution is not None:
        data.holdout()  # pre-flight: a bad solution file fails now, not after every fold has trained
    return data


def _strip_text(cfg: Config, train, test, solution) -> dict[str, int]:
    """Text values lose surrounding whitespace (" yes" and "yes" are one label, one category).
    Ids and image names are kept as written. Returns column → number of values changed."""
    keep = {cfg.data.id, cfg.image.column}
    changed = {}
    for df in (train, test, solution):
        if df is None:
            continue
        for col in df.columns:
            if col in keep or not (pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col])):
                continue
            # A string column holds only text; an object column may mix in numbers, which keep.
            text = df[col] if not pd.api.types.is_object_dtype(df[col]) else df[col].where(
                df[col].map(lambda v: isinstance(v, str)))
            stripped = text.str.strip()
            diff = int((text.notna() & (stripped != text)).sum())
            if diff:
                df[col] = df[col].where(text.isna(), stripped)
                changed[str(col)] = changed.get(str(col), 0) + diff
    if changed:
        log.warning("stripped surrounding whitespace from text values: %s",
                    ", ".join(f"{c} ({n} values)" for c, n in changed.items()))
    return changed


def _check_ids_and_target(cfg: Config, train, test, sample, paths: dict) -> None:
    d = cfg.data
    if d.target == d.id:
        raise ConfigError(f"{cfg.path or 'config'}: data.target and data.id are both {d.id!r}; the target is the "
                          f"column to predict, the id names each row. Set data.target to the column to predict.")
    for key, df in (("train", train), ("test", test)):
        _need_column(df, d.id, paths[key], "data.id")
    _need_column(sample, d.id, paths["sample_submission"], "data.id")
    for key, df in (("train", train), ("test", test), ("sample_submission", sample)):
        check_ids(df[d.id], d.id, paths[key])
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


def _encode_target(cfg: Config, task: str, target: pd.Series, path: Path, notes: dict) -> tuple[np.ndarray, list]:
    """The encoded target and the classes (positive class last)."""
    d = cfg.data
    if task == "regression":
        _check_numeric(target, path, d.target)
        y = pd.to_numeric(target).to_numpy(dtype=np.float64)
        if not np.isfinite(y).all():
            bad = int((~np.isfinite(y)).sum())
            raise DataError(f"{path}: target {d.target!r} is infinite in {bad} row(s) (first: row "
                            f"{int(np.flatnonzero(~np.isfinite(y))[0]) + 2}). Drop or fix those rows.")
        if cfg.preprocessing.target_log1p is True and (y <= -1).any():
            raise DataError(f"{path}: preprocessing.target_log1p needs targets > -1, "
                            f"{d.target!r} has {y.min()!r}. Turn it off.")
        return y, []
    classes = sorted(pd.unique(target).tolist(), key=lambda v: (str(type(v)), v))
    _same_but_case(classes, path, d.target)
    if task == "binary":
        if len(classes) != 2:
            raise DataError(f"{path}: task binary needs 2 target values, {d.target!r} has "
                            f"{len(classes)}: {classes[:10]}. Set task: multiclass.")
        pos = _positive_label(classes, d.positive_label, path, d.target)
        classes = [c for c in classes if c != pos] + [pos]
        why = ("data.positive_label" if d.positive_label is not None else "a name that means positive (1, true, "
               "yes, ...)" if str(pos).lower() in _POSITIVE_NAMES else "the last of the sorted values")
        notes["positive"] = {"label": pos, "why": why}
    if d.classes is not None:
        booleans = [c for c in d.classes if isinstance(c, bool)]
        if booleans and not any(isinstance(c, (bool, np.bool_)) for c in classes):
            raise DataError(f"{path}: data.classes holds the YAML boolean(s) {booleans} (YAML reads Yes/No unquoted as "
                            f"booleans); {d.target!r} holds {classes[:10]}. Quote them in the config.")
        declared = {str(c): c for c in d.classes}
        outside = sorted({str(c) for c in classes} - set(declared))
        if outside:
            raise DataError(f"{path}: target {d.target!r} has labels {outside[:5]} outside "
                            f"data.classes {list(d.classes)}. Fix the labels or the declared classes.")
        if task == "multiclass":  # the declared order, matched to the file's values
            by_str = {str(c): c for c in classes}
            classes = [by_str[str(c)] for c in d.classes if str(c) in by_str]
    index = {c: i for i, c in enumerate(classes)}
    return target.map(index).to_numpy(dtype=np.int64), classes


def _same_but_case(classes: list, path: Path, target: str) -> None:
    """Labels that differ only in case ("Yes", "yes") are refused: merging them would guess what the
    file means, keeping them would train two classes for one. (Surrounding spaces were already
    stripped, with a line saying so: " yes" and "yes" are one label.)"""
    seen: dict[str, list] = {}
    for c in classes:
        seen.setdefault(str(c).strip().casefold(), []).append(c)
    clash = next((v for v in seen.values() if len(v) > 1), None)
    if clash:
        raise DataError(f"{path}: target {target!r} holds labels {', '.join(repr(str(c)) for c in clash)} that "
                        f"differ only in case; they would be separate classes. Write them one way in the file.")


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


def _numbers_with_tokens(cfg: Config, col: str, train, test) -> dict | None:
    """A text column of numbers with a few non-numeric tokens ("?", "n/a"): parsed as numbers, the
    tokens missing, when they are at most ``features.numeric_tokens`` of its values (in train, and
    in test for a column that train has as numbers). Returns the tokens and their count, or None."""
    found = {}
    for name, df in (("train", train), ("test", test)):
        values = df[col].dropna() if col in df.columns else pd.Series(dtype=object)
        if values.empty or is_numeric(df[col]) or cfg.features.numeric_tokens == 0:
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        tokens = values[numbers.isna()]
        # Test may hold one odd value however short it is; train decides what the column is.
        allowed = cfg.features.numeric_tokens * len(values) if name == "train" else max(
            1, cfg.features.numeric_tokens * len(values))
        if tokens.empty or len(tokens) > allowed:
            if name == "train":
                return None  # text: a categorical column
            continue  # test: _check_numeric names the first bad value
        df[col] = pd.to_numeric(df[col], errors="coerce")
        found[name] = tokens
    if not found:
        return None
    tokens = pd.concat(list(found.values()))
    names = sorted(map(str, pd.unique(tokens)))
    log.warning("column %r: read as numbers; %d value(s) that are not numbers (%s) are missing values", col,
                len(tokens), ", ".join(repr(t) for t in names[:5]))
    return {"tokens": names[:20], "count": int(len(tokens))}


def declared_missing(cfg: Config) -> dict[str, list]:
    """Column → the values that mean "missing" there (features.columns.<col>.missing_values)."""
    return {col: list(spec.missing_values) for col, spec in cfg.features.columns.items() if spec.missing_values}


def mark_missing(frame, declared: dict[str, list]) -> None:
    """The declared missing values of ``frame``'s columns made missing, in place: the training
    and test tables when they are read, and new rows given to a fold (training/artifact.py), so
    both reach the fold's preprocessing alike."""
    for col, values in declared.items():
        if col in frame.columns:
            frame[col] = frame[col].mask(frame[col].isin(values))


def _plan_columns(cfg: Config, train, test, paths: dict, images, notes: dict) -> dict[str, dict]:
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
    declared = declared_missing(cfg)
    for df in (train, test):
        mark_missing(df, declared)
    columns = {}
    notes["tokens"], notes["types"] = {}, {}
    for col in features:
        spec = cfg.features.columns.get(col)
        if spec and spec.type:
            notes["types"][col] = "declared in features.columns"
        else:
            found = _numbers_with_tokens(cfg, col, train, test)
            if found:
                notes["tokens"][col] = found
                notes["types"][col] = f"numbers, with {found['count']} non-numeric token(s) read as missing"
        if train[col].isna().all():
            raise DataError(f"{paths['train']}: column {col!r} is missing in every row. "
                            f"Drop it with features.drop=[{col}].")
        kind = (spec.type if spec and spec.type else
                ("numeric" if is_numeric(train[col]) else "categorical"))
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


def narrow_dtypes(frames, columns: dict[str, dict]) -> dict[str, int]:
    """Categorical features as pandas categoricals, in place: a code per row and one copy of each
    level, where a text column holds a string per cell (most of a large table's memory). The
    preprocessing reads both forms as the same strings. Returns how many columns were narrowed.

    Numeric columns keep the type they were read with (float32 from a Parquet file that has it):
    rounding a CSV's float64 values to float32 here would fit the scalers on values that the raw
    rows given to --predict or to the exported preprocessing do not have (a value tied at a
    quantile knot lands on the other side of it)."""
    count = 0
    for df in frames:
        for name, plan in columns.items():
            if name not in df.columns or plan["type"] != "categorical" or plan.get("order") is not None:
                continue
            if not isinstance(df[name].dtype, pd.CategoricalDtype):
                df[name] = df[name].astype("category")
                count += 1
    return count


def _check_submission_files(cfg: Config, sample, solution, test, task: str, classes: list, paths: dict) -> None:
    """The sample submission and the solution line up with test, and their columns fit the task."""
    d = cfg.data
    test_ids = pd.Index(test[d.id])
    for key, df in (("sample_submission", sample), ("solution", solution)):
        if df is None:
            continue
        _need_column(df, d.id, paths[key], "data.id")
        check_ids(df[d.id], d.id, paths[key])
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



"""One run of a competition: config → data → folds → K-fold training → scores and output files.

``run_competition`` is the whole command line run as one importable call, for notebooks.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from .config import DEFAULT_COMPETITION, apply_overrides, load_config, read_yaml, validate
from .data import CompetitionData, load_competition
from .errors import ConfigError, DataError
from .logs import run_logging
from .metrics import get_metric
from .outputs import (OUTPUT_ROOT, default_run_name, ensure_writable, write_csv, write_json,
                      write_yaml)
from .submission import format_predictions, make_submission

log = logging.getLogger("pipeline")

# --smoke: the whole path on a small sample, for checking shapes and configs before a long run.
SMOKE_OVERRIDES = {"cv.folds": 2, "cv.repeats": 1, "train.epochs": 1}
SMOKE_ROWS = 400


@dataclass
class RunResult:
    scores: dict
    run_dir: Path
    files: dict[str, Path]


def run_competition(comp: str | Path = DEFAULT_COMPETITION, overrides=None, *, run_name: str | None = None,
                    data_dir: str | Path | None = None, output_dir: str | Path | None = None,
                    params: str | Path | None = None, smoke: bool = False) -> RunResult:
    """Run K-fold CV for a competition and write its outputs.

    comp: a name under competitions/ or a config path. overrides: ``["train.epochs=2", ...]`` or a
    dict of dotted keys. data_dir / output_dir: replace the config's data folder and ``outputs/``
    (e.g. /kaggle/input/<comp> and /kaggle/working). run_name: reuse one to resume a killed run.
    """
    start = time.perf_counter()
    cfg = load_config(comp, overrides, params)
    if smoke:
        path = cfg.path
        cfg = validate(apply_overrides(cfg.to_dict(), SMOKE_OVERRIDES, "--smoke"), str(path))
        cfg._path = path
    root = ensure_writable(Path(output_dir) if output_dir is not None else OUTPUT_ROOT)
    data = load_competition(cfg, data_dir)
    if smoke:
        data = _sample(data, SMOKE_ROWS, cfg.cv.seed)
    comp_dir = root / data.cfg.name
    run_dir = comp_dir / (run_name or default_run_name(smoke))
    resolved = data.cfg.to_dict()
    _check_resume(run_dir, resolved)

    from .cv.folds import load_or_assign_folds  # TensorFlow loads from here on
    from .cv.loop import run_cv
    from .training.fold import check_train_config

    check_train_config(data.cfg, data.task)

    with run_logging(run_dir / "run.log"):
        _log_plan(data, run_dir)
        write_yaml(resolved, run_dir / "config.yaml")
        folds = load_or_assign_folds(data, None if smoke else comp_dir / "folds")
        files = {"config": run_dir / "config.yaml", "folds": write_csv(folds, run_dir / "folds.csv")}
        cv = run_cv(data, folds, run_dir)
        scores = _scores(data, cv, time.perf_counter() - start)
        id_col = data.cfg.data.id
        oof = format_predictions(data, data.train[id_col], cv.oof)
        oof.insert(1, "fold", folds["fold"].to_numpy())
        files["oof"] = write_csv(oof, run_dir / "oof.csv")
        files["test_pred"] = write_csv(format_predictions(data, data.test[id_col], cv.test),
                                       run_dir / "test_pred.csv")
        files["submission"] = write_csv(make_submission(data, cv.test), run_dir / "submission.csv")
        files["scores"] = write_json(scores, run_dir / "scores.json")  # last: its presence means done
        files["log"] = run_dir / "run.log"
        _log_summary(data, scores, cv, run_dir)
    return RunResult(scores, run_dir, files)


def _sample(data: CompetitionData, rows: int, seed: int) -> CompetitionData:
    if len(data.train) <= rows:
        return data
    strat = data.y if data.task != "regression" else None
    idx, _ = train_test_split(np.arange(len(data.train)), train_size=rows, random_state=seed, stratify=strat)
    idx = np.sort(idx)
    images = None if data.images is None else {**data.images, "train": data.images["train"][idx]}
    return dataclasses.replace(data, train=data.train.iloc[idx].reset_index(drop=True), y=data.y[idx], images=images)


def _check_resume(run_dir: Path, resolved: dict) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = read_yaml(saved_path)
    # Stacking and tuning settings do not change what a run trains.
    diffs = _diff({k: v for k, v in saved.items() if k not in ("stack", "tune", "export")},
                  {k: v for k, v in resolved.items() if k not in ("stack", "tune", "export")})
    if diffs:
        raise ConfigError(f"{saved_path}: run {run_dir.name!r} exists with a different config "
                          f"(differs at {', '.join(diffs[:3])}). Use another --run-name, "
                          f"or the same settings to resume it.")


def _diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _encode_labels(data: CompetitionData, values: pd.Series, path) -> np.ndarray:
    if data.task == "regression":
        return pd.to_numeric(values).to_numpy(dtype=np.float64)
    index = {str(c): i for i, c in enumerate(data.classes)}
    unknown = sorted(set(values.astype(str)) - set(index))
    if unknown:
        raise DataError(f"{path}: labels {unknown[:5]} are not classes of the training target {data.classes}.")
    return values.astype(str).map(index).to_numpy(dtype=np.int64)


def holdout_labels(data: CompetitionData) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the test set, encoded labels) of the solution file's scored rows."""
    id_col, sol = data.cfg.data.id, data.solution
    if "Usage" in sol.columns:  # Kaggle solution files mark rows to ignore
        sol = sol[sol["Usage"] != "Ignored"]
    pos = pd.Series(np.arange(len(data.test)), index=data.test[id_col].astype(str)).loc[
        sol[id_col].astype(str)].to_numpy()
    return pos, _encode_labels(data, sol[data.cfg.data.target], data.paths["solution"])


def _scores(data: CompetitionData, cv, seconds: float) -> dict:
    metric = get_metric(data.cfg.metric, data.task)
    seen = cv.oof_count > 0
    fold_scores = [r.score for r in cv.folds]
    scores = {"metric": metric.name, "direction": metric.direction,
              "cv": metric(data.y[seen], cv.oof[seen], data.task),
              "folds": fold_scores, "fold_mean": float(np.mean(fold_scores)),
              "fold_std": float(np.std(fold_scores)),
              "fold_names": [r.name for r in cv.folds],
              "best_epochs": [r.best_epoch for r in cv.folds]}
    if len(cv.member_oof) > 1:  # seed averaging / checkpoint ensembles: each member beside the mean
        scores["members"] = {m: metric(data.y[seen], p[seen], data.task) for m, p in cv.member_oof.items()}
    if cv.oof_no_tta is not None:  # image competitions: what test-time augmentation bought
        scores["tta_views"] = list(data.cfg.image.tta.views)
        scores["cv_no_tta"] = metric(data.y[seen], cv.oof_no_tta[seen], data.task)
        scores["folds_no_tta"] = [r.score_no_tta for r in cv.folds]
    if data.solution is not None:
        pos, y_sol = holdout_labels(data)
        scores["holdout"] = metric(y_sol, cv.test[pos], data.task)
        if cv.test_no_tta is not None:
            scores["holdout_no_tta"] = metric(y_sol, cv.test_no_tta[pos], data.task)
    scores.update(n_train=int(len(data.train)), n_test=int(len(data.test)), seconds=round(seconds, 1))
    return scores


def _log_plan(data: CompetitionData, run_dir: Path) -> None:
    cfg = data.cfg
    kinds = pd.Series([p["type"] for p in data.columns.values()]).value_counts().to_dict()
    log.info("competition %s: %s, metric %s, %d train rows, %d test rows, features %s",
             cfg.name, data.task, cfg.metric, len(data.train), len(data.test), kinds)
    if data.images is not None:
        im = cfg.image
        log.info("images: column %r, %dx%dx%d (%s), cache %s, TTA views %s", im.column, *im.size, im.channels,
                 im.resize, im.cache, ", ".join(im.tta.views))
    log.info("cv %s: %d folds x %d repeat(s), seed %d; model %s %s; %d epochs, batch %d; run folder %s",
             cfg.cv.scheme, cfg.cv.folds, cfg.cv.repeats, cfg.cv.seed, cfg.model.name, cfg.model.hidden,
             cfg.train.epochs, cfg.train.batch_size, run_dir)


def _log_summary(data, scores: dict, cv, run_dir: Path) -> None:
    m = scores["metric"]
    for r in cv.folds:
        log.info("  %-16s %s %.5g", r.name, m, r.score)
    log.info("folds: %s %.5g ± %.5g", m, scores["fold_mean"], scores["fold_std"])
    for member, score in scores.get("members", {}).items():
        log.info("  member %-12s OOF %s %.5g", member, m, score)
    log.info("OOF (cv): %s %.5g", m, scores["cv"])
    if "cv_no_tta" in scores:
        log.info("OOF without TTA: %s %.5g (TTA views: %s)", m, scores["cv_no_tta"], ", ".join(scores["tta_views"]))
    if "holdout" in scores:
        log.info("holdout: %s %.5g", m, scores["holdout"])
    if "holdout_no_tta" in scores:
        log.info("holdout without TTA: %s %.5g", m, scores["holdout_no_tta"])
    log.info("wall time %.1fs; outputs in %s", scores["seconds"], run_dir)


def find_learning_rate(comp: str | Path = DEFAULT_COMPETITION, overrides=None, *, data_dir=None, output_dir=None,
                       params=None) -> tuple[float, Path]:
    """The LR range test for a competition's model: returns the suggested LR and the curve's PNG
    (``outputs/<competition>/lr_find/<timestamp>.png``)."""
    from .outputs import atomic_path
    from .training.lr_find import lr_find, plot_lr_curve

    cfg = load_config(comp, overrides, params)
    root = ensure_writable(Path(output_dir) if output_dir is not None else OUTPUT_ROOT)
    data = load_competition(cfg, data_dir)
    png = root / data.cfg.name / "lr_find" / f"{default_run_name()}.png"
    with run_logging(png.with_suffix(".log")):
        log.info("LR range test for %s: %s, batch %d, one pass with the LR rising from 1e-7 to 10",
                 data.cfg.name, data.cfg.train.optimizer, data.cfg.train.batch_size)
        lr, sweep = lr_find(data)
        with atomic_path(png) as tmp:
            plot_lr_curve(sweep.lrs, sweep.losses, lr, tmp)
        log.info("suggested lr %.3g (set it with --set train.lr=%.3g); curve: %s", lr, lr, png)
    return lr, png

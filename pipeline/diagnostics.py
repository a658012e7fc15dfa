"""What a Kaggler looks at before the next experiment, written into every finished run:

- ``plots/learning_curves.png``: loss, val_loss and the metric per epoch of every fold (from each
  fold's history.csv): over- or under-fitting at a glance;
- OOF diagnostics by task (``plots/``): confusion matrix (classes; binary at 0.5), ROC,
  precision-recall and calibration curves (binary), residuals and predicted vs true (regression),
  and the per-fold scores with their spread and the holdout;
- ``importance.csv`` + ``plots/importance.png``: permutation importance of the raw columns on the
  OOF rows of the first folds (scikit-learn's ``permutation_importance``, its shuffles reproduced
  by ``permutation_scores`` and predicted in batches, around each fold's saved model, so the
  fold's own preprocessing runs on the permuted column), capped in rows;
- ``adversarial.json``: a HistGradientBoosting classifier of train rows vs test rows on the same
  columns, its cross-validated AUC and the columns that drift most (a Kaggler checks this before
  trusting CV: AUC near 0.5 means test looks like train).

Plots are matplotlib (Agg: no display needed). The ``diagnostics`` section of the config turns
each part off or caps its cost.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("pipeline")



def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from .outputs import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    _plt().close(fig)
    return path


def learning_curves(histories: dict[str, pd.DataFrame], metric: str, path: Path) -> Path | None:
    """``histories``: fold name → its history.csv rows."""
    histories = {k: h for k, h in histories.items() if len(h)}
    if not histories:
        return None
    plt = _plt()
    has_metric = any(h["val_metric"].notna().any() for h in histories.values() if "val_metric" in h)
    fig, axes = plt.subplots(1, 2 if has_metric else 1, figsize=(11 if has_metric else 6, 4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, h) in enumerate(histories.items()):
        c = colors[i % len(colors)]
        # One line per network: a Keras member's seeds (and, with two Keras members, each member).
        keys = [k for k in ("member", "seed") if k in h.columns]
        for i_net, (_, rows) in enumerate(h.groupby(keys, sort=False)):
            label = name if i_net == 0 else None
            # Markers: a run of one epoch (a smoke run) is a point, which a line alone would not show.
            axes[0, 0].plot(rows["epoch"], rows["val_loss"], color=c, label=label, marker="o", markersize=3)
            axes[0, 0].plot(rows["epoch"], rows["loss"], color=c, linestyle="--", alpha=0.6, marker="o", markersize=2)
            if has_metric:
                axes[0, 1].plot(rows["epoch"], rows["val_metric"], color=c, label=label, marker="o", markersize=3)
    axes[0, 0].set(xlabel="epoch", ylabel="loss", title="loss (dashed: training, solid: validation)")
    axes[0, 0].legend(fontsize=7)
    if has_metric:
        axes[0, 1].set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    from matplotlib.ticker import MaxNLocator

    for ax in axes.ravel():
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    return _save(fig, path)


def oof_plots(y: np.ndarray, oof: np.ndarray, task: str, classes: list, folder: Path) -> dict[str, Path]:
    """The OOF diagnostics for the task; rows never predicted (NaN) are left out."""
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    plt = _plt()
    seen = ~np.isnan(oof).any(axis=tuple(range(1, oof.ndim))) if oof.ndim > 1 else ~np.isnan(oof)
    y, oof = y[seen], oof[seen]
    out = {}
    if task == "regression":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        axes[0].scatter(oof, y - oof, s=4, alpha=0.4)
        axes[0].axhline(0, color="black", linewidth=0.8)
        axes[0].set(xlabel="prediction", ylabel="residual (true - prediction)", title="residuals vs prediction")
        lo, hi = float(min(y.min(), oof.min())), float(max(y.max(), oof.max()))
        axes[1].scatter(y, oof, s=4, alpha=0.4)
        axes[1].plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
        axes[1].set(xlabel="true", ylabel="prediction", title="predicted vs true")
        out["residuals"] = _save(fig, folder / "residuals.png")
        return out
    labels = [str(c) for c in classes]
    pred = (oof > 0.5).astype(int) if task == "binary" else oof.argmax(axis=1)
    fig, ax = plt.subplots(figsize=(5 + 0.3 * len(labels), 4 + 0.3 * len(labels)))
    ConfusionMatrixDisplay.from_predictions(y, pred, display_labels=labels, ax=ax, colorbar=False)
    ax.set_title("OOF confusion matrix" + (" (threshold 0.5)" if task == "binary" else ""))
    out["confusion"] = _save(fig, folder / "confusion.png")
    if task == "binary":
        positive = labels[-1]
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        RocCurveDisplay.from_predictions(y, oof, ax=axes[0], name="OOF")
        axes[0].set(title="ROC", xlabel="false positive rate", ylabel=f"true positive rate ({positive})")
        PrecisionRecallDisplay.from_predictions(y, oof, ax=axes[1], name="OOF")
        axes[1].set(title="precision-recall", xlabel=f"recall ({positive})", ylabel=f"precision ({positive})")
        CalibrationDisplay.from_predictions(y, oof, n_bins=10, ax=axes[2], name="OOF")
        axes[2].set(title="calibration", xlabel=f"mean predicted P({positive})", ylabel=f"share that is {positive}")
        out["roc_pr_calibration"] = _save(fig, folder / "roc_pr_calibration.png")
    return out


def fold_scores_plot(scores: dict, path: Path) -> Path:
    plt = _plt()
    names, values = scores["fold_names"], scores["folds"]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 3.5))
    ax.bar(range(len(values)), values, color="#7a9cc6")
    ax.axhline(scores["fold_mean"], color="black", linewidth=1, label=f"mean {scores['fold_mean']:.5g} "
                                                                      f"± {scores['fold_std']:.3g}")
    if scores.get("holdout") is not None:
        ax.axhline(scores["holdout"], color="#c0392b", linestyle="--", label=f"holdout {scores['holdout']:.5g}")
    ax.set_xticks(range(len(values)), names, rotation=45, ha="right", fontsize=8)
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if finite:
        pad = (max(finite) - min(finite)) or abs(max(finite)) * 0.05 or 1.0
        ax.set_ylim(min(finite) - pad, max(finite) + pad)
    ax.set(ylabel=scores["metric"], title=f"per-fold {scores['metric']}")
    ax.legend(fontsize=8)
    return _save(fig, path)


# Cells (rows x columns) of shuffled copies predicted in one call: a bound on the stacked frame's
# memory whatever the table's width (about 100 MB of float64).
PERMUTED_CELLS = 10_000_000


def permutation_scores(predict, x: pd.DataFrame, score, n_repeats: int, random_state: int = 0,
                       batch_cells: int = PERMUTED_CELLS) -> tuple[float, np.ndarray]:
    """(the score on ``x``, the scores with each column shuffled: features x repeats), with the
    shuffles of scikit-learn's ``permutation_importance(..., random_state=random_state)``: one seed
    drawn from it, and per column a RandomState of that seed shuffling a row index in place once
    per repeat, each repeat permuting the column as the previous one left it.

    Written here rather than called: scikit-learn predicts once per column and repeat, and a
    fold's prediction (its preprocessing, a Keras predict, HGB) costs a fixed ~0.2 s whatever the
    rows; 73 columns x 3 repeats x 2 folds took 83 s on ames. Here the shuffled copies are stacked
    and predicted about ``batch_cells`` cells at a time (tests/test_report.py checks the numbers
    equal scikit-learn's)."""
    n = len(x)
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max + 1)
    jobs = []  # (column, row order of that repeat's shuffled column)
    for c in range(x.shape[1]):
        rng, shuffling, order = np.random.RandomState(seed), np.arange(n), np.arange(n)
        for _ in range(n_repeats):
            rng.shuffle(shuffling)
            order = order[shuffling]  # scikit-learn shuffles the already shuffled column
            jobs.append((c, order))
    per_call = max(1, batch_cells // max(1, x.size))
    scores = []
    for start in range(0, len(jobs), per_call):
        copies = []
        for c, order in jobs[start:start + per_call]:
            copy = x.copy()
            copy.isetitem(c, x.iloc[order, c].set_axis(x.index))  # a Series: the dtype is kept
            copies.append(copy)
        pred = predict(pd.concat(copies, ignore_index=True))
        scores += [score(pred[i * n:(i + 1) * n]) for i in range(len(copies))]
    return score(predict(x)), np.asarray(scores).reshape(x.shape[1], n_repeats)


def importance_samples(run, data):
    """(fold unit, raw rows x, labels y) that permutation importance scores: the OOF rows of the
    first ``diagnostics.importance_folds`` folds, at most ``importance_rows`` of each."""
    dc, rng, features = data.cfg.diagnostics, np.random.default_rng(0), list(data.columns)
    for unit in [u for u in run.trained_units() if u.repeat == 0][:dc.importance_folds]:
        rows = unit.valid_idx
        if len(rows) > dc.importance_rows:
            rows = np.sort(rng.choice(rows, dc.importance_rows, replace=False))
        yield unit, data.train.iloc[rows][features].reset_index(drop=True), data.y[rows]


def permutation_importance_table(run, data) -> pd.DataFrame | None:
    """Mean and spread of the metric's drop when one raw column is shuffled, over the OOF rows of
    the first folds. None for competitions whose features include images (files, not columns)."""
    from .metrics import get_metric

    if data.images is not None or not data.columns:
        return None
    metric = get_metric(data.cfg.metric, data.task)
    sign = 1.0 if metric.greater_is_better else -1.0
    frames = []
    for unit, x, y in importance_samples(run, data):
        artifact = run.artifact(unit)
        base, permuted = permutation_scores(lambda frame: artifact.predict(frame, tta=False), x,
                                            lambda pred: sign * metric(y, pred, data.task),
                                            data.cfg.diagnostics.importance_repeats)
        drops = base - permuted
        frames.append(pd.DataFrame({"feature": list(data.columns), "importance": drops.mean(axis=1),
                                    "std": drops.std(axis=1), "fold": unit.name}))
    table = pd.concat(frames)
    out = table.groupby("feature", sort=False).agg(importance=("importance", "mean"), std=("std", "mean"))
    return out.sort_values("importance", ascending=False).reset_index()


def importance_plot(table: pd.DataFrame, metric, path: Path) -> Path:
    plt = _plt()
    top = table.head(25).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(top) + 1.5))
    ax.barh(top["feature"].astype(str), top["importance"], xerr=top["std"], color="#7a9cc6")
    worse = "falls" if metric.greater_is_better else "rises"
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(xlabel=f"how much {metric.name} worsens when the column is shuffled ({metric.name} {worse}); OOF rows",
           title="permutation importance (below 0: shuffling helped, noise)")
    return _save(fig, path)


def adversarial_validation(data) -> dict | None:
    """Train rows vs test rows: the cross-validated AUC of telling them apart, and the columns
    whose shuffling lowers it most (where test differs from train)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split

    features = list(data.columns)
    if not features:
        return None
    rng, cap = np.random.default_rng(0), data.cfg.diagnostics.adversarial_rows
    parts = []
    for frame in (data.train, data.test):
        take = frame if len(frame) <= cap else frame.iloc[rng.choice(len(frame), cap, replace=False)]
        parts.append(take[features])
    x = pd.concat(parts, ignore_index=True)
    for col in features:  # categories as pandas categoricals: HGB splits on them natively
        if data.columns[col]["type"] == "categorical":
            values = x[col].astype(str)
            # HGB takes at most 255 levels: beyond the 254 most frequent, the rest are one level
            # (no category equals the "" it gets: a missing value reads as "nan").
            top = values.value_counts().index[:254]
            x[col] = values.where(values.isin(top), "").astype("category")
        else:
            x[col] = pd.to_numeric(x[col], errors="coerce").replace([np.inf, -np.inf], np.nan)
    y = np.r_[np.zeros(len(parts[0]), int), np.ones(len(parts[1]), int)]
    if min(np.bincount(y)) < 6:
        return None
    model = HistGradientBoostingClassifier(max_iter=100, categorical_features="from_dtype", random_state=0)
    proba = cross_val_predict(model, x, y, cv=StratifiedKFold(3, shuffle=True, random_state=0),
                              method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, proba))
    fit_x, val_x, fit_y, val_y = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    model.fit(fit_x, fit_y)
    drift = permutation_importance(model, val_x, val_y, scoring="roc_auc", n_repeats=3, random_state=0)
    order = np.argsort(-drift.importances_mean)
    top = [{"feature": features[i], "auc_drop": float(drift.importances_mean[i])} for i in order[:10]]
    verdict = ("test looks like train" if auc < 0.6 else "test differs from train somewhat" if auc < 0.75
               else "test differs from train: CV may not track the leaderboard")
    return {"auc": auc, "rows": {"train": len(parts[0]), "test": len(parts[1])}, "verdict": verdict,
            "drifting_features": top}


def write_diagnostics(run, data, cv, scores: dict, costly: bool = True) -> dict[str, Path]:
    """Every diagnostic of a finished CV into the run folder; returns name → file written.
    ``costly=False`` (a run under a time limit): the plots only, no model is run again."""
    from .metrics import get_metric
    from .outputs import write_csv, write_json

    folder, dc = run.plots_dir, data.cfg.diagnostics
    written = {}
    if dc.plots:
        histories = {}
        for unit in run.units():
            path = run.fold_dir(unit) / "history.csv"
            if path.is_file():
                histories[unit.name] = pd.read_csv(path)
        curves = learning_curves(histories, scores["metric"], folder / "learning_curves.png")
        if curves:
            written["learning_curves"] = curves
        written.update(oof_plots(data.y, cv.oof, data.task, data.classes, folder))
        written["fold_scores"] = fold_scores_plot(scores, folder / "fold_scores.png")
    try:
        table = permutation_importance_table(run, data) if dc.importance and costly else None
    except Exception as exc:  # a diagnostic must not lose a finished run; the report says it is missing
        log.warning("permutation importance skipped: %s: %s", type(exc).__name__, str(exc)[:200])
        table = None
    if table is not None:
        written["importance_csv"] = write_csv(table, run.importance_path)
        written["importance"] = importance_plot(table, get_metric(data.cfg.metric, data.task),
                                                folder / "importance.png")
        log.info("permutation importance (top 5): %s", ", ".join(
            f"{r.feature} {r.importance:.4g}" for r in table.head(5).itertuples()))
    try:
        adversarial = adversarial_validation(data) if dc.adversarial and costly else None
    except Exception as exc:
        log.warning("adversarial validation skipped: %s: %s", type(exc).__name__, str(exc)[:200])
        adversarial = None
    if adversarial is not None:
        written["adversarial"] = write_json(adversarial, run.adversarial_path)
        log.info("adversarial validation: train vs test AUC %.3f (%s); most drifting: %s", adversarial["auc"],
                 adversarial["verdict"], ", ".join(d["feature"] for d in adversarial["drifting_features"][:3]))
    return written

"""Training a run: Setup → Run → folds → K-fold training → scores and output files.

``train`` receives the Setup the entry point resolved (run.py, api.py: ``run_competition``,
``fit``); the Run (runs.py) owns the folder, its state and its paths; this module fills it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data import CompetitionData
from .errors import DataError
from .logs import run_logging
from .metrics import get_metric
from .outputs import write_csv, write_json
from .paths import output_file
from .runs import Run
from .setup import Setup
from .submission import format_predictions, make_submission
from .time_budget import TimeBudget

log = logging.getLogger("pipeline")


@dataclass
class RunResult:
    scores: dict
    run_dir: Path
    files: dict[str, Path]


KAGGLE_WORKING = Path("/kaggle/working")  # where Kaggle looks for submission.csv


def train(setup: Setup, *, run_name: str | None = None, submission: str | Path | None = None,
          budget: TimeBudget | None = None) -> RunResult:
    """Run K-fold CV on the Setup's data and write its outputs (the entry point's
    ``run_competition`` documents the arguments)."""
    if submission is not None:  # refused before anything trains
        output_file(submission, "--submission")
    root = setup.root  # proven writable before the data is read
    data = setup.data
    from .training.fold import check_train_config  # TensorFlow loads from here on

    _fresh_session(data.cfg)
    check_train_config(data.cfg, data.task)  # creates the tf.distribute strategy, before any TF work
    run = setup.create_run(run_name)
    if run.finished:
        log_finished(run)
    else:
        with run, run_logging(run.log_path):
            train_run(run, data, budget)
    files = run.files()
    target = Path(submission) if submission is not None else (root / "submission.csv" if KAGGLE_WORKING.is_dir()
                                                               else None)
    if target is not None:
        files["submission_copy"] = copy_submission(run, target)
    return RunResult(run.scores, run.dir, files)


def _fresh_session(cfg) -> None:
    """Notebooks call runs one after another in one process: drop the previous run's Keras graph
    state and models, so memory stays flat and layer names restart. Not in a multi-worker job (one
    run per worker process): its collective ops must be set up before TensorFlow's runtime starts."""
    import gc

    from .training.devices import worker_count

    if cfg.train.strategy == "multi_worker" or (cfg.train.strategy == "auto" and worker_count() > 1):
        return
    import tf_keras as keras

    keras.backend.clear_session()
    gc.collect()


def copy_submission(run: Run, target: Path) -> Path:
    import shutil

    from .outputs import atomic_path

    with atomic_path(target) as tmp:
        shutil.copyfile(run.submission_path, tmp)
    log.info("submission: %s (a copy of %s)", target, run.submission_path)
    return target


def log_finished(run: Run) -> None:
    """A finished run is never retrained: say so, with its scores."""
    from .logs import console

    console()
    s = run.scores
    holdout = f", holdout {s['metric']} {s['holdout']:.5g}" if s.get("holdout") is not None else ""
    log.info("run %s is finished (OOF %s %.5g%s); nothing to do. Use another --run-name to train again. "
             "Outputs in %s", run.name, s["metric"], s["cv"], holdout, run.dir)


def train_run(run: Run, data: CompetitionData, budget: TimeBudget | None = None) -> None:
    """The run's folds (assigned once per competition, or the run's own on resume), every fold unit
    trained or resumed, then oof.csv, test_pred.csv, submission.csv and scores.json (last)."""
    from .cv.folds import load_or_assign_folds
    from .data.profile import log_profile, profile

    _log_plan(data, run.dir)
    summary = profile(data)
    write_json(summary, run.profile_path)
    log_profile(summary)
    id_col = data.cfg.data.id
    if run.folds_path.is_file():
        folds = pd.read_csv(run.folds_path, dtype={id_col: str})
    else:
        folds = load_or_assign_folds(data, None if run.info.get("smoke") else run.shared_folds_dir)
        write_csv(folds, run.folds_path)
    if not np.array_equal(folds[id_col].astype(str).to_numpy(), data.train[id_col].astype(str).to_numpy()):
        raise DataError(f"{run.folds_path}: folds do not match the ids of {data.paths['train']} row by row. "
                        f"Delete the competition's saved folds file to assign new ones, and use a new --run-name.")
    units = run.units()
    start = time.monotonic()
    data, cv, stages = cross_validate(run, data, units, budget)
    cv_seconds = round(time.monotonic() - start, 2)  # the folds' wall time, side by side or not
    run.check_owner()  # still this process's run before its outputs are written
    fmt = data.submission_format
    oof = format_predictions(fmt, data.train[id_col], cv.oof)
    oof.insert(1, "fold", folds["fold"].to_numpy())
    write_csv(oof, run.oof_path)
    write_csv(format_predictions(fmt, data.test[id_col], cv.test), run.test_pred_path)
    write_csv(make_submission(data, cv.test), run.submission_path)
    write_json(cv.ensemble.to_dict(), run.ensemble_path)  # the weights --predict and load_run use
    scores = {**_scores(data, cv, run.seconds()), **stages, "cv_seconds": cv_seconds}
    if budget is not None:
        scores["time_limit"] = budget.summary(len(cv.folds), len(units))
    _log_summary(data, scores, cv, run.dir)
    from .diagnostics import write_diagnostics
    from .report import write_report

    # The submission is written. Permutation importance and adversarial validation run the
    # models again, features x repeats x folds times: unbounded by anything the budget measured
    # (on a 2-core CI machine they took 211 s after a 17 s run under a 25 s limit). Under a time
    # limit they are skipped; the plots are cheap.
    costly = budget is None
    if not costly:
        log.info("time limit: permutation importance and adversarial validation skipped "
                 "(run without --time-limit for them)")
    write_diagnostics(run, data, cv, scores, costly=costly)
    scores["seconds"] = run.seconds()
    if data.cfg.diagnostics.report:
        write_report(run, scores)
        log.info("report: %s", run.report_path)
    write_json(scores, run.scores_path)  # last: its presence means done


def cross_validate(run: Run, data: CompetitionData, units, budget: TimeBudget | None):
    """The K-fold loop of the run, with what comes before it (image.pretrain: the pretrained
    encoder every fold starts from) and after it (train.pseudo_label: the second stage). Returns
    the data the folds trained on, the CVResult and their summaries for scores.json."""
    from .cv.loop import run_cv
    from .training.pretrain import with_pretrained_encoder

    data, pretrain = with_pretrained_encoder(data, run.pretrain_dir)
    stages = {"pretrain": pretrain} if pretrain is not None else {}
    if not data.cfg.train.pseudo_label:
        return data, run_cv(data, units, run.fold_dir, budget), stages
    from .cv.pseudo import second_stage

    first = run_cv(data, units, run.first_stage_dir, budget)
    cv, stages["pseudo_label"] = second_stage(data, units, first, run.fold_dir, budget)
    if cv is None:  # the time limit stopped stage 2: the first stage's folds become the run's
        _keep_first_stage(run)
        cv = first
    return data, cv, stages


def _keep_first_stage(run: Run) -> None:
    """The first stage's fold folders in place of an unfinished second stage (--predict and
    --export-run read folds/)."""
    import shutil

    shutil.rmtree(run.dir / "folds", ignore_errors=True)
    (run.dir / "stage1").rename(run.dir / "folds")


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
    # Each member's own OOF (and holdout) beside the ensemble's; a Keras member's networks (seeds x
    # checkpoints) under "networks".
    scores["members"] = {m: metric(data.y[seen], p[seen], data.task) for m, p in cv.member_oof.items()}
    scores["ensemble"] = cv.ensemble.to_dict()
    scores["member_info"] = cv.folds[0].member_info  # what each member is (the first fold's describe())
    if cv.detail_oof:
        scores["networks"] = {k: metric(data.y[seen], p[seen], data.task) for k, p in cv.detail_oof.items()}
    if cv.oof_no_tta is not None:  # image competitions: what test-time augmentation bought
        scores["tta_views"] = list(data.cfg.image.tta.views)
        scores["cv_no_tta"] = metric(data.y[seen], cv.oof_no_tta[seen], data.task)
        scores["folds_no_tta"] = [r.score_no_tta for r in cv.folds]
    if data.solution is not None:
        pos, y_sol = data.holdout()
        scores["holdout"] = metric(y_sol, cv.test[pos], data.task)
        scores["members_holdout"] = {m: metric(y_sol, p[pos], data.task) for m, p in cv.member_test.items()}
        if cv.test_no_tta is not None:
            scores["holdout_no_tta"] = metric(y_sol, cv.test_no_tta[pos], data.task)
    # seconds: every session of the run (a resumed run counts its earlier sessions too).
    scores.update(n_train=int(len(data.train)), n_test=int(len(data.test)), seconds=seconds)
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
    log.info("cv %s: %d folds x %d repeat(s), seed %d; members %s; run folder %s",
             cfg.cv.scheme, cfg.cv.folds, cfg.cv.repeats, cfg.cv.seed, member_plan(data), run_dir)


def member_plan(data: CompetitionData) -> str:
    """Each member in a few words: its layers and its epochs and batch (Keras), or its kind."""
    from .models.sklearn_models import MATRIX_MODELS
    from .training.members import member_names
    from .training.recipes import member_config

    cfg, out = data.cfg, []
    for name in member_names(cfg, data.images is not None):
        if name in MATRIX_MODELS:
            out.append(name)
            continue
        tc = member_config(cfg, name, data.task or "regression").train
        out.append(f"{name} {_layers(cfg, name)} ({tc.epochs} epochs, batch {tc.batch_size})")
    return ", ".join(out)


def _layers(cfg, name: str) -> str:
    """A Keras member's layers in a few words: a CNN's conv widths, a ViT's tokens, else the dense widths."""
    from .models import model_section
    from .models.cnn import auto_filters

    section = model_section(cfg.model, name)
    if name == "cnn":
        return str(section.filters or auto_filters(cfg.image.size))
    if name == "vit":
        return f"dim {section.dim} x {section.depth} blocks"
    return str(section.hidden)


def _log_summary(data, scores: dict, cv, run_dir: Path) -> None:
    m = scores["metric"]
    for r in cv.folds:
        log.info("  %-16s %s %.5g", r.name, m, r.score)
    log.info("folds: %s %.5g ± %.5g", m, scores["fold_mean"], scores["fold_std"])
    limit = scores.get("time_limit")
    if limit:
        log.info("time limit %.0fs: %d of %d folds ran%s%s", limit["seconds"], limit["folds_run"], limit["folds_planned"],
                 f"; epochs cut short in {', '.join(limit['folds_cut'])}" if limit["folds_cut"] else "",
                 f"; not started: {', '.join(limit['folds_skipped'])}" if limit["folds_skipped"] else "")
    for name, score in scores.get("networks", {}).items():
        log.info("  network %-16s OOF %s %.5g", name, m, score)
    weights = scores["ensemble"]["weights"]
    for member, score in scores["members"].items():
        holdout = scores.get("members_holdout", {}).get(member)
        log.info("  member %-12s OOF %s %.5g%s, weight %.3f", member, m, score,
                 f", holdout {holdout:.5g}" if holdout is not None else "", weights[member])
    ens = scores["ensemble"]
    log.info("ensemble (%s%s): weights %s", ens["method"], f"; {ens['note']}" if ens.get("note") else "",
             ", ".join(f"{k} {v:.3f}" for k, v in weights.items()))
    log.info("OOF (cv): %s %.5g (the ensemble, its weights cross-fitted over the folds)", m, scores["cv"])
    pseudo = scores.get("pseudo_label")
    if pseudo:
        log.info("pseudo-labels (confidence >= %g): %s test rows added per fold; first stage OOF %s %.5g%s",
                 pseudo["threshold"], "/".join(str(v) for v in pseudo["rows"].values()), m, pseudo["stage1_cv"],
                 f", its labels right on {pseudo['holdout_label_accuracy']:.4f} of the holdout rows added"
                 if pseudo.get("holdout_label_accuracy") is not None else "")
    if "cv_no_tta" in scores:
        log.info("OOF without TTA: %s %.5g (TTA views: %s)", m, scores["cv_no_tta"], ", ".join(scores["tta_views"]))
    if "holdout" in scores:
        log.info("holdout: %s %.5g", m, scores["holdout"])
    if "holdout_no_tta" in scores:
        log.info("holdout without TTA: %s %.5g", m, scores["holdout_no_tta"])
    log.info("wall time %.1fs; outputs in %s", scores["seconds"], run_dir)


def lr_find_command(setup: Setup) -> tuple[float, Path]:
    """The LR range test for the Setup's model: returns the suggested LR and the curve's PNG
    (``<output root>/<competition>/lr_find/<timestamp>.png``)."""
    from .outputs import atomic_path, default_run_name
    from .training.lr_find import CHECK_EPOCHS, keras_member_name, lr_find, plot_lr_curve

    data = setup.data
    keras_member_name(data.cfg, data.images is not None)  # a run without a Keras model: one error first
    png = setup.lr_find_path(default_run_name())
    with run_logging(png.with_suffix(".log")):
        log.info("LR range test for %s: %s, batch %d, one pass with the LR rising from 1e-7 to 10",
                 data.cfg.name, data.cfg.train.optimizer, data.cfg.train.batch_size)
        lr, sweep = lr_find(data)
        for tried, loss in sweep.checked.items():
            log.info("  short run (%d epochs) at lr %.3g: validation loss %.5g", CHECK_EPOCHS, tried, loss)
        with atomic_path(png) as tmp:
            plot_lr_curve(sweep.lrs, sweep.losses, lr, tmp)
        log.info("suggested lr %.3g (set it with --set train.lr=%.3g); curve: %s", lr, lr, png)
    return lr, png

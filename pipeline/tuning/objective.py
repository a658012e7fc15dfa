"""The objective of a study: one trial = the competition's CV (optionally the first N folds and a
cap on epochs) with the trial's parameters, through the same fit_fold as every run.

Pruning reports: per epoch, the first fold's validation loss (median / Hyperband); per fold, the
fold's score (Wilcoxon). A trial is a child Run of its study (kind "trial": config.yaml,
run.json, lock) whose folder is removed after the trial: a study keeps scores, not models (rerun
the best parameters with ``--params best.yaml``).
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import socket
from pathlib import Path

import numpy as np
import yaml

from ..config_files import apply_overrides, resolve
from ..metrics import get_metric
from . import budget
from .space import resolve_space, suggest

log = logging.getLogger("pipeline")


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc), in MB; peak when /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def epoch_pruning_callback(trial, direction: str):
    """Reports the first fold's val_loss each epoch and stops a trial the pruner rejects.

    Written here rather than optuna_integration.TFKerasPruningCallback because the study's
    direction is the metric's (AUC is maximized) while the loss is minimized: a maximizing study
    gets the negated loss, so "better" means the same thing to the pruner at every step.
    """
    import optuna
    import tf_keras as keras

    sign = -1.0 if direction == "maximize" else 1.0

    class EpochPruning(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("val_loss")
            if loss is None or not np.isfinite(loss):
                return
            trial.report(sign * float(loss), step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch + 1}: val_loss {loss:.5g}")

    return EpochPruning()


def trial_dir(study_dir: Path, number: int, pid: int) -> Path:
    """A trial's Run folder inside its study: the number, and the process that runs it."""
    return Path(study_dir) / "trials" / f"{number:05d}-{pid}"


class StandDown(Exception):
    """A trial that is not evaluated: a duplicate of an earlier one, or one past the study's size."""


class Objective:
    """Picklable: worker processes receive it whole, the Setup without its rows (each reads them
    once).

    ``setup``: the study's inputs, resolved once by the entry point (competition config +
    ``--params`` overlay + ``--set`` + ``--smoke``). Every trial is a child Run of the study: its
    folder under ``<study>/trials/``, its config ``setup.cfg`` + the trial's parameters, resolved
    against the study's rows (``Setup.data_for``); the folder is removed after the trial."""

    def __init__(self, setup, study_dir: Path, *, stop_at: int | None = None):
        self.setup, self.study_dir = setup, Path(study_dir)
        self.stop_at = stop_at  # the study's size (counted trials)

    def config(self, params: dict):
        base = self.setup.cfg
        raw = apply_overrides(base.to_dict(), params, "tune.space")
        if base.tune.max_epochs:
            raw["train"]["epochs"] = min(raw["train"]["epochs"], base.tune.max_epochs)
            backbone = raw["model"].setdefault("backbone", {})
            backbone["head_epochs"] = min(backbone.get("head_epochs") or 0, raw["train"]["epochs"] - 1)
        return resolve(raw, f"{base.path} + trial parameters", base.path)

    def __call__(self, trial):
        import optuna

        try:
            return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except StandDown as exc:  # FAIL, marked uncounted: not charged to the study's budget
            trial.set_user_attr("fail_reason", f"not run: {exc}")
            log.info("trial %d: not run (%s); it does not count", trial.number, exc)
            raise
        except Exception as exc:  # Optuna marks the trial FAIL; keep the reason with it
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {first}")
            log.info("trial %d: FAIL (%s: %s)", trial.number, type(exc).__name__, first)
            raise

    def _evaluate(self, trial):
        import optuna

        from ..cv.folds import fold_units, load_or_assign_folds
        from ..cv.loop import gather, train_folds
        from ..training.pretrain import with_pretrained_encoder
        from ..models.sklearn_models import MATRIX_MODELS
        from ..runs import Run
        from ..training.fold import check_train_config
        from ..training.members import member_names

        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        trials = trial.study.get_trials(deepcopy=False)
        if self.stop_at is not None and budget.counted_before(trials, trial.number) >= self.stop_at:
            # Another process started a trial at the same moment and the storage numbered it first.
            budget.uncount(trial, f"surplus: the study already had {self.stop_at} trials")
            raise StandDown(f"the study already holds {self.stop_at} trials")
        base = self.setup.cfg
        params = suggest(trial, resolve_space(base, base.task or "regression"))
        same = budget.duplicate_of(trial.study.get_trials(deepcopy=False), trial)
        if same is not None:
            budget.uncount(trial, f"duplicate of trial {same.number}")
            raise StandDown(f"the parameters of trial {same.number} again")
        cfg = self.config(params)  # a combination the config refuses fails this trial only
        data = self.setup.data_for(cfg)
        check_train_config(data.cfg, data.task)
        # The trial's fully resolved config, so it can be rerun exactly (python run.py --params FILE).
        trial.set_user_attr("config", yaml.safe_dump(data.cfg.to_dict(), sort_keys=False))
        tc = data.cfg.tune
        folds = load_or_assign_folds(data, None if self.setup.smoke else self.setup.folds_dir)
        units = fold_units(folds, data.cfg.cv.repeats)[: tc.folds or None]
        metric = get_metric(data.cfg.metric, data.task)
        run = Run.start(trial_dir(self.study_dir, trial.number, os.getpid()), data, kind="trial",
                        smoke=self.setup.smoke, data_dir=self.setup.data_dir)
        log.info("trial %d: %s", trial.number, params)
        # image.pretrain: the competition's pretrained encoder for these settings (made once, reused).
        data, _ = with_pretrained_encoder(data, run.dir / "pretrain" if self.setup.smoke
                                          else self.setup.folds_dir.parent / "pretrain")
        epoch_pruning = tc.pruner in ("median", "hyperband") and any(
            m not in MATRIX_MODELS for m in member_names(data.cfg, data.images is not None))

        def callbacks(unit):  # per epoch: the first fold's validation loss
            return [epoch_pruning_callback(trial, metric.direction)] if epoch_pruning and unit.index == 0 else []

        scores, results = [], []
        try:
            for i, result in enumerate(train_folds(data, units, run.fold_dir, label=f"trial {trial.number} ",
                                                   callbacks=callbacks, save=False)):
                scores.append(result.score)  # the fold's best member, until the ensemble is weighed
                results.append(result)
                if tc.pruner == "wilcoxon":
                    trial.report(result.score, step=i)
                    if trial.should_prune():
                        trial.set_user_attr("fold_scores", scores)
                        raise optuna.TrialPruned(f"after {i + 1} folds: {np.round(scores, 5).tolist()}")
        finally:  # a study keeps scores, not models: the trial's Run is closed and its folder removed
            run.unlock()
            shutil.rmtree(run.dir, ignore_errors=True)
            trial.set_user_attr("rss_mb", round(rss_mb(), 1))
        # Scored as a run is: the members weighed by the cross-fitted ensemble, each row's mean
        # over the repeats that predicted it.
        cv = gather(data, units, results)
        seen = cv.oof_count > 0
        value = metric(data.y[seen], cv.oof[seen], data.task)
        scores = [r.score for r in results]
        trial.set_user_attr("fold_scores", scores)
        log.info("trial %d: %s %.5g (folds %s)", trial.number, metric.name, value, np.round(scores, 5).tolist())
        return value

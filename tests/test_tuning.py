"""Optuna studies: trials, failures, pruning, worker processes on one storage, resume, best overlay."""
import os

import numpy as np
import optuna
import pytest
import yaml

from pipeline.config_files import load_config
from pipeline.errors import ConfigError
from pipeline import tune

pytestmark = pytest.mark.slow

HGB = ["model.name=hgb", "cv.folds=3", "tune.pruner=none"]
SPACE = {"model.hgb.learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
         "model.hgb.max_leaf_nodes": {"type": "int", "low": 4, "high": 32}}


def comp_with_space(tiny_comp, space=SPACE, name="diamonds"):
    cfg = tiny_comp(name, train_rows=300, test_rows=60)
    raw = yaml.safe_load(cfg.read_text())
    raw["tune"] = {"space": space}
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def trials_of(summary):
    storage = optuna.storages.RDBStorage(summary["storage"])
    return optuna.load_study(study_name=summary["study"], storage=storage).trials


def test_study_completes_and_best_overlay_reproduces_the_best_params(tiny_comp, tmp_path, monkeypatch):
    from pipeline.training.fold import FoldArtifact

    saved = []
    monkeypatch.setattr(FoldArtifact, "save", lambda *a, **k: saved.append(a))
    cfg = comp_with_space(tiny_comp)
    summary = tune(cfg, HGB, trials=4, output_dir=tmp_path, study="s")
    assert saved == []  # a trial keeps scores, not models
    assert summary["complete"] == 4 and summary["trials"] == 4 and summary["direction"] == "minimize"
    study_dir = tmp_path / "diamonds" / "studies" / "s"
    assert {"study.db", "best.yaml", "summary.json", "history.png", "importances.png", "tune.log"} <= {
        p.name for p in study_dir.iterdir()}
    trials = trials_of(summary)
    best = min((t for t in trials if t.value is not None), key=lambda t: t.value)
    resolved = load_config(cfg, HGB, params=study_dir / "best.yaml")
    assert resolved.model.hgb == {k.split(".")[-1]: v for k, v in best.params.items()}
    # In this process by default for short studies; the seeded TPE sampler repeats its choices.
    assert all(t.user_attrs["pid"] == os.getpid() for t in trials)
    again = tune(cfg, HGB, trials=4, output_dir=tmp_path / "again", study="s")
    assert [t.params for t in trials_of(again)] == [t.params for t in trials]


def test_failed_trial_is_recorded_and_the_study_goes_on(tiny_comp, tmp_path):
    space = {"model.hgb.max_leaf_nodes": {"type": "categorical", "choices": [1, 8, 16]}}  # 1 is invalid for HGB
    cfg = comp_with_space(tiny_comp, space)
    summary = tune(cfg, HGB + ["tune.seed=3"], trials=6, output_dir=tmp_path, study="f")
    trials = trials_of(summary)
    counted = [t for t in trials if "uncounted" not in t.user_attrs]
    failed = [t for t in counted if t.state.name == "FAIL"]
    assert failed and all(t.params["model.hgb.max_leaf_nodes"] == 1 for t in failed)
    assert "max_leaf_nodes" in failed[0].user_attrs["fail_reason"]
    # Three points: 8 and 16 are evaluated once each; a trial that draws them again stands down
    # and is not charged to the study's 6 (failed ones may be retried: a failure can be transient).
    complete = sorted(t.params["model.hgb.max_leaf_nodes"] for t in counted if t.state.name == "COMPLETE")
    assert complete == [8, 16]
    again = [t for t in trials if "uncounted" in t.user_attrs]
    assert again and all(t.user_attrs["uncounted"].startswith("duplicate of trial") for t in again)
    assert summary["fail"] == len(failed) and summary["complete"] == 2 and summary["trials"] == 6
    assert summary["uncounted"] == len(again)


def test_wilcoxon_stops_a_clearly_worse_trial_after_two_folds(tiny_comp, tmp_path):
    space = {"model.hgb.learning_rate": {"type": "categorical", "choices": [0.1, 0.0001]}}
    cfg = comp_with_space(tiny_comp, space)
    overrides = ["model.name=hgb", "cv.folds=5", "tune.pruner=wilcoxon"]
    study = optuna.create_study(study_name="w", storage=f"sqlite:///{tmp_path / 'w.db'}")
    study.enqueue_trial({"model.hgb.learning_rate": 0.1})
    study.enqueue_trial({"model.hgb.learning_rate": 0.0001})
    summary = tune(cfg, overrides, trials=2, output_dir=tmp_path, study="w", storage=f"sqlite:///{tmp_path / 'w.db'}")
    good, bad = trials_of(summary)
    assert good.state.name == "COMPLETE" and len(good.user_attrs["fold_scores"]) == 5
    assert bad.state.name == "PRUNED" and len(bad.user_attrs["fold_scores"]) == 2


def test_epoch_pruning_callback_prunes_a_worse_trial():
    from pipeline.tuning.objective import epoch_pruning_callback

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1,
                                                                                        n_warmup_steps=0))
    first = study.ask()
    for step, loss in enumerate([0.5, 0.4, 0.3]):
        first.report(-loss, step)
    study.tell(first, 0.9)
    trial = study.ask()
    cb = epoch_pruning_callback(trial, "maximize")
    cb.on_epoch_end(0, {"val_loss": 0.45})  # better than the median so far: goes on
    with pytest.raises(optuna.TrialPruned):
        cb.on_epoch_end(1, {"val_loss": 0.9})
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {0: -0.45, 1: -0.9}


def test_two_worker_processes_share_one_study_each_trial_in_its_own_process(tiny_comp, tmp_path):
    cfg = comp_with_space(tiny_comp)
    journal = tmp_path / "shared" / "study.log"
    summary = tune(cfg, HGB, trials=4, jobs=2, output_dir=tmp_path, study="j", storage=str(journal))
    assert journal.is_file() and summary["complete"] == 4
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    trials = optuna.load_study(study_name="j", storage=JournalStorage(JournalFileBackend(str(journal)))).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 4 and os.getpid() not in pids  # isolation: one fresh process per trial


def test_a_killed_study_resumes_where_it_stopped(tiny_comp, tmp_path):
    import socket
    import subprocess

    cfg = comp_with_space(tiny_comp)
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    tune(cfg, HGB, trials=2, output_dir=tmp_path, study="k", storage=storage)
    # A trial whose process was killed mid-way: RUNNING, owned by a process that is gone.
    dead = subprocess.Popen(["true"])
    dead.wait()
    study = optuna.load_study(study_name="k", storage=storage)
    orphan = study.ask()
    orphan.set_user_attr("pid", dead.pid)
    orphan.set_user_attr("host", socket.gethostname())
    summary = tune(cfg, HGB, trials=5, output_dir=tmp_path, study="k", storage=storage)
    states = [t.state.name for t in trials_of(summary)]
    # The dead worker's trial is FAIL with the reason and is not charged: 5 trials still run.
    assert states[:2] == ["COMPLETE", "COMPLETE"] and states[2] == "FAIL" and states[3:] == ["COMPLETE"] * 3
    assert "is gone" in trials_of(summary)[2].user_attrs["fail_reason"]
    assert trials_of(summary)[2].user_attrs["uncounted"].startswith("worker") and summary["trials"] == 5


def test_study_opens_in_optuna_dashboard(tiny_comp, tmp_path):
    import json
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    cfg = comp_with_space(tiny_comp)
    summary = tune(cfg, HGB, trials=2, output_dir=tmp_path, study="d")
    app = wsgi(optuna.storages.RDBStorage(summary["storage"]))
    status, environ = [], {"PATH_INFO": "/api/studies"}
    setup_testing_defaults(environ)
    body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
    assert status[0].startswith("200")
    studies = json.loads(body)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["d"] and studies[0]["directions"] == ["minimize"]


def test_bad_search_space(tiny_comp, tmp_path):
    cfg = comp_with_space(tiny_comp, {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}})
    with pytest.raises(ConfigError, match="tune.space.train.learning_rate: unknown key 'train.learning_rate'"):
        tune(cfg, HGB, trials=1, output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing written
    cfg = comp_with_space(tiny_comp, {"train.lr": {"type": "float", "low": 1e-2, "high": 1e-4}})
    with pytest.raises(ConfigError, match="low < high"):
        tune(cfg, HGB, trials=1, output_dir=tmp_path)


def test_default_space_with_conditional_layers_for_the_mlp(tiny_comp, tmp_path):
    cfg = tiny_comp("diamonds", train_rows=200, test_rows=40)
    summary = tune(cfg, ["model.name=mlp", "train.epochs=2", "cv.folds=2", "tune.folds=1", "tune.pruner=median"], trials=3,
                   output_dir=tmp_path, study="m")
    trials = trials_of(summary)
    for t in trials:
        depth = t.params["model.mlp.hidden.depth"]
        assert sorted(k for k in t.params if "width" in k) == [f"model.mlp.hidden.width_{i}" for i in range(depth)]
    best = yaml.safe_load(open(summary["best_yaml"]))
    assert len(best["model"]["mlp"]["hidden"]) == trials[summary["best_trial"]].params["model.mlp.hidden.depth"]
    assert np.isfinite(summary["best_value"])

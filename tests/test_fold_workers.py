"""Folds trained side by side in worker processes (pipeline/cv/workers.py, train.fold_workers)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import FAST, ROOT


def _data(tiny_comp, overrides=(), **cut):
    from pipeline.config_files import load_config
    from pipeline.data import load_competition

    return load_competition(load_config(tiny_comp("diamonds", **cut), list(overrides)))


def test_auto_trains_one_fold_per_core_only_where_it_pays(tiny_comp, monkeypatch):
    import pipeline.cv.workers as workers
    import pipeline.tf_runtime as tf_runtime

    monkeypatch.setattr(tf_runtime, "usable_cores", lambda: 4)
    data = _data(tiny_comp)
    assert workers.fold_workers(data, 5) == 1  # 300 rows: a worker's start costs more than it saves
    monkeypatch.setattr(workers, "MIN_ROWS", 100)
    assert workers.fold_workers(data, 5) == 5  # 4 workers would leave 3 cores idle for the fifth fold
    assert workers.fold_workers(data, 8) == 4
    assert workers.fold_workers(data, 3) == 3
    assert workers.fold_workers(data, 1) == 1  # one fold left to train (a resumed run)
    assert workers.fold_workers(_data(tiny_comp, ["model.members=[hgb]"]), 5) == 1  # HGB uses the cores itself
    assert workers.fold_workers(_data(tiny_comp, ["train.strategy=mirrored"]), 5) == 1
    monkeypatch.setattr(workers, "_available_memory", lambda: 3 * workers.WORKER_BYTES)
    assert workers.fold_workers(data, 5) == 2  # as many as the memory holds
    monkeypatch.setattr(workers, "MAX_TABLE_BYTES", 1000)
    assert workers.fold_workers(data, 5) == 1  # each worker gets a copy of the table
    assert workers.fold_workers(_data(tiny_comp, ["train.fold_workers=3"]), 5) == 3  # as set
    assert workers.fold_workers(_data(tiny_comp, ["train.fold_workers=3"]), 2) == 2


def test_balanced_workers_keep_every_core_busy_to_the_last_fold():
    from pipeline.cv.workers import balanced_workers

    for pending in range(1, 25):
        for cores in range(1, 9):
            w = balanced_workers(pending, cores)
            assert min(pending, cores) <= w <= pending
            # Equal folds on w processes sharing the cores end together: every round but the last
            # has w folds, the last has pending % w (or w), and none may hold fewer than the cores.
            last = pending % w or w
            assert last >= min(cores, pending)
            # ... and no smaller count of workers (at least the cores) would do.
            assert all(0 < pending % v < cores for v in range(min(cores, pending), w))
    assert balanced_workers(5, 2) == 3 and balanced_workers(10, 2) == 2 and balanced_workers(7, 2) == 4


@pytest.mark.slow
def test_folds_side_by_side_give_the_run_one_at_a_time_gives(tiny_comp, tmp_path):
    from pipeline import run_competition
    from pipeline.runs import Run

    cfg = tiny_comp("diamonds", train_rows=600)
    # The default members (realmlp, HGB, LightGBM), the trees kept short.
    common = FAST + ["cv.folds=3", "model.name=realmlp", "model.hgb.max_iter=20", "model.lightgbm.num_iterations=30"]
    one = run_competition(cfg, common + ["train.fold_workers=1"], output_dir=tmp_path, run_name="one")
    two = run_competition(cfg, common + ["train.fold_workers=2"], output_dir=tmp_path, run_name="two")
    for name in ("oof.csv", "test_pred.csv"):
        a, b = pd.read_csv(one.run_dir / name), pd.read_csv(two.run_dir / name)
        assert list(a.columns) == list(b.columns)
        np.testing.assert_allclose(b.iloc[:, 1:].to_numpy(float), a.iloc[:, 1:].to_numpy(float), rtol=1e-4)
    assert two.scores["cv_seconds"] > 0 and one.scores["cv_seconds"] > 0
    assert set(two.scores["members"]) == {"realmlp", "hgb", "lightgbm"}
    log = (two.run_dir / "run.log").read_text()
    assert "training 2 folds at a time" in log and "training 2 folds at a time" not in (one.run_dir / "run.log").read_text()
    # the workers' own lines reach the run's log, each fold's epochs and its summary once
    for k in range(3):
        assert log.count(f"fold_{k} ({k + 1}/3): training on") == 1
        assert f"fold_{k} ({k + 1}/3) epoch 2/2" in log
        assert log.count(f"fold_{k} ({k + 1}/3): rmse realmlp") == 1
    # the parent, which never built a network, loads and predicts with the workers' folds
    test = pd.read_csv(cfg.parent / "data" / "test.csv.gz")
    again = Run.open(two.run_dir).predict(test)
    saved = pd.read_csv(two.run_dir / "test_pred.csv")
    np.testing.assert_allclose(again.iloc[:, 1].to_numpy(float), saved.iloc[:, 1].to_numpy(float), rtol=1e-5)


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.add(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _training_run(tiny_comp, tmp_path, name: str):
    """run.py training 3 long folds, 2 at a time, once a worker's first epoch line is out: (the
    process, its output folder, its worker processes)."""
    cfg = tiny_comp("diamonds", train_rows=600)
    out, log = tmp_path / "out", tmp_path / "stdout.txt"
    args = [sys.executable, "run.py", "--comp", str(cfg), "--output-dir", str(out), "--run-name", name]
    for s in ("train.fold_workers=2", "model.members=[realmlp]", "model.realmlp.epochs=2000",
              "model.realmlp.hidden=[16]", "cv.folds=3"):
        args += ["--set", s]
    with open(log, "w") as stdout:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and " epoch " not in log.read_text():
        time.sleep(0.5)
    workers = {p for p in _children(proc.pid) if b"resource_tracker" not in _cmdline(p)}  # not loky's helper
    assert " epoch " in log.read_text() and workers, log.read_text()[-3000:]
    return proc, out / "diamonds" / name, workers


def _ended(proc, timeout: float) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(proc.stderr.read()[-5000:])
    return code, proc.stderr.read()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_workers_and_marks_the_run_interrupted(tiny_comp, tmp_path):
    proc, run_dir, workers = _training_run(tiny_comp, tmp_path, "t")
    proc.send_signal(signal.SIGTERM)
    code, err = _ended(proc, 60)
    assert code == 143, err[-3000:]
    assert "interrupted (SIGTERM): finished folds are kept" in err
    assert json.loads((run_dir / "run.json").read_text())["state"] == "interrupted"
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not [p for p in workers if _alive(p)], "worker processes outlived the run"
    assert not any((run_dir / "folds").glob("*/result.json"))  # no fold finished


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_killed_from_outside_fails_the_run_with_one_line(tiny_comp, tmp_path):
    proc, run_dir, workers = _training_run(tiny_comp, tmp_path, "k")
    for pid in workers:  # what the kernel's out-of-memory killer does
        os.kill(pid, signal.SIGKILL)
    code, err = _ended(proc, 120)
    assert code not in (0, 143) and "Traceback" not in err, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("error:")] == [next(
        line for line in err.splitlines() if "a worker process training folds died" in line)]
    assert "train.fold_workers=1" in err
    assert json.loads((run_dir / "run.json").read_text())["state"] == "failed"

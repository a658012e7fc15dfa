"""Tuning from many processes: distinct points per worker, the overlay in every trial, exact trial
counts on a shared storage (a journal file, and a real PostgreSQL server), workers that do not
outlive their parent."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import ROOT
from test_tuning import HGB, comp_with_space, trials_of

from pipeline import tune
from pipeline.tuning.budget import UNCOUNTED
from pipeline.tuning.study import make_storage

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "tools" / "postgres.sh"


def counted(trials):
    return [t for t in trials if UNCOUNTED not in t.user_attrs]


def points(trials):
    return [tuple(sorted(t.params.items())) for t in trials]


def test_isolated_workers_sample_distinct_points_and_a_restart_adds_new_ones(tiny_comp, tmp_path):
    cfg = comp_with_space(tiny_comp)
    overrides = HGB + ["tune.isolate=true"]
    # Each trial is a spawned process (TensorFlow imported, ~8 s): 3, then 2 more.
    first = tune(cfg, overrides, trials=3, output_dir=tmp_path, study="iso", smoke=True)
    trials = trials_of(first)
    assert first["trials"] == 3 and len({t.user_attrs["pid"] for t in trials}) == 3  # one process each
    assert len(set(points(trials))) == 3, points(trials)
    again = tune(cfg, overrides, trials=5, output_dir=tmp_path, study="iso", smoke=True)
    trials = counted(trials_of(again))
    assert len(trials) == 5 and len(set(points(trials))) == 5
    assert not (tmp_path / "diamonds" / "studies" / "iso" / "trials").exists()  # scratch removed


def test_params_overlay_is_the_base_of_every_trial(tiny_comp, tmp_path):
    cfg = comp_with_space(tiny_comp)
    overlay = tmp_path / "base.yaml"
    overlay.write_text(yaml.safe_dump({"model": {"hgb": {"l2_regularization": 0.5}}, "cv": {"folds": 2}}))
    summary = tune(cfg, HGB, trials=2, output_dir=tmp_path, study="p", params=overlay)
    for t in trials_of(summary):
        config = yaml.safe_load(t.user_attrs["config"])  # the trial's fully resolved config
        assert config["model"]["hgb"]["l2_regularization"] == 0.5
        assert config["model"]["hgb"]["learning_rate"] == t.params["model.hgb.learning_rate"]
        assert config["cv"]["folds"] == 3  # --set (HGB) wins over the overlay, as in a run
        assert config["task"] == "regression"  # resolved


def _two_workers(cfg, storage: str, out: Path, study: str, trials: int = 4):
    args = [sys.executable, "run.py", "--comp", str(cfg), "--tune", "--smoke", "--trials", str(trials),
            "--storage", storage, "--study", study, "--output-dir", str(out)]
    for o in HGB:
        args += ["--set", o]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    return [(p.wait(timeout=900), p.stdout.read()) for p in procs]


def _check_shared_study(results, storage: str, study: str, out: Path, trials: int = 4):
    assert [rc for rc, _ in results] == [0, 0], [o[-3000:] for _, o in results]
    loaded = optuna.load_study(study_name=study, storage=make_storage(storage)).trials
    kept = counted(loaded)
    assert len(kept) == trials and all(t.state.name == "COMPLETE" for t in kept)
    assert len(set(points(kept))) == trials
    assert len({t.user_attrs["pid"] for t in kept}) == 2  # both processes evaluated trials
    written = sum("best.yaml written" in o for _, o in results)
    assert written == 1, [o[-2000:] for _, o in results]
    assert (out / "diamonds" / "studies" / study / "best.yaml").is_file()


def test_two_processes_on_one_journal_file(tiny_comp, tmp_path):
    cfg = comp_with_space(tiny_comp)
    storage = str(tmp_path / "shared" / "study.log")
    results = _two_workers(cfg, storage, tmp_path / "out", "j")
    _check_shared_study(results, storage, "j", tmp_path / "out")


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server: $PIPELINE_TEST_POSTGRES_URL (CI starts one with tools/postgres.sh), else
    a throwaway one started here when PostgreSQL is installed."""
    url = os.environ.get("PIPELINE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if not (shutil.which("pg_ctl") or list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))):
        pytest.skip("PostgreSQL is not installed: run tools/postgres.sh start (as root it installs the Debian "
                    "package) and set PIPELINE_TEST_POSTGRES_URL to the URL it prints")
    import tempfile

    # Not under pytest's tmp folder: as root the server runs as the user postgres, which must reach it.
    base = tempfile.mkdtemp(prefix="pipeline-pg-")
    os.chmod(base, 0o755)
    env = {**os.environ, "PIPELINE_PG_STATE": f"{base}/state", "PIPELINE_PG_PORT": "54391", "PIPELINE_PG_DB": "tests"}
    proc = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"tools/postgres.sh start failed: {proc.stderr[-500:]}")
    yield proc.stdout.strip().splitlines()[-1]
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.postgres
def test_two_processes_on_one_postgresql_study(tiny_comp, tmp_path, postgres_url):
    cfg = comp_with_space(tiny_comp)
    study = f"pg-{os.getpid()}-{time.time_ns()}"
    results = _two_workers(cfg, postgres_url, tmp_path / "out", study)
    _check_shared_study(results, postgres_url, study, tmp_path / "out")
    # A bare postgresql:// URL reaches the same study (SQLAlchemy 2.1 maps it to psycopg 3).
    bare = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    assert len(optuna.load_study(study_name=study, storage=make_storage(bare)).trials) >= 4


def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    """The parent dies without any cleanup (kill -9): its spawned worker must not run on."""
    script = tmp_path / "parent.py"
    script.write_text(f"""
import multiprocessing as mp, os, sys, time
sys.path.insert(0, {str(ROOT)!r})
from pipeline.tuning.study import _watch_parent

def child(parent):
    import threading
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    time.sleep(120)

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child, args=(os.getpid(),))
    p.start()
    print(p.pid, flush=True)
    time.sleep(1.0)
    os.kill(os.getpid(), 9)
""")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state == "Z":  # exited; only its reaping is left to whoever adopted it
            return
        time.sleep(0.2)
    os.kill(child, 9)
    pytest.fail("the worker outlived its parent")

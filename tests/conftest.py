"""Shared fixtures: small real data cut from the embedded competitions, written in Kaggle layout."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _share_cores_between_test_workers() -> None:
    """Each pytest-xdist worker gets its share of the cores for TensorFlow's pools and OpenMP
    (HGB), as the run's own fold workers do (cv/workers.py): with every process sized to the whole
    machine, OpenMP threads spin waiting on each other; on the 2-core CI machine the tuning study's
    300-row HGB test took 210 s in the suite against 25 s alone beside one busy process, and 14 s
    there with one OpenMP thread. xdist sets PYTEST_XDIST_WORKER_COUNT before conftest is imported;
    a variable the user set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    from pipeline.tf_runtime import usable_cores

    share = str(max(1, usable_cores() // workers))
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(name, share)


_share_cores_between_test_workers()

ROOT = Path(__file__).resolve().parents[1]
COMPS = ROOT / "competitions"
FILES = ("train", "test", "sample_submission", "solution")


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pytest.ini) as the CPU quota allows: xdist counts the machine's cores, which in
    a container capped at 2 cores' time can read 16, and 16 TensorFlow processes sharing 2 cores
    run the suite slower than 2 (tf_runtime.usable_cores reads the affinity mask and cpu.max)."""
    from pipeline.tf_runtime import usable_cores

    return usable_cores()


IMAGE_COMPS = {"mnist"}  # image files named by the id column, in data/train and data/test


def read_embedded(name: str) -> dict[str, pd.DataFrame]:
    text = {"id": str} if name in IMAGE_COMPS else None
    return {f: pd.read_csv(COMPS / name / "data" / f"{f}.csv.gz", dtype=text) for f in FILES}


def write_competition(dest: Path, name: str, frames: dict[str, pd.DataFrame]) -> Path:
    """A copy of competitions/<name>/config.yaml with the given frames as its data (and, for image
    competitions, the image files of their rows); returns the config."""
    (dest / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(COMPS / name / "config.yaml", dest / "config.yaml")
    for f, df in frames.items():
        df.to_csv(dest / "data" / f"{f}.csv.gz", index=False)
    if name in IMAGE_COMPS:
        for split in ("train", "test"):
            (dest / "data" / split).mkdir(exist_ok=True)
            for image_id in frames[split]["id"]:
                src = COMPS / name / "data" / split / f"{image_id}.png"
                if src.is_file():
                    shutil.copy(src, dest / "data" / split / src.name)
    return dest / "config.yaml"


def cut(name: str, train_rows: int = 300, test_rows: int = 120) -> dict[str, pd.DataFrame]:
    """The first rows of an embedded competition, with sample submission and solution to match."""
    full = read_embedded(name)
    test = full["test"].head(test_rows)
    ids = set(test["id"])
    return {"train": full["train"].head(train_rows), "test": test,
            "sample_submission": full["sample_submission"][full["sample_submission"]["id"].isin(ids)],
            "solution": full["solution"][full["solution"]["id"].isin(ids)]}


@pytest.fixture
def tiny_comp(tmp_path):
    """Factory: tiny_comp("diamonds", **edits) → config path of a small copy in tmp_path."""
    def make(name: str = "diamonds", frames: dict | None = None, train_rows: int = 300, test_rows: int = 120):
        frames = frames or cut(name, train_rows, test_rows)
        return write_competition(tmp_path / name, name, frames)
    return make


# Few epochs and folds: the whole path, not the score.
FAST = ["train.epochs=2", "cv.folds=2", "train.log_every=1", "model.mlp.hidden=[16, 8]", "train.seeds=1",
        "model.realmlp.epochs=2", "model.realmlp.hidden=[16, 8]", "diagnostics.importance=false",
        "diagnostics.adversarial=false"]


@pytest.fixture(autouse=True)
def _training_tests_are_marked_slow(request, monkeypatch):
    """A test that trains a fold (the CV loop's fit_fold) must be marked slow, so that
    ``-m "not slow"`` stays quick; one that is not fails here, naming itself."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    import pipeline.cv.loop as loop

    real, calls = loop.fit_fold, []

    def counted(*args, **kwargs):
        calls.append(args[1] if len(args) > 1 else kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "fit_fold", counted)
    yield
    assert not calls, f"{request.node.nodeid} trains folds {calls[:3]} but is not marked @pytest.mark.slow"

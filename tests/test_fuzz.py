"""Fuzzing the whole path with hypothesis: small competitions made at random (column types, blanks,
unicode, huge and empty values, labels with spaces) and config variations. Every outcome must be a
finished run or one PipelineError line, never another exception, and nothing half-written.

The suite runs a bounded number of examples; by hand: FUZZ_EXAMPLES=300 python -m pytest -q tests/test_fuzz.py
"""
import os
import string

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import run_competition
from pipeline.errors import PipelineError

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))

TEXT = st.text(alphabet=string.ascii_letters + " é中\t", min_size=0, max_size=6)
NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10**12, 10**12))
CELL = {"int": st.integers(-5, 5), "float": NUMBER, "text": TEXT, "bool": st.booleans(),
        "mixed": st.one_of(st.integers(0, 9), st.sampled_from(["?", "", " ", "n/a", "x"]))}


@st.composite
def competitions(draw):
    n_train, n_test = draw(st.integers(4, 30)), draw(st.integers(1, 8))
    kinds = draw(st.lists(st.sampled_from(sorted(CELL)), min_size=0, max_size=4))
    columns = {}
    for i, kind in enumerate(kinds):
        values = draw(st.lists(st.one_of(CELL[kind], st.none()), min_size=n_train + n_test,
                               max_size=n_train + n_test))
        columns[f"c{i}_{kind}"] = values
    task = draw(st.sampled_from(["regression", "binary", "multiclass"]))
    if task == "regression":
        target = draw(st.lists(NUMBER, min_size=n_train, max_size=n_train))
    elif task == "binary":
        labels = draw(st.sampled_from([["yes", " yes", "no"], [0, 1], ["a", "b"], [True, False]]))
        target = draw(st.lists(st.sampled_from(labels), min_size=n_train, max_size=n_train))
    else:
        target = draw(st.lists(st.sampled_from(["x", "y", "z", 3]), min_size=n_train, max_size=n_train))
    config = {"data": {"target": "target"}}
    if draw(st.booleans()):
        config["metric"] = draw(st.sampled_from(["rmse", "mae", "auc", "logloss", "accuracy"]))
    if draw(st.booleans()):
        config["data"]["positive_label"] = draw(st.sampled_from([True, "yes", 1, "nope"]))
    overrides = [f"cv.folds={draw(st.integers(2, 4))}", "train.epochs=1", "model.mlp.hidden=[4]",
                 "model.realmlp.epochs=1", "model.realmlp.hidden=[4]", "train.seeds=1",
                 f"model.name={draw(st.sampled_from(['linear', 'mlp']))}"]
    return columns, target, n_train, config, overrides


def _write(folder, columns, target, n_train, config):
    data = folder / "data"
    data.mkdir(parents=True)
    frame = pd.DataFrame(columns, dtype=object) if columns else pd.DataFrame(index=range(n_train + len(target) * 0))
    ids = np.arange(len(frame) if columns else n_train + 3)
    frame = frame.reindex(range(len(ids)))
    frame.insert(0, "id", ids)
    train, test = frame.iloc[:n_train].copy(), frame.iloc[n_train:].copy()
    train["target"] = target
    train.to_csv(data / "train.csv", index=False)
    test.to_csv(data / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "target": 0}).to_csv(data / "sample_submission.csv", index=False)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder / "config.yaml"


def _tally(outcome: str) -> None:
    """FUZZ_LOG=file: one line per example's outcome, to count them after a long run by hand."""
    if os.environ.get("FUZZ_LOG"):
        with open(os.environ["FUZZ_LOG"], "a") as f:
            f.write(outcome.replace("\n", " ") + "\n")


@settings(max_examples=EXAMPLES, deadline=None, derandomize="FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(competitions())
def test_any_input_finishes_or_gives_one_pipeline_error(tmp_path_factory, example):
    columns, target, n_train, config, overrides = example
    folder = tmp_path_factory.mktemp("fuzz")
    cfg = _write(folder / "comp", columns, target, n_train, config)
    out = folder / "out"
    try:
        result = run_competition(cfg, overrides, output_dir=out, run_name="f")
    except PipelineError as exc:
        _tally(f"error: {str(exc).split(':')[-2][-40:] if ':' in str(exc) else str(exc)[:40]}")
        assert str(exc) and "\n" not in str(exc).strip(), repr(exc)
        assert not list(out.glob("*/f/scores.json")) and not list(out.glob("*/f/submission.csv"))
    else:
        _tally("finished")
        sub = pd.read_csv(result.files["submission"])
        assert len(sub) == len(pd.read_csv(folder / "comp" / "data" / "test.csv"))
    leftovers = [p for p in out.rglob("*") if p.name.endswith((".tmp", ".partial"))] if out.exists() else []
    assert not leftovers, leftovers

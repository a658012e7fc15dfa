"""Level-2: hill climbing, the nested stacker's honesty, stacking runs end to end, mismatches."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import FAST
from pipeline.errors import ConfigError, DataError
from pipeline.metrics import get_metric
from pipeline.runs import file_sha256
from pipeline.ensemble import caruana as hill_climb
from pipeline.stacking.level2 import nested


def test_hill_climbing_recovers_known_weights():
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    d = rng.normal(size=500)
    # 2/3 * a + 1/3 * b == y exactly; c is noise.
    a, b, c = y + d, y - 2 * d, y + 3 * rng.normal(size=500)
    rmse = get_metric("rmse", "regression")
    np.testing.assert_allclose(hill_climb([a, b, c], y, "regression", rmse), [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(hill_climb([c, y + d, y - d], y, "regression", rmse), [0, 0.5, 0.5])
    auc = get_metric("auc", "binary")  # maximized metrics climb the other way
    yb = (y > 0).astype(int)
    w = hill_climb([np.clip(0.5 + 0.1 * y + 0.05 * d, 0, 1), rng.uniform(size=500)], yb, "binary", auc)
    assert w[0] == 1.0


@pytest.mark.parametrize("method", ["linear", "hill", "keras"])
@pytest.mark.parametrize("task", ["regression", "binary"])
def test_nested_stacker_never_uses_a_rows_own_label(method, task):
    """Leakage canary: changing the labels of fold 0's rows leaves fold 0's stacked OOF unchanged."""
    rng = np.random.default_rng(1)
    n = 300
    signal = rng.normal(size=n)
    folds = np.arange(n) % 3
    if task == "regression":
        y = signal + 0.1 * rng.normal(size=n)
        members = [signal + 0.3 * rng.normal(size=n) for _ in range(3)]
        metric = get_metric("rmse", task)
    else:
        y = (signal > 0).astype(int)
        members = [1 / (1 + np.exp(-(signal + rng.normal(size=n)))) for _ in range(3)]
        metric = get_metric("logloss", task)
    tests = [m[:50] for m in members]
    oof, _, _ = nested(method, members, tests, y, folds, task, metric)
    flipped = y.copy()
    flipped[folds == 0] = (-y[folds == 0] * 5) if task == "regression" else 1 - y[folds == 0]
    again, _, _ = nested(method, members, tests, flipped, folds, task, metric)
    np.testing.assert_allclose(oof[folds == 0], again[folds == 0])
    assert not np.allclose(oof[folds != 0], again[folds != 0])  # the labels do reach the other folds


@pytest.fixture(scope="module")
def _two_runs_once(tmp_path_factory):
    from conftest import cut, write_competition
    from pipeline import run_competition

    base = tmp_path_factory.mktemp("two_runs")
    cfg = write_competition(base / "health_insurance", "health_insurance", cut("health_insurance", 400, 100))
    run_competition(cfg, FAST, output_dir=base / "out", run_name="mlp")
    run_competition(cfg, ["model.name=hgb", "cv.folds=2"], output_dir=base / "out", run_name="hgb")
    return base


@pytest.fixture
def two_runs(_two_runs_once, tmp_path):
    """The two runs, trained once for the module, copied for each test (which may add runs beside them)."""
    import shutil

    shutil.copytree(_two_runs_once, tmp_path / "two_runs")
    return tmp_path / "two_runs" / "health_insurance" / "config.yaml", tmp_path / "two_runs" / "out"


@pytest.mark.slow
def test_stack_two_runs_end_to_end(two_runs):
    import run

    cfg, out = two_runs
    assert run.main(["--comp", str(cfg), "--stack", "mlp", "hgb", "--stack-methods", "linear", "hill", "rank",
                     "keras", "--output-dir", str(out), "--run-name", "st"]) == 0
    st = out / "health_insurance" / "st"
    scores = json.loads((st / "scores.json").read_text())
    methods = {m for m in scores["methods"] if not m.startswith("best member")}
    assert set(scores["members"]) == {"mlp", "hgb"} and methods == {"linear", "hill", "rank", "keras"}
    assert scores["cv"] >= max(scores["members"].values())  # never below its better member (AUC)
    assert scores["method"] in scores["methods"] and scores["cv"] == scores["methods"][scores["method"]]["cv"]
    assert {"holdout", "members_holdout"} <= set(scores) and "weights" in scores["methods"]["hill"]
    sample = pd.read_csv(cfg.parent / "data" / "sample_submission.csv.gz")
    sub = pd.read_csv(st / "submission.csv")
    assert list(sub.columns) == list(sample.columns) and len(sub) == len(sample) and sub["whi"].between(0, 1).all()
    oof = pd.read_csv(st / "oof.csv")
    folds = pd.read_csv(out / "health_insurance" / "mlp" / "folds.csv")
    assert (oof["fold"] == folds["fold"]).all() and len(oof) == 400
    # A stack is a run: it can itself be a member (same folds, same ids); the config section works too.
    raw = yaml.safe_load(cfg.read_text())
    raw["stack"] = {"runs": ["st", "hgb"], "methods": ["hill"]}
    cfg.write_text(yaml.safe_dump(raw))
    assert run.main(["--comp", str(cfg), "--stack", "--output-dir", str(out), "--run-name", "st2"]) == 0
    again = json.loads((out / "health_insurance" / "st2" / "scores.json").read_text())
    assert again["members"]["st"] == scores["cv"] and set(again["methods"]) - {"best member st", "best member hgb"} == {"hill"}
    assert run.main(["--comp", str(cfg), "--stack", "--tune"]) == 2


@pytest.mark.slow
def test_stack_mismatches_are_refused(two_runs, tmp_path):
    from pipeline import run_competition
    from pipeline import stack_runs

    cfg, out = two_runs
    comp = out / "health_insurance"

    def refused(exc, pattern, runs, **kw):
        with pytest.raises(exc, match=pattern):
            stack_runs(cfg, runs, output_dir=out, run_name="bad", **kw)
        assert not (comp / "bad").exists()

    run_competition(cfg, ["model.name=hgb", "cv.folds=2", "cv.seed=7"], output_dir=out, run_name="other_folds")
    refused(DataError, r"--stack other_folds: its folds differ from mlp's", ["mlp", "other_folds"])
    refused(DataError, r"--stack nope: no run folder .* Runs of this competition: \['hgb', 'mlp'",
            ["mlp", "nope"])
    refused(ConfigError, "at least 2 runs", ["mlp"])
    refused(ConfigError, "rank averaging suits rank metrics", ["mlp", "hgb"], overrides=["metric=logloss"],
            methods=["rank"])
    refused(ConfigError, "unknown stacker 'ridge'", ["mlp", "hgb"], methods=["ridge"])
    # Another task: a copy of a run whose config says regression.
    import shutil

    shutil.copytree(comp / "hgb", comp / "regr")
    saved = yaml.safe_load((comp / "regr" / "config.yaml").read_text())
    (comp / "regr" / "config.yaml").write_text(yaml.safe_dump({**saved, "task": "regression"}))
    refused(DataError, r"--stack regr: .*config.yaml has changed since the run finished", ["mlp", "regr"])
    rerecorded(comp / "regr", "config.yaml")  # as if it had been trained so
    refused(DataError, r"--stack regr: the run's task is regression, the competition's is binary", ["mlp", "regr"])
    # Ids that do not line up.
    shutil.copytree(comp / "hgb", comp / "shuffled")
    oof = pd.read_csv(comp / "shuffled" / "oof.csv")
    oof.iloc[::-1].to_csv(comp / "shuffled" / "oof.csv", index=False)
    rerecorded(comp / "shuffled", "oof.csv")
    refused(DataError, r"--stack shuffled: oof.csv ids do not line up with the training rows", ["mlp", "shuffled"])


def rerecorded(run_dir, name):
    """run.json's record of a file made to match its edited text: the run as if trained so."""
    info = json.loads((run_dir / "run.json").read_text())
    info["files"][name] = {"size": (run_dir / name).stat().st_size, "sha256": file_sha256(run_dir / name)}
    (run_dir / "run.json").write_text(json.dumps(info))


@pytest.mark.slow
@pytest.mark.parametrize("name, model", [("diamonds", "hgb"), ("diamonds", "linear"), ("health_insurance", "linear")])
def test_sklearn_members_run_through_the_same_cv(tiny_comp, tmp_path, name, model):
    from pipeline import run_competition
    from pipeline.training import load_fold_predictor

    cfg = tiny_comp(name, train_rows=300, test_rows=60)
    result = run_competition(cfg, [f"model.name={model}", "cv.folds=2"], output_dir=tmp_path, run_name="r")
    assert np.isfinite(result.scores["cv"]) and np.isfinite(result.scores["holdout"])
    fold = result.run_dir / "folds" / "fold_0"
    assert (fold / model / "model.skops").is_file() and not list(fold.glob("**/*.keras"))
    saved = np.load(fold / "predictions.npz")
    train = pd.read_csv(cfg.parent / "data" / "train.csv.gz")
    np.testing.assert_allclose(load_fold_predictor(fold)(train.iloc[saved["valid_idx"]]), saved[f"oof__{model}"],
                               rtol=1e-6)
    with pytest.raises(ConfigError, match=f"model.{model} .* do not fit {model}"):
        run_competition(cfg, [f"model.name={model}", f"model.{model}={{nonsense: 1}}"], output_dir=tmp_path)

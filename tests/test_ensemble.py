"""A run's members and their ensemble (pipeline/ensemble.py, training/members.py, cv/loop.gather):
weights fitted on OOF predictions, cross-fitted scores, the constant guard, members that score
inside a run as they do alone, and predictions that go through the one interface."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from conftest import FAST, cut

from pipeline.cv.folds import FoldUnit
from pipeline.ensemble import caruana, constant_prediction, fit_ensemble, weighted
from pipeline.metrics import get_metric


def _members(task: str, n: int = 600, seed: int = 0):
    """Two useful members of different strength and one of pure noise, with their labels."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    if task == "regression":
        y = signal + 0.5 * rng.normal(size=n)
        good, fair = signal + 0.6 * rng.normal(size=n), signal + 0.9 * rng.normal(size=n)
        noise = rng.normal(loc=3.0, size=n)
    elif task == "binary":
        y = (signal + rng.normal(size=n) > 0).astype(int)
        good = 1 / (1 + np.exp(-(signal + 0.7 * rng.normal(size=n))))
        fair = 1 / (1 + np.exp(-(signal + 1.2 * rng.normal(size=n))))
        noise = rng.uniform(size=n)
    else:
        y = np.digitize(signal + 0.5 * rng.normal(size=n), [-0.5, 0.5])

        def proba(scale):
            noisy = signal + scale * rng.normal(size=n)
            logits = np.stack([-0.5 * (noisy - c) ** 2 for c in (-1, 0, 1)], axis=1)
            e = np.exp(logits - logits.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)

        good, fair = proba(0.5), proba(1.0)
        noise = rng.dirichlet(np.ones(3), size=n)
    folds = np.arange(n) % 5
    return {"good": good, "fair": fair, "noise": noise}, y, folds


METRICS = {"regression": "rmse", "binary": "auc", "multiclass": "logloss"}


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_weights_sum_to_one_and_never_below_the_best_member_in_sample(task):
    preds, y, _ = _members(task)
    metric = get_metric(METRICS[task], task)
    w = caruana(list(preds.values()), y, task, metric)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    sign = 1 if metric.direction == "maximize" else -1
    best = max(sign * metric(y, p, task) for p in preds.values())
    assert sign * metric(y, weighted(list(preds.values()), w), task) >= best - 1e-12


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_cross_fitted_oof_is_never_better_than_in_sample_and_noise_gets_weight_0(task, caplog):
    preds, y, folds = _members(task)
    metric = get_metric(METRICS[task], task)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        ens = fit_ensemble(preds, y, folds, task, metric, n_classes=3)
    sign = 1 if metric.direction == "maximize" else -1
    cv = metric(y, ens.oof, task)
    assert sign * cv <= sign * ens.in_sample + 1e-12  # the cross-fitted score is out of sample
    assert sum(ens.weights) == pytest.approx(1.0) and min(ens.weights) >= 0
    weights = dict(zip(ens.names, ens.weights))
    assert weights["noise"] == 0 and ens.dropped == ["noise"]
    warning = [r.getMessage() for r in caplog.records if "noise" in r.getMessage()]
    assert warning and "no better than a constant" in warning[0] and f"{ens.member_scores['noise']:.5g}" in warning[0]
    # Never worse than the best member alone, on the reported (cross-fitted) OOF score.
    assert sign * cv >= max(sign * s for s in ens.member_scores.values()) - 1e-12
    # The final weights make the test predictions.
    np.testing.assert_allclose(ens.predict(preds), weighted([preds[n] for n in ens.names], ens.weights))


def test_a_weaker_ensemble_falls_back_to_its_best_member():
    rng = np.random.default_rng(3)
    y = rng.normal(size=400)
    best = y + 0.1 * rng.normal(size=400)
    # A member that fits the other folds' rows and not its own: weights fitted elsewhere mislead.
    worse = y + 1.0 * rng.normal(size=400)
    ens = fit_ensemble({"best": best, "worse": worse}, y, np.arange(400) % 4, "regression", get_metric("rmse", "regression"))
    metric = get_metric("rmse", "regression")
    assert metric(y, ens.oof, "regression") <= metric(y, best, "regression") + 1e-12


def test_one_predicted_fold_gives_the_best_member_alone():
    """A time limit that let one fold run leaves one group: no weights can be cross-fitted."""
    rng = np.random.default_rng(4)
    y = (rng.uniform(size=300) < 0.4).astype(int)
    good, noisy = y * 0.6 + rng.uniform(0, 0.4, 300), y * 0.2 + rng.uniform(0, 0.8, 300)
    one_fold = np.zeros(300, dtype=int)
    ens = fit_ensemble({"noisy": noisy, "good": good}, y, one_fold, "binary", get_metric("auc", "binary"))
    assert ens.method == "best member" and ens.weights == [0.0, 1.0] and "only one fold" in ens.note
    np.testing.assert_array_equal(ens.oof, good)


def test_fixed_and_mean_weights():
    from pipeline.config import EnsembleConfig

    preds, y, folds = _members("regression")
    preds.pop("noise")
    fixed = fit_ensemble(preds, y, folds, "regression", get_metric("rmse", "regression"),
                         cfg=EnsembleConfig(method="fixed", weights={"good": 3, "fair": 1}))
    assert fixed.weights == [0.75, 0.25] and fixed.method == "fixed"
    mean = fit_ensemble(preds, y, folds, "regression", get_metric("rmse", "regression"), cfg=EnsembleConfig(method="mean"))
    assert mean.weights == [0.5, 0.5]


def test_the_constant_is_the_mean_or_the_prior():
    y = np.array([0, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(constant_prediction(y, "multiclass", 3)[0], [1 / 6, 2 / 6, 3 / 6])
    np.testing.assert_allclose(constant_prediction(y.astype(float), "regression", 0), 8 / 6)
    assert get_metric("auc", "binary")(y > 1, constant_prediction((y > 1).astype(float), "binary", 0), "binary") == 0.5


def test_gather_scores_each_row_by_its_mean_over_repeats():
    """A run and a tuning trial score the same thing: each row's mean over the repeats."""
    from types import SimpleNamespace

    from pipeline.config import EnsembleConfig
    from pipeline.cv.loop import gather
    from pipeline.training.artifact import FoldResult

    rng = np.random.default_rng(0)
    n = 40
    y = rng.normal(size=n)
    units, results = [], []
    for repeat in range(2):
        order = rng.permutation(n)
        for fold in range(2):
            valid = np.sort(order[fold::2])
            train = np.setdiff1d(np.arange(n), valid)
            units.append(FoldUnit(len(units), f"r{repeat}f{fold}", repeat, fold, train, valid))
            pred = y[valid] + rng.normal(size=len(valid))
            results.append(FoldResult(units[-1].name, valid, 0.0, 0, 0, 0.0, {"m": 0.0}, {"m": (pred, np.zeros(3))}))
    cfg = SimpleNamespace(metric="rmse", ensemble=EnsembleConfig())
    data = SimpleNamespace(train=pd.DataFrame(index=range(n)), task="regression", classes=[], y=y, cfg=cfg)
    cv = gather(data, units, results)
    mean = np.zeros(n)
    for r in results:
        mean[r.valid_idx] += r.members["m"][0] / 2
    np.testing.assert_allclose(cv.member_oof["m"], mean)
    np.testing.assert_allclose(cv.oof, mean)  # one member: the ensemble is that member


def test_lr_find_without_a_keras_member_is_one_error(tiny_comp, tmp_path):
    from pipeline.errors import ConfigError
    from pipeline import find_learning_rate

    cfg = tiny_comp("diamonds")
    with pytest.raises(ConfigError, match="no Keras model"):
        find_learning_rate(cfg, ["model.members=[hgb]"], output_dir=tmp_path)


def test_old_blend_keys_and_member_count_say_what_replaced_them():
    from pipeline.config import validate
    from pipeline.errors import ConfigError

    base = {"data": {"train": "t.csv", "target": "y"}}
    with pytest.raises(ConfigError, match="model.members"):
        validate({**base, "model": {"blend": "hgb"}}, "c.yaml")
    with pytest.raises(ConfigError, match="model.tabm.k"):
        validate({**base, "model": {"members": 16}}, "c.yaml")
    with pytest.raises(ConfigError, match="ensemble.weights"):
        validate({**base, "ensemble": {"method": "fixed"}}, "c.yaml")
    from pipeline.config_files import check_key

    with pytest.raises(ConfigError, match="model.blend_weight was replaced: .*ensemble.weights"):
        check_key("model.blend_weight", "--set")


# ----------------------------------------------------------------------------- runs


def _count_frames():
    """diamonds' rows with a count target (visits) drawn from the size columns."""
    frames = cut("diamonds", 300, 120)
    rng = np.random.default_rng(0)
    frames["train"] = frames["train"].assign(price=rng.poisson(np.exp(1.2 * frames["train"]["carat"])))
    carat = frames["test"].set_index("id")["carat"]
    solution = frames["solution"]
    frames["solution"] = solution.assign(price=rng.poisson(np.exp(1.2 * carat.loc[solution["id"]].to_numpy())))
    return frames


def _cut_frames():
    """diamonds' cut as a 5-class target (as test_end_to_end's multiclass test builds it)."""
    frames = cut("diamonds", 300, 120)
    classes = sorted(frames["train"]["cut"].unique())
    frames["sample_submission"] = pd.DataFrame({"id": frames["test"]["id"], **{c: 0.2 for c in classes}})
    frames["solution"] = frames["test"][["id", "cut"]]
    frames["test"] = frames["test"].drop(columns=["cut"])
    frames["train"] = frames["train"].drop(columns=["price"])
    return frames


CASES = {
    "count": ("diamonds", _count_frames, ["train.loss=poisson"]),
    "rmsle": ("diamonds", None, ["metric=rmsle"]),
    "binary": ("health_insurance", None, []),
    "multiclass": ("diamonds", _cut_frames, ["data.target=cut", "task=multiclass", "metric=logloss"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_each_member_scores_in_the_run_as_it_does_alone_and_predict_agrees(case, tiny_comp, tmp_path):
    from pipeline import run_competition
    from pipeline.runs import Run

    name, frames, extra = CASES[case]
    cfg = tiny_comp(name, frames() if frames else None)
    base = FAST + extra + ["diagnostics.plots=false", "diagnostics.report=false"]
    both = run_competition(cfg, base + ["model.members=[mlp, hgb, lightgbm]"], output_dir=tmp_path, run_name="both")
    alone = {m: run_competition(cfg, base + [f"model.members=[{m}]"], output_dir=tmp_path, run_name=m)
             for m in ("mlp", "hgb", "lightgbm")}
    for member, run in alone.items():
        assert both.scores["members"][member] == pytest.approx(run.scores["cv"], rel=1e-6)
        for fold in ("fold_0", "fold_1"):
            inside = np.load(both.run_dir / "folds" / fold / "predictions.npz")[f"oof__{member}"]
            own = np.load(run.run_dir / "folds" / fold / "predictions.npz")[f"oof__{member}"]
            np.testing.assert_allclose(inside, own, rtol=1e-5, atol=1e-7)
    scores = both.scores
    ens = scores["ensemble"]
    assert sum(ens["weights"].values()) == pytest.approx(1.0) and set(ens["weights"]) == {"mlp", "hgb", "lightgbm"}
    sign = 1 if scores["direction"] == "maximize" else -1
    assert sign * scores["cv"] >= max(sign * v for v in scores["members"].values()) - 1e-12
    for trees in ("hgb", "lightgbm"):
        if case == "count":  # the trees fit the counts with their own Poisson loss, not the Keras model's link
            assert scores["members"][trees] < 1.5 * min(scores["members"].values())
            assert scores["member_info"][trees]["target"] == "poisson"
        if case == "rmsle":
            assert scores["member_info"][trees]["target"] == "log1p"
    assert scores["member_info"]["mlp"]["networks"] == ["model_best.keras"]
    # --predict and load_run go through the same members and weights as test_pred.csv.
    assert (both.run_dir / "folds" / "fold_0" / "lightgbm" / "model.txt").is_file()  # LightGBM's text model
    for result in (both, alone["hgb"], alone["lightgbm"]):
        run = Run.open(result.run_dir)
        test = pd.read_csv(cfg.parent / "data" / "test.csv.gz")
        again = run.predict(test).drop(columns=[run.cfg.data.id])
        saved = pd.read_csv(run.test_pred_path).drop(columns=[run.cfg.data.id])
        np.testing.assert_allclose(again.to_numpy(dtype=float), saved.to_numpy(dtype=float), rtol=1e-5, atol=1e-6)
    assert json.loads((both.run_dir / "ensemble.json").read_text())["weights"] == ens["weights"]


@pytest.mark.slow
def test_three_members_and_fixed_weights_predict_as_saved(tiny_comp, tmp_path):
    from pipeline import run_competition
    from pipeline.runs import Run

    cfg = tiny_comp("diamonds")
    result = run_competition(cfg, FAST + ["model.members=[mlp, linear, hgb]", "ensemble.method=fixed",
                                          "ensemble.weights={mlp: 1, linear: 1, hgb: 2}"],
                             output_dir=tmp_path, run_name="fixed")
    assert result.scores["ensemble"]["weights"] == {"mlp": 0.25, "linear": 0.25, "hgb": 0.5}
    run = Run.open(result.run_dir)
    test = pd.read_csv(cfg.parent / "data" / "test.csv.gz")
    again = run.predict(test)["price"].to_numpy()
    saved = pd.read_csv(run.test_pred_path)["price"].to_numpy()
    np.testing.assert_allclose(again, saved, rtol=1e-5)
    fold = result.run_dir / "folds" / "fold_0"
    assert {p.name for p in fold.iterdir()} >= {"mlp", "linear", "hgb", "preprocessing.skops", "predictions.npz"}
    assert (fold / "mlp" / "model_best.keras").is_file() and (fold / "hgb" / "model.skops").is_file()

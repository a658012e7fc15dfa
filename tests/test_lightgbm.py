"""The LightGBM member (pipeline/models/lgbm.py, training/members.py: LightGBMMember): the
reference settings, early stopping on an inner split, every task's output form, categoricals of
thousands of levels, a text model that predicts as it did after fit, and clear errors."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.errors import ConfigError, DataError
from pipeline.models.lgbm import booster_params, check_params, fit_booster, fit_rows, inner_split, predict_booster
from pipeline.preprocessing.table import InputSpec
from pipeline.training.members import MEMBER_FILE, FoldModel, LightGBMMember


def _fold(x: dict, y: np.ndarray, train: np.ndarray, valid: np.ndarray, spec: InputSpec):
    split = lambda rows: {k: v[rows] for k, v in x.items()}  # noqa: E731
    return SimpleNamespace(inputs=SimpleNamespace(x={"train": split(train), "valid": split(valid),
                                                     "test": split(valid)}),
                           pre=SimpleNamespace(input_spec_=spec), y_train=y[train], seed=0)


def _fit(x, y, task, n_classes, params, seed=0, poisson=False):
    """fit_booster as LightGBMMember calls it: the fit rows, then the watched ones."""
    fit, watch = fit_rows(y, task, params, seed)
    order = np.concatenate([fit, watch])
    return fit_booster(x[order], y[order], len(fit), [], task, n_classes, params, seed, poisson)


def test_the_reference_settings_and_each_tasks_objective():
    p = booster_params("regression", 0, {}, seed=3)
    assert (p["objective"], p["learning_rate"], p["num_iterations"], p["early_stopping_round"], p["seed"]) == \
        ("regression", 0.05, 2000, 100, 3)
    assert booster_params("regression", 0, {}, 0, poisson=True)["objective"] == "poisson"
    assert booster_params("multiclass", 4, {}, 0)["num_class"] == 4
    assert booster_params("binary", 0, {"num_leaves": 7, "learning_rate": 0.1}, 0)["num_leaves"] == 7  # model.lightgbm wins


def test_early_stopping_watches_a_stratified_tenth_and_tiny_folds_train_without_it():
    y = np.array([0] * 90 + [1] * 10)
    fit, watch = inner_split(y, "binary", seed=0)
    assert len(watch) == 10 and y[watch].sum() == 1 and len(set(fit) | set(watch)) == 100
    assert inner_split(np.arange(10.0), "regression", 0) is None  # one row to watch: too few
    assert len(fit_rows(np.arange(10.0), "regression", {}, 0)[1]) == 0
    booster = _fit(np.arange(10.0).reshape(-1, 1), np.arange(10.0), "regression", 0,
                   {"num_iterations": 7, "min_data_in_leaf": 1})
    assert booster.current_iteration() == 7  # every round, none held out


def test_it_stops_early_and_keeps_only_its_best_rounds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 5))
    y = x[:, 0] + 0.5 * rng.normal(size=2000)
    booster = _fit(x, y, "regression", 0, {})
    assert 10 < booster.current_iteration() < 2000  # stopped early; the kept model ends at its best round
    assert np.corrcoef(predict_booster(booster, x), x[:, 0])[0, 1] > 0.9


def test_multiclass_keeps_every_class_when_a_fold_lacks_one_and_poisson_predicts_means():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 3))
    y = (x[:, 0] > 0).astype(int)  # classes 0 and 1 only; the run has 3
    proba = predict_booster(_fit(x, y, "multiclass", 3, {}), x)
    assert proba.shape == (600, 3) and np.allclose(proba.sum(axis=1), 1) and proba[:, 2].max() < 0.05
    counts = rng.poisson(np.exp(0.8 * x[:, 1]))
    mean = predict_booster(_fit(x, counts.astype(float), "regression", 0, {}, poisson=True), x)
    assert mean.min() > 0 and np.corrcoef(np.log(mean), x[:, 1])[0, 1] > 0.8


def test_a_column_of_thousands_of_levels_splits_as_categories_and_loads_as_it_predicted(tmp_path):
    """The HGB test's set (tests/test_models.py): 2,000 levels whose signal is scattered over the
    code order. LightGBM takes the codes as categories as they are; the saved text model and
    member.skops give the fitted member's predictions back."""
    rng = np.random.default_rng(1)
    n, levels = 6000, 2000
    code = rng.integers(1, 200, size=n) * 10
    rare = rng.random(n) < 0.2
    code[rare] = rng.integers(1, levels, size=rare.sum())
    y = (((code // 10) % 7 == 0) ^ (rng.random(n) < 0.1)).astype(int)
    x = {"numeric": rng.normal(size=(n, 2)).astype(np.float32), "cat__c": code.reshape(-1, 1).astype(np.int32)}
    valid = np.arange(4000, n)
    member = LightGBMMember("lightgbm", "binary", {}, None, False)
    fit = member.fit(_fold(x, y, np.arange(4000), valid, InputSpec(2, [("cat__c", levels, 8)])))
    accuracy = ((fit.oof > 0.5) == y[valid]).mean()
    assert accuracy > 0.85, accuracy
    member.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"model.txt", MEMBER_FILE}
    assert (tmp_path / "model.txt").read_text().startswith("tree")  # LightGBM's text format
    loaded = FoldModel.load(tmp_path)
    assert isinstance(loaded, LightGBMMember) and loaded.describe()["iterations"] == member.iterations()
    np.testing.assert_array_equal(loaded.predict({k: v[valid] for k, v in x.items()}), fit.oof)


def test_the_members_float32_matrix_in_fit_row_order_trains_the_booster_a_float64_copy_did():
    """LightGBMMember builds one float32 matrix, the inner split's fit rows first, and hands
    LightGBM two views of it: the same trees and predictions, to the bit, as the float64 matrix
    and its row copies it used to build (float32 holds the inputs exactly), at a quarter of their
    memory."""
    import lightgbm as lgb

    rng = np.random.default_rng(3)
    n = 3000
    x = {"numeric": rng.normal(size=(n, 3)).astype(np.float32),
         "cat__c": rng.integers(0, 300, size=(n, 1)).astype(np.int32)}
    y = (x["numeric"][:, 0] + (x["cat__c"][:, 0] % 5 == 0) + rng.normal(size=n) > 0.5).astype(int)
    train, valid = np.arange(2400), np.arange(2400, n)
    member = LightGBMMember("lightgbm", "binary", {}, None, False)
    fit = member.fit(_fold(x, y, train, valid, InputSpec(3, [("cat__c", 300, 8)])))
    wide = np.hstack([x["numeric"], x["cat__c"]]).astype(np.float64)  # the float64 matrix, as before
    rows, watch = inner_split(y[train], "binary", 0)
    params = booster_params("binary", 0, {}, 0)
    rounds = params.pop("num_iterations")
    before = lgb.train(params, lgb.Dataset(wide[train][rows], y[train][rows], categorical_feature=[3]),
                       num_boost_round=rounds,
                       valid_sets=[lgb.Dataset(wide[train][watch], y[train][watch], categorical_feature=[3])])
    assert member.iterations() == before.best_iteration
    np.testing.assert_array_equal(fit.oof, before.predict(wide[valid], num_iteration=before.best_iteration))


def test_a_damaged_text_model_is_one_error_naming_the_file(tmp_path):
    rng = np.random.default_rng(2)
    x = {"numeric": rng.normal(size=(300, 2)).astype(np.float32)}
    y = x["numeric"][:, 0].astype(np.float64)
    member = LightGBMMember("lightgbm", "regression", {}, None, True)
    member.fit(_fold(x, y, np.arange(200), np.arange(200, 300), InputSpec(2, [])))
    member.save(tmp_path)
    (tmp_path / "model.txt").write_text("not a model\n")
    with pytest.raises(DataError, match=r"model\.txt: not a LightGBM model .*Train the run again"):
        FoldModel.load(tmp_path)


def test_parameters_lightgbm_refuses_are_a_config_error_naming_the_section():
    check_params({"num_leaves": 15, "min_data_in_leaf": 5}, "binary")
    with pytest.raises(ConfigError, match=r"model\.lightgbm .*num_leaves.*LightGBM refuses them"):
        check_params({"num_leaves": -3}, "regression")
    with pytest.raises(ConfigError, match=r"model\.lightgbm .*LightGBM refuses them"):
        check_params({"objective": "no_such_objective"}, "regression")


def test_a_lightgbm_study_searches_its_own_parameters():
    from pipeline.config import Config
    from pipeline.tuning.space import resolve_space

    cfg = Config.model_validate({"data": {"target": "y"}, "model": {"name": "lightgbm"}})
    space = resolve_space(cfg, "binary")
    assert {"model.lightgbm.num_leaves", "model.lightgbm.learning_rate"} <= set(space)


def test_rounds_under_any_of_lightgbms_names_are_passed_as_rounds_without_a_warning(recwarn):
    from pipeline.models.lgbm import rounds_of

    params = booster_params("regression", 0, {"n_estimators": 7}, 0)
    assert rounds_of(params) == 7 and not {"n_estimators", "num_iterations"} & set(params)
    x = np.arange(40.0).reshape(-1, 1)
    booster = _fit(x, x.ravel(), "regression", 0, {"num_boost_round": 5, "min_data_in_leaf": 1})
    assert booster.current_iteration() == 5
    assert not [w for w in recwarn if "num_" in str(w.message)]  # lgb.train's "Found num_iterations in params"


@pytest.mark.parametrize("name", ["hgb", "lightgbm"])
def test_a_fold_whose_training_counts_are_all_zero_predicts_zero(name):
    """HGB and LightGBM refuse a Poisson loss on all-zero counts; such a fold fits them as they are."""
    from pipeline.training.members import SklearnMember

    rng = np.random.default_rng(3)
    x = {"numeric": rng.normal(size=(60, 2)).astype(np.float32)}
    y = np.zeros(60)
    cls = LightGBMMember if name == "lightgbm" else SklearnMember
    member = cls(name, "regression", {}, "poisson", True)
    fit = member.fit(_fold(x, y, np.arange(40), np.arange(40, 60), InputSpec(2, [])))
    np.testing.assert_allclose(fit.oof, 0.0, atol=1e-9)

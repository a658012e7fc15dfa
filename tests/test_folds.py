import dataclasses

import numpy as np
import pandas as pd
import pytest

from pipeline.config_files import load_config
from pipeline.cv.folds import assign_folds, fold_units, folds_key, load_or_assign_folds
from pipeline.data import load_competition
from pipeline.errors import DataError


@pytest.fixture(scope="module")
def health():
    return load_competition(load_config("health_insurance"))


def with_cv(data, **cv):
    cfg = data.cfg.model_copy(update={"cv": data.cfg.cv.model_copy(update=cv)})
    return dataclasses.replace(data, cfg=cfg)


def test_every_row_validated_once_and_folds_balanced(health):
    folds = assign_folds(health)
    assert folds["id"].tolist() == health.train["id"].tolist()
    counts = folds.fold.value_counts()
    assert sorted(counts.index) == [0, 1, 2, 3, 4] and counts.max() - counts.min() <= 1


def test_stratified_keeps_the_class_ratio(health):
    folds = assign_folds(health)
    rates = pd.Series(health.y).groupby(folds.fold.to_numpy()).mean()
    assert rates.max() - rates.min() < 0.005


def test_regression_stratification_bins_the_target():
    data = load_competition(load_config("diamonds"))
    strat = with_cv(data, scheme="stratified")
    means = pd.Series(data.y).groupby(assign_folds(strat).fold.to_numpy()).mean()
    assert means.max() - means.min() < 0.01 * data.y.mean()


@pytest.mark.parametrize("scheme", ["group", "stratified_group"])
def test_group_schemes_keep_groups_together(health, scheme):
    data = with_cv(health, scheme=scheme, group="region", folds=4)  # region has 4 groups
    folds = assign_folds(data)
    per_group = pd.Series(folds.fold.to_numpy()).groupby(health.train["region"].to_numpy()).nunique()
    assert (per_group == 1).all()
    with pytest.raises(DataError, match=r"cv.group 'region' has 4 groups, fewer than cv.folds=5"):
        assign_folds(with_cv(data, folds=5))


def test_folds_are_saved_once_and_keyed_by_settings(health, tmp_path):
    first = load_or_assign_folds(health, tmp_path)
    assert len(list(tmp_path.glob("*.csv"))) == 1
    pd.testing.assert_frame_equal(load_or_assign_folds(health, tmp_path), first)
    other = with_cv(health, seed=7)
    assert folds_key(other) != folds_key(health)
    assert not load_or_assign_folds(other, tmp_path).equals(first)
    assert len(list(tmp_path.glob("*.csv"))) == 2


def test_repeats_and_units(health):
    data = with_cv(health, repeats=2, folds=3)
    folds = assign_folds(data)
    assert list(folds.columns) == ["id", "fold", "fold_2"]
    units = fold_units(folds, 2)
    assert [u.name for u in units] == ["r1_fold_0", "r1_fold_1", "r1_fold_2", "r2_fold_0", "r2_fold_1", "r2_fold_2"]
    assert [(u.index, u.repeat, u.fold) for u in units[2:4]] == [(2, 0, 2), (3, 1, 0)]
    for u in units:
        assert len(np.intersect1d(u.train_idx, u.valid_idx)) == 0 and len(u.train_idx) + len(u.valid_idx) == len(folds)


def test_too_few_rows_of_a_class(health):
    tiny = dataclasses.replace(health, train=health.train.head(40), y=np.r_[np.zeros(38, int), [1, 1]])
    with pytest.raises(DataError, match=r"a target class has only 2 rows, fewer than cv.folds=5"):
        assign_folds(tiny)

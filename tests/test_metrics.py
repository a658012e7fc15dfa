import numpy as np
import pytest
from sklearn import metrics as skm

from pipeline.errors import ConfigError
from pipeline.metrics import METRICS, get_metric

rng = np.random.default_rng(0)
Y_REG = rng.normal(100, 20, 200)
P_REG = Y_REG + rng.normal(0, 5, 200)
Y_BIN = rng.integers(0, 2, 200)
P_BIN = np.clip(Y_BIN * 0.6 + rng.uniform(0, 0.4, 200), 0.01, 0.99)
Y_MC = rng.integers(0, 3, 200)
P_MC = rng.dirichlet([1, 1, 1], 200)
P_MC[np.arange(200), Y_MC] += 1
P_MC /= P_MC.sum(1, keepdims=True)


@pytest.mark.parametrize("name, task, y, p, expected", [
    ("rmse", "regression", Y_REG, P_REG, skm.root_mean_squared_error(Y_REG, P_REG)),
    ("mae", "regression", Y_REG, P_REG, skm.mean_absolute_error(Y_REG, P_REG)),
    ("rmsle", "regression", Y_REG, P_REG, skm.root_mean_squared_log_error(Y_REG, P_REG)),
    ("r2", "regression", Y_REG, P_REG, skm.r2_score(Y_REG, P_REG)),
    ("auc", "binary", Y_BIN, P_BIN, skm.roc_auc_score(Y_BIN, P_BIN)),
    ("auc", "multiclass", Y_MC, P_MC, skm.roc_auc_score(Y_MC, P_MC, multi_class="ovr")),
    ("logloss", "binary", Y_BIN, P_BIN, skm.log_loss(Y_BIN, P_BIN)),
    ("logloss", "multiclass", Y_MC, P_MC, skm.log_loss(Y_MC, P_MC)),
    ("accuracy", "binary", Y_BIN, P_BIN, skm.accuracy_score(Y_BIN, P_BIN >= 0.5)),
    ("accuracy", "multiclass", Y_MC, P_MC, skm.accuracy_score(Y_MC, P_MC.argmax(1))),
    ("f1", "binary", Y_BIN, P_BIN, skm.f1_score(Y_BIN, P_BIN >= 0.5)),
    ("f1", "multiclass", Y_MC, P_MC, skm.f1_score(Y_MC, P_MC.argmax(1), average="macro")),
    ("qwk", "multiclass", Y_MC, P_MC, skm.cohen_kappa_score(Y_MC, P_MC.argmax(1), weights="quadratic")),
    ("qwk", "regression", Y_MC.astype(float), Y_MC + rng.normal(0, 0.4, 200),
     None),  # checked below: rounds and clips
])
def test_metric_matches_sklearn(name, task, y, p, expected):
    value = get_metric(name, task)(y, p, task)
    if expected is None:
        expected = skm.cohen_kappa_score(y.astype(int), np.clip(np.rint(p), 0, 2).astype(int),
                                         weights="quadratic")
    assert value == pytest.approx(expected)


def test_every_metric_is_covered_and_has_a_direction():
    assert set(METRICS) == {"rmse", "mae", "rmsle", "r2", "auc", "logloss", "accuracy", "f1", "qwk"}
    for name in METRICS:
        m = METRICS.get(name)
        assert m.direction in ("minimize", "maximize")
        assert m.better(1.0, 0.0) == (m.direction == "maximize")


def test_rmsle_clips_negative_predictions():
    assert get_metric("rmsle", "regression")([1.0, 2.0], [-5.0, 2.0], "regression") == pytest.approx(
        skm.root_mean_squared_log_error([1.0, 2.0], [0.0, 2.0]))


def test_metric_for_wrong_task_is_a_config_error():
    with pytest.raises(ConfigError, match=r"metric: 'auc' does not apply to a regression task. Valid for "
                                          r"regression: \['mae', 'qwk', 'r2', 'rmse', 'rmsle'\]"):
        get_metric("auc", "regression")

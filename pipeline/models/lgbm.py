"""LightGBM through the same CV as the other members: the fold preprocessing's output as one
matrix (sklearn_models.to_matrix), its category-code columns as LightGBM categoricals.

Trained as the generalization README's reference LightGBM is (learning rate 0.05, up to 2000
rounds, early stopping after 100 rounds without gain on a 10% inner split of the fold's training
rows, stratified for classification), with LightGBM's native API rather than its scikit-learn
wrapper: ``num_class`` stays the run's class count when a fold's training rows lack a class, and
the Booster is what a run folder keeps, as LightGBM's own text model (data, not code; no pickle).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

# The reference settings (generalization README); model.lightgbm overrides any LightGBM parameter.
LGBM_DEFAULTS = {"learning_rate": 0.05, "num_iterations": 2000, "early_stopping_round": 100, "verbosity": -1}
INNER_FRACTION = 0.1  # the share of a fold's training rows that early stopping watches
# LightGBM's names for the number of rounds (its documentation's aliases): lgb.train takes it as
# an argument and warns when params carry it, so it is taken out of the params and passed so.
ROUNDS = ("num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round", "num_rounds",
          "nrounds", "num_boost_round", "n_estimators", "max_iter")


def booster_params(task: str, n_classes: int, params: dict, seed: int, poisson: bool = False) -> dict:
    """LightGBM's parameters for a task: its objective, then the defaults, then ``params``."""
    objective = {"regression": "poisson" if poisson else "regression", "binary": "binary",
                 "multiclass": "multiclass"}[task]
    defaults = {k: v for k, v in LGBM_DEFAULTS.items() if not (k in ROUNDS and set(ROUNDS) & set(params))}
    out = {"objective": objective, **defaults, "seed": seed, "deterministic": True, **params}
    if task == "multiclass":
        out["num_class"] = n_classes
    return out


def inner_split(y: np.ndarray, task: str, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Row indexes (fit, watch) for early stopping, stratified where every class has 2 rows; None
    where the fold is too small to hold rows out (it then trains without early stopping)."""
    from sklearn.model_selection import train_test_split

    n_watch = int(np.ceil(INNER_FRACTION * len(y)))
    if n_watch < 2 or len(y) - n_watch < 2:
        return None
    stratify = None
    if task != "regression":
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() >= 2 and len(counts) <= n_watch <= len(y) - len(counts):
            stratify = y
    idx = np.arange(len(y))
    return tuple(train_test_split(idx, test_size=n_watch, random_state=seed, stratify=stratify))


def fit_rows(y: np.ndarray, task: str, params: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (fit, watch) of a fold's training rows: early stopping's inner split, or
    every row and none watched where early stopping is off or the fold is too small for it."""
    split = inner_split(y, task, seed) if booster_params(task, 0, params, seed).get("early_stopping_round") else None
    return split if split is not None else (np.arange(len(y)), np.arange(0))


def fit_booster(x: np.ndarray, y: np.ndarray, n_fit: int, cats: list[int], task: str, n_classes: int,
                params: dict, seed: int, poisson: bool = False):
    """A Booster fitted on the first ``n_fit`` rows of (x, y) with early stopping on the others
    (none: every round); kept to its best round. ``x`` holds the fit rows, then the watched ones
    (``fit_rows``' order), so both are views of one matrix: no copy of the fold's rows for
    LightGBM's Dataset (float32, which it reads as it is)."""
    import lightgbm as lgb

    full = booster_params(task, n_classes, params, seed, poisson)
    if n_fit == len(y):
        full.pop("early_stopping_round", None)
    rounds = rounds_of(full)
    train = lgb.Dataset(x[:n_fit], y[:n_fit], categorical_feature=cats or "auto", free_raw_data=True)
    valid = [lgb.Dataset(x[n_fit:], y[n_fit:], reference=train)] if n_fit < len(y) else []
    booster = lgb.train(full, train, num_boost_round=rounds, valid_sets=valid)
    # Through LightGBM's text model: the Booster kept in memory predicts as the saved one will
    # (only the trees up to the best round), so a run and its --predict agree to the bit.
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration or None))


def rounds_of(params: dict) -> int:
    """The number of rounds, taken out of ``params`` (model.lightgbm's, under any of its names, over
    the default's)."""
    rounds = [params.pop(k) for k in list(params) if k in ROUNDS]
    return int(rounds[-1]) if rounds else 100  # LightGBM's own default


def predict_booster(booster, x: np.ndarray) -> np.ndarray:
    """Regression values (Poisson's mean), P(positive) or class probabilities, as the metrics take them."""
    return np.asarray(booster.predict(x), dtype=np.float64)


def check_params(params: dict, task: str) -> None:
    """A ConfigError naming model.lightgbm where LightGBM refuses its parameters (a tiny fit)."""
    import lightgbm as lgb

    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = np.arange(20) % 2 if task != "regression" else np.arange(20, dtype=np.float64)
    k = 2 if task == "multiclass" else 0
    try:
        full = booster_params(task, k, params, 0)
        full.pop("early_stopping_round", None)
        rounds_of(full)
        lgb.train(full, lgb.Dataset(x, y), num_boost_round=1)
    except (lgb.basic.LightGBMError, TypeError, ValueError) as exc:
        raise ConfigError(f"model.lightgbm {dict(params)}: LightGBM refuses them: {str(exc).splitlines()[0]}. "
                          f"Fix or remove the parameter (LightGBM's parameter names).") from None

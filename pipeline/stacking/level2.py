"""Level-2 methods on the members' OOF predictions, each fitted nested on the level-1 folds.

For fold k a method is fitted on the OOF rows outside fold k and predicts fold k, so the stack's
own OOF score is honest: no row's prediction ever saw its label. The test prediction is the mean
of the K fitted methods' test predictions (as for level-1 models).

- linear: Ridge (regression) or logistic regression on the members' logits (scikit-learn).
- hill:   Caruana et al. (2004) ensemble selection (``ensemble.caruana``, the one that weighs a
          run's members): greedy forward selection with replacement; the counts are the weights.
- rank:   the mean of the members' ranks (for rank metrics such as AUC: it ignores calibration).
- keras:  a small tf_keras network on the members' logits (optional; off by default).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit, softmax
from scipy.stats import rankdata

from ..ensemble import Combiner, caruana, cross_fit
from ..metrics import Metric
from ..registry import Registry

STACKERS: Registry = Registry("stacker")
_EPS = 1e-6


def _logits(p: np.ndarray, task: str) -> np.ndarray:
    if task == "binary":
        return logit(np.clip(p, _EPS, 1 - _EPS))
    if task == "multiclass":
        return np.log(np.clip(p, _EPS, 1.0))
    return p


def design(preds: list[np.ndarray], task: str) -> np.ndarray:
    """Members' predictions → a feature matrix (logits for classification; one block per member)."""
    cols = [_logits(p, task).reshape(len(p), -1) for p in preds]
    return np.hstack(cols)


@dataclass
class Fitted:
    predict: callable  # list of member predictions → stacked prediction
    weights: dict | None = None


@STACKERS.register("linear")
def fit_linear(preds, y, task, metric: Metric, seed: int = 0) -> Fitted:
    from sklearn.linear_model import LogisticRegression, RidgeCV

    x = design(preds, task)
    if task == "regression":
        scale = float(np.std(y)) or 1.0
        model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x / scale, y / scale)
        return Fitted(lambda ps: model.predict(design(ps, task) / scale) * scale,
                      {"coef": np.round(model.coef_, 4).tolist()})
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    if task == "binary":
        return Fitted(lambda ps: model.predict_proba(design(ps, task))[:, 1], {"coef": np.round(model.coef_[0], 4).tolist()})
    return Fitted(lambda ps: model.predict_proba(design(ps, task)))


@STACKERS.register("hill")
def fit_hill(preds, y, task, metric: Metric, seed: int = 0) -> Fitted:
    w = caruana(preds, y, task, metric)  # the same ensemble selection that weighs a run's members
    return Fitted(Combiner(w), {"weights": np.round(w, 4).tolist()})


def _rank(p: np.ndarray) -> np.ndarray:
    return (rankdata(p) - 1) / max(1, len(p) - 1)


@STACKERS.register("rank")
def fit_rank(preds, y, task, metric: Metric, seed: int = 0) -> Fitted:
    # Nothing to fit: ranks are taken within whatever rows are predicted.
    return Fitted(lambda ps: np.mean([_rank(p) for p in ps], axis=0))


@STACKERS.register("keras")
def fit_keras(preds, y, task, metric: Metric, seed: int = 0) -> Fitted:
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    x = design(preds, task).astype(np.float32)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    k = y.max() + 1 if task == "multiclass" else 1
    net = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dense(int(k))])
    if task == "regression":
        y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
        loss, target = "mse", (y - y_mean) / y_std
    else:
        loss = (keras.losses.BinaryCrossentropy(from_logits=True) if task == "binary"
                else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        target = y
    net.compile(keras.optimizers.Adam(1e-2), loss=loss)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
    net.fit((x - mean) / std, target.astype(np.float32), epochs=200, batch_size=256, validation_split=0.2,
            callbacks=[stop], verbose=0)

    def predict(ps):
        raw = net.predict((design(ps, task).astype(np.float32) - mean) / std, verbose=0, batch_size=4096)
        if task == "regression":
            return raw.ravel() * y_std + y_mean
        return expit(raw.ravel()) if task == "binary" else softmax(raw, axis=1)

    return Fitted(predict)


def nested(method: str, oof: list[np.ndarray], test: list[np.ndarray], y: np.ndarray, folds: np.ndarray, task: str,
           metric: Metric, seed: int = 0):
    """(stack OOF, stack test, weights fitted on all rows) for one method, fitted per fold."""
    fit = STACKERS.get(method, "stack.methods")
    if method == "rank":  # nothing fitted, so nothing to nest: rank over all OOF rows at once
        fitted = fit(oof, y, task, metric, seed)
        return fitted.predict(oof), fitted.predict(test), None
    out, per_fold = cross_fit(lambda ps, target: fit(ps, target, task, metric, seed).predict, oof, y, folds)
    test_pred = np.mean([predict(test) for predict in per_fold.values()], axis=0)
    weights = fit(oof, y, task, metric, seed).weights if method in ("hill", "linear") else None
    return out, test_pred, weights

"""Tabular benchmark (run by hand, not in CI): the default Keras run against scikit-learn's
HistGradientBoosting and a plain Keras notebook baseline, all under the same saved folds.

    python bench/tabular.py [--comp diamonds --comp health_insurance] [--output-dir outputs/bench]

For each competition it prints OOF and holdout scores and wall time of each, side by side in one
run, and the ratios that the targets are stated in. The baseline is what a classic Kaggle notebook
does: one-hot + StandardScaler, MLP 256-128 ReLU, Adam 1e-3, batch 256, EarlyStopping patience 10
(best weights restored), raw target.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import run_competition  # noqa: E402  (sets TF_USE_LEGACY_KERAS first)
from pipeline.config_files import load_config  # noqa: E402
from pipeline.data import load_competition  # noqa: E402
from pipeline.metrics import get_metric  # noqa: E402


def _split_columns(data):
    num = [c for c, p in data.columns.items() if p["type"] == "numeric"]
    cat = [c for c, p in data.columns.items() if p["type"] == "categorical"]
    return num, cat


def _holdout(data, metric, test_pred):
    sol = data.solution.set_index(data.cfg.data.id).loc[data.test[data.cfg.data.id]]
    y = sol[data.cfg.data.target]
    if data.task != "regression":
        y = y.astype(str).map({str(c): i for i, c in enumerate(data.classes)})
    return metric(y.to_numpy(), test_pred, data.task)


def run_hgb(data, folds):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    num, cat = _split_columns(data)
    frame = lambda df: pd.concat([df[num].astype(float), df[cat].astype("category")], axis=1)  # noqa: E731
    X, X_test = frame(data.train), frame(data.test)
    for c in cat:  # one category list for train and test
        cats = pd.api.types.union_categoricals([X[c], X_test[c]]).categories
        X[c], X_test[c] = X[c].cat.set_categories(cats), X_test[c].cat.set_categories(cats)
    oof, test = np.zeros(len(X)), np.zeros(len(X_test))
    for k in sorted(folds.fold.unique()):
        tr, va = folds.fold.to_numpy() != k, folds.fold.to_numpy() == k
        if data.task == "regression":
            m = HistGradientBoostingRegressor(categorical_features="from_dtype", random_state=0)
            m.fit(X[tr], data.y[tr])
            oof[va], test = m.predict(X[va]), test + m.predict(X_test)
        else:
            m = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
            m.fit(X[tr], data.y[tr])
            oof[va], test = m.predict_proba(X[va])[:, 1], test + m.predict_proba(X_test)[:, 1]
    return oof, test / folds.fold.nunique()


def run_plain_keras(data, folds):
    import tf_keras as keras
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    num, cat = _split_columns(data)
    oof, test = np.zeros(len(data.train)), np.zeros(len(data.test))
    for k in sorted(folds.fold.unique()):
        tr, va = folds.fold.to_numpy() != k, folds.fold.to_numpy() == k
        train = data.train[tr]
        scaler = StandardScaler().fit(train[num].fillna(0))
        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(train[cat].astype(str))
        X, X_test = (np.hstack([scaler.transform(df[num].fillna(0)), onehot.transform(df[cat].astype(str))])
                     .astype("float32") for df in (data.train, data.test))
        keras.utils.set_random_seed(int(k))
        binary = data.task == "binary"
        model = keras.Sequential([keras.Input((X.shape[1],)), keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(128, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid" if binary else None)])
        model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy" if binary else "mse")
        y = data.y.astype("float32")
        model.fit(X[tr], y[tr], validation_data=(X[va], y[va]), batch_size=256, epochs=1000, verbose=0,
                  callbacks=[keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)])
        oof[va] = model.predict(X[va], verbose=0, batch_size=4096)[:, 0]
        test += model.predict(X_test, verbose=0, batch_size=4096)[:, 0]
    return oof, test / folds.fold.nunique()


def bench(comp: str, output_dir: Path) -> list[dict]:
    rows = []
    start = time.perf_counter()
    result = run_competition(comp, output_dir=output_dir, run_name=f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    rows.append({"model": "pipeline default (Keras MLP)", "oof": result.scores["cv"],
                 "holdout": result.scores["holdout"], "seconds": time.perf_counter() - start})
    folds = pd.read_csv(result.run_dir / "folds.csv")
    data = load_competition(load_config(comp))
    metric = get_metric(data.cfg.metric, data.task)
    for name, fn in (("HistGradientBoosting", run_hgb), ("plain Keras baseline", run_plain_keras)):
        start = time.perf_counter()
        oof, test = fn(data, folds)
        rows.append({"model": name, "oof": metric(data.y, oof, data.task),
                     "holdout": _holdout(data, metric, test), "seconds": time.perf_counter() - start})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comp", action="append", help="competition(s); default: diamonds and health_insurance")
    p.add_argument("--output-dir", type=Path, default=Path("outputs") / "bench")
    args = p.parse_args()
    for comp in args.comp or ["diamonds", "health_insurance"]:
        rows = bench(comp, args.output_dir)
        metric = load_config(comp).metric
        print(f"\n== {comp} ({metric}, 5-fold OOF on the training split; holdout = the 20% solution.csv)")
        print(f"{'model':32s} {'OOF':>10s} {'holdout':>10s} {'wall s':>8s}")
        for r in rows:
            print(f"{r['model']:32s} {r['oof']:10.5g} {r['holdout']:10.5g} {r['seconds']:8.1f}")
        ours, hgb, plain = rows
        print(f"pipeline - HGB OOF: {ours['oof'] - hgb['oof']:+.5g}; pipeline - baseline OOF: "
              f"{ours['oof'] - plain['oof']:+.5g}; wall time pipeline / baseline: "
              f"{ours['seconds'] / plain['seconds']:.2f}")


if __name__ == "__main__":
    main()

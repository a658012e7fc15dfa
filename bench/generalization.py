"""Generalization bench (run by hand, not in CI): the default run against LightGBM and
HistGradientBoosting on the SAME folds, on data nobody tuned for.

    python bench/generalization.py [--sets ames_price,chem97_score,...] (default: all seven)
        [--candidate NAME="key=value;key=value" ...] [--candidates-only]
        [--embedded diamonds,health_insurance] [--data ../shared/datasets/generalization]
        [--set key=value ...] [--output-dir outputs/bench-generalization]

Each set of ../shared/datasets/generalization (see its README) is split 80/20 once (seed 0,
stratified for classification): the 80% is the competition's train.csv, the 20% its test.csv with
the labels kept aside as solution.csv (the holdout). The embedded competitions already ship such a
split. Then, in one run:
- the pipeline's default (``run_competition`` with the set's task and metric and nothing else, plus
  any ``--set``), which assigns and saves the folds;
- LightGBM and HGB on those saved folds, with the reference settings of the generalization README
  (learning rate 0.05, early stopping on a 10% inner split of each training fold; HGB keeps the
  254 most frequent levels of a column, its limit). HGB's cap is 300 rounds with 30 rounds of
  patience instead of the README's 1000 / 100: the README's HGB took 42 minutes on portal_species.
  Each model's test prediction is the mean of its fold models, as the pipeline's is.

Prints per set: the metric, OOF and holdout of each, the default's ratio to the best GBDT (above 1
means better, whatever the metric's direction) and wall seconds; then the count of sets where the
default is at or above the best GBDT (OOF and holdout).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import run_competition  # noqa: E402  (sets TF_USE_LEGACY_KERAS first)
from pipeline.config_files import load_config  # noqa: E402
from pipeline.data import load_competition  # noqa: E402
from pipeline.metrics import get_metric  # noqa: E402
from pipeline.models.sklearn_models import MATRIX_MODELS  # noqa: E402  (the tree and linear members)

# name → (target, task, metric, extra config lines)
SETS = {
    "ames_price": ("Sale_Price", "regression", "rmsle", ""),
    "chem97_score": ("score", "regression", "rmse", ""),
    "portal_species": ("species_id", "multiclass", "logloss", ""),
    "movielens_liked": ("liked", "binary", "auc", ""),
    "nmes_visits": ("visits", "regression", "rmse", ""),
    "caravan_purchase": ("Purchase", "binary", "auc", ""),
    "chile_vote": ("vote", "multiclass", "accuracy", ""),
}
HGB_LEVELS = 255


def make_competition(src: Path, name: str, dest: Path) -> Path:
    from sklearn.model_selection import train_test_split

    target, task, metric, extra = SETS[name]
    df = pd.read_csv(src / f"{name}.csv.gz")
    strat = df[target] if task != "regression" else None
    train, test = train_test_split(df, test_size=0.2, random_state=0, stratify=strat)
    folder = dest / name
    (folder / "data").mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "data" / "train.csv.gz", index=False)
    test.drop(columns=target).to_csv(folder / "data" / "test.csv.gz", index=False)
    test[["id", target]].to_csv(folder / "data" / "solution.csv.gz", index=False)
    sample = test[["id"]].assign(**{target: test[target].iloc[0]})
    sample.to_csv(folder / "data" / "sample_submission.csv.gz", index=False)
    (folder / "config.yaml").write_text(
        f"task: {task}\nmetric: {metric}\n"
        f"data: {{train: train.csv.gz, test: test.csv.gz, sample_submission: sample_submission.csv.gz, "
        f"solution: solution.csv.gz, id: id, target: {target}}}\n{extra}")
    return folder / "config.yaml"


def _frames(data):
    """Features as LightGBM/HGB take them: numerics as they are, the rest as pandas categories
    with one set of levels for train and test."""
    feats = list(data.columns)
    train, test = data.train[feats].copy(), data.test[feats].copy()
    for c, plan in data.columns.items():
        if plan["type"] == "categorical":
            levels = pd.Index(pd.concat([train[c], test[c]]).dropna().astype(str).unique())
            train[c] = pd.Categorical(train[c].astype(str).where(train[c].notna()), categories=levels)
            test[c] = pd.Categorical(test[c].astype(str).where(test[c].notna()), categories=levels)
        else:
            train[c], test[c] = train[c].astype("float64"), test[c].astype("float64")
    return train, test


def _target(data, metric: str):
    y = data.y.astype(np.float64) if data.task == "regression" else data.y
    return np.log1p(y) if metric == "rmsle" else y


def _back(p, metric):
    return np.expm1(p) if metric == "rmsle" else p


def fit_lgb(Xtr, ytr, Xva_list, task, k, seed=42):
    import lightgbm as lgb
    from sklearn.model_selection import train_test_split

    a, b, ya, yb = train_test_split(Xtr, ytr, test_size=0.1, random_state=seed,
                                    stratify=None if task == "regression" else ytr)
    objective = {"regression": "regression", "binary": "binary", "multiclass": "multiclass"}[task]
    params = {"objective": objective, "learning_rate": 0.05, "verbose": -1, "seed": seed, "num_threads": 2}
    if task == "multiclass":
        params["num_class"] = k
    da = lgb.Dataset(a, ya)
    m = lgb.train(params, da, 2000, valid_sets=[lgb.Dataset(b, yb, reference=da)],
                  callbacks=[lgb.early_stopping(100, verbose=False)])
    return [m.predict(X, num_iteration=m.best_iteration) for X in Xva_list]


def _cap_levels(tr, others):
    tr = tr.copy()
    others = [o.copy() for o in others]
    for c in tr.columns:
        if isinstance(tr[c].dtype, pd.CategoricalDtype) and tr[c].nunique() > HGB_LEVELS:
            keep = tr[c].value_counts().index[: HGB_LEVELS - 1]
            for X in [tr] + others:
                s = X[c].astype(object)
                X[c] = pd.Categorical(s.where(s.isin(keep) | s.isna(), "other"), categories=[*keep, "other"])
    return tr, others


def fit_hgb(Xtr, ytr, Xva_list, task, k, seed=42):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    Xtr, Xva_list = _cap_levels(Xtr, Xva_list)
    est = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    m = est(learning_rate=0.05, max_iter=300, early_stopping=True, validation_fraction=0.1, n_iter_no_change=30,
            categorical_features="from_dtype", random_state=seed).fit(Xtr, ytr)
    out = []
    for X in Xva_list:
        p = m.predict(X) if task == "regression" else m.predict_proba(X)
        out.append(p[:, 1] if task == "binary" else p)
    return out


def gbdt_on_folds(data, folds: pd.DataFrame, fit, metric_name: str):
    """OOF and holdout of one GBDT trained on the run's own saved folds."""
    metric = get_metric(metric_name, data.task)
    Xtr, Xte = _frames(data)
    y = _target(data, metric_name)
    k = len(data.classes) if data.task == "multiclass" else 1
    oof = np.zeros((len(y), k)) if data.task == "multiclass" else np.zeros(len(y))
    test = np.zeros((len(Xte), k)) if data.task == "multiclass" else np.zeros(len(Xte))
    t = time.perf_counter()
    fold_ids = sorted(folds["fold"].unique())
    for f in fold_ids:
        va = np.flatnonzero(folds["fold"].to_numpy() == f)
        tr = np.flatnonzero(folds["fold"].to_numpy() != f)
        p_va, p_te = fit(Xtr.iloc[tr], y[tr], [Xtr.iloc[va], Xte], data.task, k)
        oof[va] = p_va
        test += p_te / len(fold_ids)
    seconds = time.perf_counter() - t
    cv = metric(data.y, _back(oof, metric_name), data.task)
    pos, y_sol = data.holdout()
    holdout = metric(y_sol, _back(test, metric_name)[pos], data.task)
    return cv, holdout, seconds


def better_ratio(ours: float, theirs: float, direction: str) -> float:
    """Above 1: ours is better."""
    return ours / theirs if direction == "maximize" else theirs / ours


def parse_candidates(specs: list[str]) -> dict[str, list[str]]:
    """``NAME=key=value;key=value`` → {NAME: ["key=value", ...]}; "default" (no overrides) comes first."""
    out = {"default": []}
    for spec in specs:
        name, _, rest = spec.partition("=")
        out[name] = [kv for kv in rest.split(";") if kv]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--embedded", default="diamonds,health_insurance")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "generalization")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--candidate", action="append", default=[],
                   help="NAME=key=value;key=value: a candidate config run beside the default on the same folds")
    p.add_argument("--candidates-only", action="store_true", help="run the candidates without the default")
    p.add_argument("--output-dir", type=Path, default=ROOT / "outputs" / "bench-generalization")
    p.add_argument("--run-name", default="bench")
    args = p.parse_args()
    names = [s for s in args.sets.split(",") if s]
    embedded = [s for s in args.embedded.split(",") if s]
    candidates = parse_candidates(args.candidate)
    if args.candidates_only:
        del candidates["default"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = {n: make_competition(args.data, n, Path(tmp)) for n in names}
        configs.update({n: ROOT / "competitions" / n / "config.yaml" for n in embedded})
        for name, config in configs.items():
            runs = {}
            for cand, extra in candidates.items():
                t = time.perf_counter()
                result = run_competition(config, args.overrides + extra, output_dir=args.output_dir,
                                         run_name=f"{args.run_name}-{cand}")
                runs[cand] = (result, time.perf_counter() - t)
            result = next(iter(runs.values()))[0]  # every run of a set shares its folds
            data = load_competition(load_config(config, args.overrides))
            folds = pd.read_csv(result.run_dir / "folds.csv")
            metric = get_metric(result.scores["metric"], data.task)
            lgb_cv, lgb_ho, lgb_s = gbdt_on_folds(data, folds, fit_lgb, result.scores["metric"])
            hgb_cv, hgb_ho, hgb_s = gbdt_on_folds(data, folds, fit_hgb, result.scores["metric"])
            best = max if metric.direction == "maximize" else min
            for cand, (res, seconds) in runs.items():
                s = res.scores
                row = dict(set=name, cand=cand, metric=s["metric"], cv=s["cv"], holdout=s["holdout"],
                           lgb_cv=lgb_cv, lgb_ho=lgb_ho, hgb_cv=hgb_cv, hgb_ho=hgb_ho, s=seconds, lgb_s=lgb_s,
                           hgb_s=hgb_s, r_cv=better_ratio(s["cv"], best(lgb_cv, hgb_cv), metric.direction),
                           r_ho=better_ratio(s["holdout"], best(lgb_ho, hgb_ho), metric.direction),
                           r_lgb=better_ratio(s["cv"], lgb_cv, metric.direction),
                           r_lgb_ho=better_ratio(s["holdout"], lgb_ho, metric.direction),
                           members=s.get("members", {}), members_ho=s.get("members_holdout", {}),
                           weights=s.get("ensemble", {}).get("weights", {}), method=s.get("ensemble", {}).get("method"))
                sign = 1 if metric.direction == "maximize" else -1
                top = max(row["members"], key=lambda m: sign * row["members"][m]) if row["members"] else None
                row["ens_vs_best_member"] = better_ratio(s["cv"], row["members"][top], metric.direction) if top else 1.0
                keras = {m: v for m, v in row["members"].items() if m not in MATRIX_MODELS}
                kbest = max(keras, key=lambda m: sign * keras[m]) if keras else None
                row["keras_best"] = kbest
                row["keras_vs_lgb"] = (better_ratio(keras[kbest], lgb_cv, metric.direction),
                                       better_ratio(row["members_ho"].get(kbest, float("nan")), lgb_ho,
                                                    metric.direction)) if kbest else None
                rows.append(row)
                print(f"{name:18s} {cand:12s} {row['metric']:7s} OOF {row['cv']:.4f} holdout {row['holdout']:.4f} | "
                      f"LightGBM {lgb_cv:.4f} / {lgb_ho:.4f} | HGB {hgb_cv:.4f} / {hgb_ho:.4f} | "
                      f"vs best GBDT: OOF x{row['r_cv']:.3f} holdout x{row['r_ho']:.3f} | "
                      f"seconds {seconds:.0f} (its K-fold loop {s.get('cv_seconds', float('nan')):.0f}) / {lgb_s:.0f} / "
                      f"{hgb_s:.0f}", flush=True)
                print(f"{'':18s}   ensemble {row['method']}: weights {row['weights']}; OOF vs its best member "
                      f"x{row['ens_vs_best_member']:.4f}", flush=True)
                for member, score in row["members"].items():
                    ho = row["members_ho"].get(member, float("nan"))
                    # Five decimals: a member within 0.00005 of LightGBM reads as a tie at three,
                    # while the counts below are strict.
                    r_cv, r_ho = (better_ratio(score, lgb_cv, metric.direction),
                                  better_ratio(ho, lgb_ho, metric.direction))
                    print(f"{'':18s}   member {member:12s} OOF {score:.5f} holdout {ho:.5f} "
                          f"(vs LightGBM {lgb_cv:.5f} / {lgb_ho:.5f}: x{r_cv:.5f}, x{r_ho:.5f})", flush=True)
    print()
    print("| set | candidate | metric | OOF | holdout | LightGBM OOF / holdout | HGB OOF / holdout | "
          "vs best GBDT (OOF, holdout; >1 better) | seconds run / LGB / HGB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['cand']} | {r['metric']} | {r['cv']:.4f} | {r['holdout']:.4f} | {r['lgb_cv']:.4f} / "
              f"{r['lgb_ho']:.4f} | {r['hgb_cv']:.4f} / {r['hgb_ho']:.4f} | {r['r_cv']:.3f}, {r['r_ho']:.3f} | "
              f"{r['s']:.0f} / {r['lgb_s']:.0f} / {r['hgb_s']:.0f} |")
    for cand in candidates:
        mine = [r for r in rows if r["cand"] == cand]
        wins = sum(r["r_cv"] >= 1 and r["r_ho"] >= 1 for r in mine)
        lgb_wins = sum(r["r_lgb"] >= 1 and r["r_lgb_ho"] >= 1 for r in mine)
        ens_ok = sum(r["ens_vs_best_member"] >= 1 for r in mine)
        keras_ok = sum(r["keras_vs_lgb"] is not None and all(v >= 1 for v in r["keras_vs_lgb"]) for r in mine)
        print(f"{cand}: at_or_above_best_gbdt={wins}/{len(mine)} (OOF and holdout) "
              f"at_or_above_lightgbm={lgb_wins}/{len(mine)} (OOF and holdout) "
              f"ensemble_at_or_above_best_member={ens_ok}/{len(mine)} (OOF) "
              f"best_keras_member_at_or_above_lightgbm={keras_ok}/{len(mine)} (OOF and holdout)")


if __name__ == "__main__":
    main()

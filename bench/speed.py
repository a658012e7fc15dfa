"""How near the fold loop runs to a bare tf_keras ``fit``, and the default run's time against
LightGBM's (run by hand, not in CI; at most about 30 minutes on two cores), all in one process.

    python bench/speed.py [--parts loop,wall,importance,layers | --parts floor] [--sets movielens_liked,portal_species,chem97_score]
        [--embedded diamonds,health_insurance] [--epochs 5] [--rows 100000] [--cols 60]
        [--importance-set ames_price] [--set key=value ...]

loop: a real-shaped synthetic table (bench/scale.py's: skewed numerics with missing values,
      categoricals of 5 to 20,000 Zipf levels, a binary target), ``--rows`` x ``--cols``. Fold 0 of
      the default Keras member is trained by the pipeline itself (``fit_fold``: validation, the
      history metric, callbacks and checkpoints as a default run has them), then the same network
      (same builder, data-dependent initialization, optimizer, loss and batch size) by a bare
      ``compile`` + ``fit`` on the fold's arrays, with no validation: once with Keras' defaults,
      once with the pipeline's batches per call (``steps_per_execution``). Rows per second per
      epoch are the median of the epochs after the first (which traces). ``pipeline_vs_bare``:
      the pipeline's over the faster bare loop's. ``bare_vs_peak``: the bare loop's GFLOP/s
      (3x the forward pass's FLOPs per row, as TensorFlow's profiler counts them) over a
      2048 x 2048 float32 matmul's, timed here. For realmlp, two more pairs of bare fits, each its
      optimizer's step in plain ops then through TensorFlow's fused Adam kernel (the default).
wall: the default run (``run_competition`` with nothing set) on the embedded tabular
      competitions and the visible generalization sets with at least 10,000 rows; its training
      time (scores.json's ``cv_seconds``, the K-fold loop's wall time: preprocessing, every member,
      predictions, folds side by side when the run trains them so; loading, start-up and the
      diagnostics after it excluded) against LightGBM's 5-fold time on the run's saved folds, as
      ``bench/generalization.py`` trains it. ``wall_vs_lightgbm``: the median of the ratios. The
      scores are printed beside them, to check that speed did not cost accuracy. ``--set``
      changes the runs (``--set train.fold_workers=1``: the folds one at a time, for a before).
layers (not run by default): RealMLP's hidden block for regression (3 x 256 NTK layers, each
      with its parametric Mish and dropout 0.15) on 34,560 x 30 random rows, batch 256, one
      TensorFlow thread when it runs first (as a fold worker has): Mish as the pipeline writes it
      (one exp, its gradient written out) against x tanh(softplus(x)) differentiated by
      TensorFlow, alternating: seconds per epoch and the ratio.
floor (not run by default; alone, as its first part): what the default Keras member's recipe costs
      at least on this machine, on the wall part's sets: one fold's training epoch timed with one
      TensorFlow thread (as a fold worker has; ``bench/training.py``'s epoch on fold 0, no
      validation), times the recipe's epochs, the seeds and the folds, over the usable cores (every
      core busy with training epochs and nothing else), against LightGBM's 5-fold time on the same
      folds. ``floor_vs_lightgbm`` (the median of the ratios): a lower bound of ``wall_vs_lightgbm``
      for that recipe, whatever the loop around it.
importance (not run by default): the run's permutation importance after training (the shuffled
      copies predicted in batches) against scikit-learn's ``permutation_importance`` calling the
      same saved folds once per column and repeat, on ``--importance-set``: seconds of each and the
      largest difference between their importances (0: the same shuffles).

Last line: ``pipeline_vs_bare=R bare_vs_peak=P wall_vs_lightgbm=W`` (and ``floor_vs_lightgbm=F`` with
the floor part).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)


def matmul_gflops(n: int = 2048, reps: int = 20) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))

    @tf.function
    def chain(a, b):
        c = a
        for _ in range(reps):
            c = tf.matmul(c, b) * 1e-3  # keep the values finite
        return c

    chain(a, b).numpy()
    t = time.perf_counter()
    chain(a, b).numpy()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def forward_flops_per_row(net, spec_batch: dict) -> float:
    """The network's forward FLOPs for one row, as TensorFlow's graph profiler counts them."""
    import tensorflow as tf

    signature = {k: tf.TensorSpec((1, *v.shape[1:]), v.dtype) for k, v in spec_batch.items()}
    concrete = tf.function(lambda x: net(x, training=False)).get_concrete_function(signature)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    info = tf.compat.v1.profiler.profile(graph=concrete.graph, options=opts)
    return float(info.total_float_ops)


class EpochClock:
    """Seconds of each epoch, from its start to the end of every other callback's epoch work."""

    def __new__(cls):
        import tf_keras as keras

        class _Clock(keras.callbacks.Callback):
            seconds: list

            def on_train_begin(self, logs=None):
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._t)

        return _Clock()


def steady(seconds: list[float]) -> float:
    return float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def part_loop(rows: int, cols: int, epochs: int, tmp: Path) -> dict:
    import tf_keras as keras

    from scale import make_table
    from pipeline.config_files import load_config
    from pipeline.cv.folds import assign_folds
    from pipeline.data import load_competition
    from pipeline.models import build_model
    from pipeline.models.heads import encode_labels, make_loss, output_size
    from pipeline.models.layers import adapt_layers
    from pipeline.training.fold import fit_fold, input_spec, model_inputs
    from pipeline.training.members import member_names
    from pipeline.training.optimizers import make_optimizer
    from pipeline.training.recipes import member_config
    from pipeline.training.schedules import make_schedule
    from pipeline.preprocessing import TabularPreprocessor
    try:
        from pipeline.training.trainer import steps_per_execution
    except ImportError:  # a checkout from before train.steps_per_execution: auto
        steps_per_execution = None

    folder = tmp / "loop"
    folder.mkdir()
    df = make_table(rows + rows // 10, cols)
    df.iloc[:rows].to_parquet(folder / "train.parquet", index=False)
    test = df.iloc[rows:].drop(columns="target")
    test.to_parquet(folder / "test.parquet", index=False)
    test[["id"]].assign(target=0.5).to_csv(folder / "sample_submission.csv", index=False)
    (folder / "config.yaml").write_text(
        "name: speed\ntask: binary\nmetric: auc\n"
        "data: {dir: ., train: train.parquet, test: test.parquet, target: target, solution: null}\n")
    base = load_config(folder / "config.yaml")
    keras_name = member_names(base, False)[0]
    section = f"model.{keras_name}.epochs" if keras_name in ("realmlp", "tabm") else "train.epochs"
    overrides = [f"model.members=[{keras_name}]", f"{section}={epochs}"]
    data = load_competition(load_config(folder / "config.yaml", overrides))
    folds = assign_folds(data).fold.to_numpy()
    train_idx, valid_idx = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)

    clock = EpochClock()
    t = time.perf_counter()
    fit_fold(data, "fold_0", train_idx, valid_idx, tmp / "fold_0", seed=0, callbacks=[clock])
    fold_s = time.perf_counter() - t
    pipeline_rps = len(train_idx) / steady(clock.seconds)

    cfg = member_config(data.cfg, keras_name, data.task)
    tc = cfg.train
    pre = TabularPreprocessor(data.columns, cfg.preprocessing, seed=0, task=data.task).fit(
        data.train.iloc[train_idx], data.y[train_idx])
    x = model_inputs(data, pre, {"train": ("train", train_idx)}).x["train"]
    y = encode_labels(data.y[train_idx], data.task, len(data.classes), tc)
    steps = -(-len(y) // tc.batch_size)

    def bare(fused: bool = True, **compile_args):
        keras.utils.set_random_seed(0)
        net = build_model(keras_name, input_spec(pre, cfg, False), cfg.model,
                          output_size(data.task, len(data.classes)), data.task)
        adapt_layers(net, x, seed=0)
        optimizer = make_optimizer(tc, make_schedule(tc, steps), net=net, total_steps=epochs * steps)
        if not fused:  # realmlp's FactorAdam with its step in plain ops instead of the fused kernel
            optimizer.fused = False
        net.compile(optimizer=optimizer, loss=make_loss(data.task, tc), **compile_args)
        clock = EpochClock()
        net.fit(x, y, batch_size=tc.batch_size, epochs=epochs, verbose=0, callbacks=[clock])
        return net, clock.seconds

    # Keras' defaults (one batch per call), then the pipeline's own batches per call: the ratio is
    # taken against the faster, so it measures what the pipeline adds around the same loop.
    _, default_seconds = bare()
    spe = steps_per_execution(tc.steps_per_execution, steps) if steps_per_execution else 1
    net, bare_seconds = bare(steps_per_execution=spe)
    default_rps = len(y) / steady(default_seconds)
    bare_rps = max(default_rps, len(y) / steady(bare_seconds))
    fused_pairs = []
    if hasattr(net.optimizer, "fused"):  # realmlp: fused Adam against its plain-ops step, alternating
        for _ in range(2):
            fused_pairs.append([len(y) / steady(bare(fused=f, steps_per_execution=spe)[1]) for f in (False, True)])
    flops = 3 * forward_flops_per_row(net, {k: v[:1] for k, v in x.items()})
    peak = matmul_gflops()
    out = {"model": keras_name, "batch_size": tc.batch_size, "train_rows": len(train_idx),
           "pipeline_rows_s": pipeline_rps, "bare_rows_s": bare_rps, "fold_s": fold_s,
           "pipeline_epochs_s": clock.seconds, "bare_epochs_s": bare_seconds,
           "bare_default_rows_s": default_rps, "steps_per_execution": spe,
           "train_mflop_per_row": flops / 1e6, "bare_gflops": bare_rps * flops / 1e9, "peak_gflops": peak}
    print(f"loop: {keras_name}, batch {tc.batch_size}, {len(train_idx):,} training rows x {cols} columns, "
          f"{epochs} epochs")
    print(f"  pipeline fold training  {pipeline_rps:10,.0f} rows/s per epoch (epochs: "
          f"{', '.join(f'{s:.2f}' for s in clock.seconds)} s; the whole fold {fold_s:.1f} s)")
    print(f"  bare tf_keras fit       {default_rps:10,.0f} rows/s per epoch with Keras' defaults (epochs: "
          f"{', '.join(f'{s:.2f}' for s in default_seconds)} s)")
    print(f"  bare, {spe:2d} steps/call    {len(y) / steady(bare_seconds):10,.0f} rows/s per epoch (epochs: "
          f"{', '.join(f'{s:.2f}' for s in bare_seconds)} s)")
    print(f"  training {flops / 1e6:.3f} MFLOP per row: bare {out['bare_gflops']:.1f} GFLOP/s, "
          f"matmul peak {peak:.1f} GFLOP/s", flush=True)
    if fused_pairs:
        out["fused_adam_pairs_rows_s"] = fused_pairs
        print("  realmlp's optimizer, bare fits alternating (plain-ops step, fused Adam kernel): "
              + "; ".join(f"{a:,.0f} / {b:,.0f} rows/s" for a, b in fused_pairs)
              + f" (fused over plain x{np.median([b / a for a, b in fused_pairs]):.2f})", flush=True)
    return out


def part_layers(reps: int = 5) -> dict:
    import tensorflow as tf
    import tf_keras as keras

    try:  # one thread, as each fold worker has; impossible once TensorFlow's runtime has started
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    from pipeline.models import realmlp

    realmlp.ACTIVATIONS["composed_mish"] = lambda x: x * tf.tanh(tf.nn.softplus(x))  # no training form
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(34_560, 30)).astype("float32"), rng.normal(size=(34_560, 1)).astype("float32")

    def build(ours: bool):
        keras.utils.set_random_seed(0)
        inp = keras.Input((30,))
        h = inp
        for _ in range(3):
            h = realmlp.NTKDense(256)(h)
            h = realmlp.ParametricActivation("mish" if ours else "composed_mish")(h)
            h = realmlp.ScheduledDropout(0.15)(h)
        net = keras.Model(inp, realmlp.NTKDense(1)(h))
        net.compile(keras.optimizers.Adam(1e-3), "mse", steps_per_execution=32)
        net.fit(x, y, batch_size=256, epochs=1, verbose=0)  # traces
        return net

    out = {"threads": tf.config.threading.get_intra_op_parallelism_threads() or "default"}
    print(f"layers: RealMLP's hidden block (Mish, dropout), 34,560 x 30 rows, batch 256, intra-op threads {out['threads']}")
    nets = {side: build(side == "pipeline") for side in ("composed", "pipeline")}
    seconds = {side: [] for side in nets}
    for _ in range(reps):
        for side, net in nets.items():
            t = time.perf_counter()
            net.fit(x, y, batch_size=256, epochs=2, verbose=0)
            seconds[side].append((time.perf_counter() - t) / 2)
    out.update(seconds=seconds, composed_over_pipeline=min(seconds["composed"]) / min(seconds["pipeline"]))
    print(f"  composed {', '.join(f'{s:.3f}' for s in seconds['composed'])} s an epoch; pipeline "
          f"{', '.join(f'{s:.3f}' for s in seconds['pipeline'])} s; x{out['composed_over_pipeline']:.2f} "
          "(the fastest epochs)", flush=True)
    return out


def part_importance(set_name: str, data_dir: Path, tmp: Path) -> dict:
    """The run's permutation importance (diagnostics.permutation_scores: scikit-learn's shuffles,
    the shuffled copies predicted in batches) against scikit-learn's ``permutation_importance``
    calling the same saved folds once per column and repeat, on the same rows: seconds and the
    largest difference between the two tables."""
    import pandas as pd
    from sklearn.inspection import permutation_importance

    from generalization import make_competition
    from pipeline import load_run, run_competition
    from pipeline.config_files import load_config
    from pipeline.data import load_competition
    from pipeline.diagnostics import importance_samples, permutation_importance_table
    from pipeline.metrics import get_metric

    config = make_competition(data_dir, set_name, tmp)
    result = run_competition(config, ["diagnostics.importance=false", "diagnostics.adversarial=false"],
                             output_dir=tmp / "runs", run_name="importance")
    run, data = load_run(result.run_dir), load_competition(load_config(config))
    t = time.perf_counter()
    ours = permutation_importance_table(run, data)
    ours_s = time.perf_counter() - t

    class Fold:  # a saved fold as the estimator scikit-learn's function expects
        def __init__(self, artifact):
            self.artifact = artifact

        def fit(self, X, y=None):
            return self

        def predict(self, X):
            return self.artifact.predict(X, tta=False)

    dc, metric = data.cfg.diagnostics, get_metric(data.cfg.metric, data.task)
    sign, features, frames = (1.0 if metric.greater_is_better else -1.0), list(data.columns), []
    t = time.perf_counter()
    for unit, x, y in importance_samples(run, data):  # the rows the run scores
        r = permutation_importance(Fold(run.artifact(unit)), x, y, n_repeats=dc.importance_repeats, random_state=0,
                                   scoring=lambda e, X, t_: sign * metric(t_, e.predict(X), data.task))
        frames.append(pd.DataFrame({"feature": features, "importance": r.importances_mean}))
    theirs_s = time.perf_counter() - t
    theirs = pd.concat(frames).groupby("feature", sort=False)["importance"].mean().loc[ours["feature"]]
    diff = float(np.max(np.abs(theirs.to_numpy() - ours["importance"].to_numpy())))
    print(f"importance: {set_name}, {len(features)} columns x {dc.importance_repeats} repeats x "
          f"{dc.importance_folds} folds: scikit-learn's loop {theirs_s:.1f} s, batched {ours_s:.1f} s "
          f"(x{theirs_s / ours_s:.1f}); largest difference of an importance {diff:.2e}", flush=True)
    return {"set": set_name, "sklearn_s": theirs_s, "batched_s": ours_s, "max_difference": diff}


WALL_MIN_ROWS = 10_000


def set_configs(sets: list[str], embedded: list[str], data_dir: Path, tmp: Path) -> dict:
    """Name → config path of the wall and floor parts' sets: the generalization sets split into
    competitions under ``tmp`` (bench/generalization.py's split), then the embedded ones."""
    from generalization import SETS, make_competition

    unknown = [name for name in sets if name not in SETS]
    if unknown:
        raise SystemExit(f"error: --sets: unknown set(s) {unknown}; known: {', '.join(SETS)}")
    configs = {name: make_competition(data_dir, name, tmp) for name in sets}
    configs.update({n: ROOT / "competitions" / n / "config.yaml" for n in embedded})
    return configs


def part_wall(sets: list[str], embedded: list[str], data_dir: Path, tmp: Path, overrides: list[str]) -> list[dict]:
    import pandas as pd

    from generalization import better_ratio, fit_lgb, gbdt_on_folds
    from pipeline import run_competition
    from pipeline.config_files import load_config
    from pipeline.data import load_competition
    from pipeline.metrics import get_metric

    configs = set_configs(sets, embedded, data_dir, tmp)
    rows = []
    for name, config in configs.items():
        data = load_competition(load_config(config, overrides))
        if len(data.train) < WALL_MIN_ROWS:
            print(f"wall: {name} skipped ({len(data.train):,} training rows < {WALL_MIN_ROWS:,})")
            continue
        t = time.perf_counter()
        result = run_competition(config, overrides, output_dir=tmp / "runs", run_name="speed")
        run_s = time.perf_counter() - t
        # The K-fold loop's wall time (folds side by side when the run trains them so); a checkout
        # from before scores.json had it: the sum of its folds' seconds.
        fold_s = result.scores.get("cv_seconds") or sum(
            json.loads(p.read_text())["seconds"] for p in sorted((result.run_dir / "folds").glob("*/result.json")))
        folds = pd.read_csv(result.run_dir / "folds.csv")
        metric = result.scores["metric"]
        lgb_cv, lgb_ho, lgb_s = gbdt_on_folds(data, folds, fit_lgb, metric)
        direction = get_metric(metric, data.task).direction
        row = {"set": name, "rows": len(data.train), "metric": metric, "cv": result.scores["cv"],
               "holdout": result.scores["holdout"], "lgb_cv": lgb_cv, "lgb_ho": lgb_ho, "train_s": fold_s,
               "run_s": run_s, "lgb_s": lgb_s, "ratio": fold_s / lgb_s,
               "vs_lgb": (better_ratio(result.scores["cv"], lgb_cv, direction),
                          better_ratio(result.scores["holdout"], lgb_ho, direction))}
        rows.append(row)
        print(f"wall: {name:18s} {len(data.train):>7,} rows  {metric:8s} run OOF {row['cv']:.4f} holdout "
              f"{row['holdout']:.4f} | LightGBM {lgb_cv:.4f} / {lgb_ho:.4f} | training {fold_s:6.1f} s "
              f"(whole run {run_s:.0f} s) / LightGBM {lgb_s:5.1f} s = x{row['ratio']:.1f}", flush=True)
    return rows


def part_floor(sets: list[str], embedded: list[str], data_dir: Path, tmp: Path, overrides: list[str]) -> list[dict]:
    import tensorflow as tf

    # One thread, as each fold worker has: set before TensorFlow's runtime starts (main() runs this
    # part alone, first).
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from generalization import fit_lgb, gbdt_on_folds
    from training import epoch_times

    from pipeline.config_files import load_config
    from pipeline.cv.folds import assign_folds
    from pipeline.data import load_competition
    from pipeline.tf_runtime import usable_cores
    from pipeline.training.recipes import member_config

    configs = set_configs(sets, embedded, data_dir, tmp)
    cores, rows = usable_cores(), []
    for name, config in configs.items():
        data = load_competition(load_config(config, overrides))
        if len(data.train) < WALL_MIN_ROWS:  # the wall part's sets
            print(f"floor: {name} skipped ({len(data.train):,} training rows < {WALL_MIN_ROWS:,})")
            continue
        cfg, model = data.cfg, data.cfg.model.name
        train = member_config(cfg, model, data.task).train
        epoch_s = epoch_times(str(config), overrides, epochs=4, model=model)
        n_fits = cfg.cv.folds * cfg.cv.repeats * cfg.train.seeds
        floor_s = n_fits * train.epochs * epoch_s / cores
        *_, lgb_s = gbdt_on_folds(data, assign_folds(data), fit_lgb, cfg.metric)
        row = {"set": name, "model": model, "epoch_s": epoch_s, "fits": n_fits, "epochs": train.epochs,
               "cores": cores, "floor_s": floor_s, "lgb_s": lgb_s, "ratio": floor_s / lgb_s}
        rows.append(row)
        print(f"floor: {name:18s} {model}: {n_fits} fits x {train.epochs} epochs x {epoch_s:.3f} s (one thread) "
              f"/ {cores} cores = {floor_s:6.1f} s / LightGBM {lgb_s:5.1f} s = x{row['ratio']:.1f}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="loop,wall")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--cols", type=int, default=60)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--sets", default="movielens_liked,portal_species,chem97_score")
    p.add_argument("--embedded", default="diamonds,health_insurance")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "generalization")
    p.add_argument("--importance-set", default="ames_price", help="the importance part's set (the widest)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="key=value for the wall part's runs (e.g. train.fold_workers=1: one fold at a time)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    parts = [s for s in args.parts.split(",") if s]
    if "floor" in parts and len(parts) > 1:
        raise SystemExit("error: --parts: floor sets TensorFlow to one thread for the whole process; run "
                         "--parts floor alone")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "floor" in parts:
            figures["floor"] = part_floor([s for s in args.sets.split(",") if s],
                                          [s for s in args.embedded.split(",") if s], args.data, tmp, args.overrides)
        if "layers" in parts:  # first: its one thread must be set before TensorFlow's runtime starts
            figures["layers"] = part_layers()
        if "loop" in parts:
            figures["loop"] = part_loop(args.rows, args.cols, args.epochs, tmp)
        if "importance" in parts:
            figures["importance"] = part_importance(args.importance_set, args.data, tmp)
        if "wall" in parts:
            figures["wall"] = part_wall([s for s in args.sets.split(",") if s],
                                        [s for s in args.embedded.split(",") if s], args.data, tmp, args.overrides)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    loop, wall = figures.get("loop"), figures.get("wall")
    ratio = f"{loop['pipeline_rows_s'] / loop['bare_rows_s']:.2f}" if loop else "n/a"
    peak = f"{loop['bare_gflops'] / loop['peak_gflops']:.2f}" if loop else "n/a"
    walls = f"{float(np.median([r['ratio'] for r in wall])):.1f}" if wall else "n/a"
    floor = figures.get("floor")
    floors = f" floor_vs_lightgbm={float(np.median([r['ratio'] for r in floor])):.1f}" if floor else ""
    print(f"pipeline_vs_bare={ratio} bare_vs_peak={peak} wall_vs_lightgbm={walls}{floors}")


if __name__ == "__main__":
    main()

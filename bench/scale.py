"""How cost grows with rows (run by hand, not in CI): load time, peak memory, epoch time, and the
input pipeline against the compute-only limit, at several table sizes, side by side in one run.

    python bench/scale.py --rows 250000,500000,1000000 [--cols 100] [--format parquet|csv] [--members]

The table is synthetic but real-shaped (only cost is measured): 80% numeric columns (lognormal
skew, 5% missing), 20% categorical (cardinalities from 5 to 20,000, Zipf-distributed, 2% missing),
a binary target. Each size runs in a fresh process (its peak RSS is its own) through the
pipeline's own steps: TensorFlow's start-up (a small model built and run: the baseline), then
load_competition (the file read and checked), one fold's preprocessing (fitted on 80% of the
rows, applied to the train and validation rows), then the default Keras member (its own recipe:
batch size, optimizer, data-dependent initialization) trained for 3 epochs (``--epochs``) on the
pipeline's tf.data input, and the same model on one batch held in memory and repeated for as many
steps (the compute-only limit), their epochs alternating. Epoch times are the median of each
model's epochs after its first.

``--members``: instead, per size, one fold of the default run as a run trains it (``fit_fold``: the
fold's preprocessing, then every member of ``model.members``, each fitted and predicting its
validation and test rows), each member's peak RSS above the RSS it started from and its seconds:
which member sets a run's peak at that size (the Keras member alone is what the default part
measures).

Prints per size: rows, load seconds, peak RSS against the float32 data (whole, and above the
baseline), the peak after each step, fold preprocessing seconds, epoch seconds (real input and
compute only) and their ratio; then one line
``rss_ratio=R rss_over_baseline=B epoch_linearity=L input_ratio=I`` (R: peak RSS / float32 data at
the largest size; B: (peak RSS - baseline RSS) / float32 data there; L: epoch seconds per row at
the largest size / at the smallest; I: real input epoch / compute-only epoch at the largest size,
and the worst over every size).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_table(rows: int, cols: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_cat = max(1, cols // 5)
    n_num = cols - n_cat
    data = {"id": np.arange(rows)}
    signal = np.zeros(rows)
    for j in range(n_num):
        x = rng.lognormal(mean=0.0, sigma=0.5 + (j % 5) * 0.3, size=rows).astype(np.float32)
        if j < 10:
            signal += np.log(x) * (0.3 if j % 2 else -0.2)
        x[rng.random(rows) < 0.05] = np.nan
        data[f"n{j}"] = x
    cards = np.geomspace(5, 20000, n_cat).astype(int)
    for j, card in enumerate(cards):
        codes = np.minimum(rng.zipf(1.3, size=rows), card) - 1
        if j < 5:
            signal += (codes % 7 == 0) * 0.5
        col = pd.Series(np.char.add("c", codes.astype(str)), dtype=object)
        col[rng.random(rows) < 0.02] = None
        data[f"c{j}"] = col
    df = pd.DataFrame(data)
    df["target"] = (signal + rng.normal(size=rows) > np.median(signal)).astype(int)
    return df


def write_competition(folder: Path, rows: int, cols: int, fmt: str, epochs: int = 3) -> Path:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    df = make_table(rows + rows // 5, cols)
    train, test = df.iloc[:rows].reset_index(drop=True), df.iloc[rows:].drop(columns="target").reset_index(drop=True)
    ext = "parquet" if fmt == "parquet" else "csv"
    for name, frame in (("train", train), ("test", test)):
        frame.to_parquet(folder / f"{name}.{ext}", index=False) if ext == "parquet" else frame.to_csv(
            folder / f"{name}.{ext}", index=False)
    pd.DataFrame({"id": test["id"], "target": 0.5}).to_csv(folder / "sample_submission.csv", index=False)
    (folder / "config.yaml").write_text(
        f"name: scale\ntask: binary\nmetric: auc\n"
        f"data: {{dir: ., train: train.{ext}, test: test.{ext}, target: target, solution: null}}\n"
        f"train: {{epochs: {epochs}}}\nmodel: {{realmlp: {{epochs: {epochs}}}, tabm: {{epochs: {epochs}}}}}\n")
    return folder / "config.yaml"


class EpochTimer:
    def __init__(self):
        import tf_keras as keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._t)

        self.callback = _Timer()


def child(config: str) -> dict:
    """One size, in this process: TensorFlow's start-up (the baseline), load, preprocess one fold,
    train on real input, then compute-only."""
    import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    import tensorflow as tf
    import tf_keras as keras

    from pipeline.config_files import load_config
    from pipeline.data import load_competition
    from pipeline.models import build_model
    from pipeline.models.heads import encode_labels, make_loss, output_size
    from pipeline.models.layers import adapt_layers
    from pipeline.preprocessing import TabularPreprocessor
    from pipeline.training.fold import input_spec, model_inputs
    from pipeline.training.members import member_names
    from pipeline.training.optimizers import make_optimizer
    from pipeline.training.recipes import member_config
    from pipeline.training.schedules import make_schedule
    from pipeline.training.trainer import steps_per_execution

    out = {}
    # The baseline: TensorFlow imported and its runtime started (a small model built and run),
    # before any data: what every run pays whatever its size.
    warm = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8)])
    warm.predict(np.zeros((4, 8), np.float32), verbose=0)
    out["rss_baseline_mb"] = rss_now_mb()
    t = time.perf_counter()
    data = load_competition(load_config(config))
    out["load_s"] = time.perf_counter() - t
    out["rss_after_load_mb"] = rss_peak_mb()

    name = member_names(data.cfg, False)[0]
    cfg, n = member_config(data.cfg, name, data.task), len(data.train)
    rng = np.random.default_rng(0)
    valid_idx = np.sort(rng.choice(n, n // 5, replace=False))
    train_idx = np.setdiff1d(np.arange(n), valid_idx)
    t = time.perf_counter()
    pre = TabularPreprocessor(data.columns, cfg.preprocessing, seed=0).fit(data.train, rows=train_idx)
    out["rss_after_fit_mb"] = rss_peak_mb()
    inputs = model_inputs(data, pre, {"train": ("train", train_idx), "valid": ("train", valid_idx)}, packed=True)
    out["preprocess_s"] = time.perf_counter() - t
    out["rss_after_preprocess_mb"] = rss_peak_mb()
    y = encode_labels(data.y[train_idx], data.task, len(data.classes), cfg.train)
    spec = input_spec(pre, cfg, False)
    tc = cfg.train
    steps = -(-len(y) // tc.batch_size)

    def model():
        keras.utils.set_random_seed(0)
        net = build_model(name, spec, cfg.model, output_size(data.task, len(data.classes)), data.task)
        adapt_layers(net, inputs.x["train"], seed=0)
        net.compile(optimizer=make_optimizer(tc, make_schedule(tc, steps), net=net, total_steps=tc.epochs * steps),
                    loss=make_loss(data.task, tc), steps_per_execution=steps_per_execution(tc.steps_per_execution,
                                                                                           steps))
        return net

    real = inputs.dataset("train", y, training=True, seed=0, batch_size=tc.batch_size)
    one = next(iter(real))
    compute = tf.data.Dataset.from_tensors(one).repeat(steps)
    # The two models' epochs alternate, so the machine's drift (±20% within minutes on a shared
    # machine) falls on both sides of input/compute alike; each side's time is the median of its
    # epochs after the first (which traces the step), the only one when there is one.
    nets, seconds = {"real": (model(), real), "compute": (model(), compute)}, {"real": [], "compute": []}
    for _ in range(tc.epochs):
        for side, (net, ds) in nets.items():
            timer = EpochTimer().callback
            net.fit(ds, epochs=1, verbose=0, callbacks=[timer])
            seconds[side] += timer.seconds
    out["epoch_s"], out["compute_epoch_s"] = (float(np.median(s[1:] or s)) for s in seconds.values())
    out["rss_peak_mb"] = rss_peak_mb()
    out["rows"] = n
    out["features"] = len(data.columns)
    out["model"], out["batch_size"] = name, tc.batch_size
    out["vocab"] = sum(v for _, v, _ in spec.embeddings)
    return out


def child_members(config: str) -> dict:
    """One fold of the default run through ``fit_fold``, each member's fit timed and its peak RSS
    read from a peak reset at its start (Linux: /proc/self/clear_refs)."""
    import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    from pipeline.config_files import load_config
    from pipeline.data import load_competition
    from pipeline.training import members
    from pipeline.training.fold import fit_fold

    figures, peaks = {}, []

    def measured(cls):
        fit = cls.fit

        def timed(self, fold):
            peaks.append(rss_peak_mb())  # the process's peak so far, before the reset loses it
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # the peak (VmHWM) back to the current RSS
            start, t = rss_now_mb(), time.perf_counter()
            out = fit(self, fold)
            figures[self.name] = {"start_mb": start, "peak_mb": rss_peak_mb(), "seconds": time.perf_counter() - t}
            return out
        cls.fit = timed

    for cls in (members.KerasMember, members.SklearnMember, members.LightGBMMember):
        measured(cls)
    data = load_competition(load_config(config, ["cv.folds=5"]))
    n = len(data.train)
    valid_idx = np.sort(np.random.default_rng(0).choice(n, n // 5, replace=False))
    with tempfile.TemporaryDirectory() as tmp:
        fit_fold(data, "fold_0", np.setdiff1d(np.arange(n), valid_idx), valid_idx, Path(tmp) / "fold_0", seed=0)
    return {"rows": n, "members": figures, "rss_peak_mb": max(peaks + [rss_peak_mb()])}


def rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_peak_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries that across exec,
    so a child would report its parent's size at the fork (the parent that made the table)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", default="250000,500000,1000000")
    p.add_argument("--cols", type=int, default=100)
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    p.add_argument("--epochs", type=int, default=3, help="per model; those after the first are timed")
    p.add_argument("--members", action="store_true", help="one fold of the default run: each member's peak RSS")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps((child_members if args.members else child)(args.child)))
        return
    sizes = [int(r) for r in args.rows.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            config = write_competition(Path(tmp) / str(rows), rows, args.cols, args.format, args.epochs)
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            done = subprocess.run([sys.executable, __file__, "--child", str(config)] + ["--members"] * args.members,
                                  capture_output=True, text=True, env=env)
            if done.returncode:
                sys.stderr.write(done.stderr[-3000:])
                raise SystemExit(f"size {rows}: the child failed (exit {done.returncode})")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            r["f32_mb"] = rows * args.cols * 4 / 2**20
            if args.members:
                print(f"{rows:>9,} rows x {args.cols} cols, one fold of the default run: peak RSS {r['rss_peak_mb']:.0f} MB; "
                      + "; ".join(f"{m} +{f['peak_mb'] - f['start_mb']:.0f} MB above its start ({f['start_mb']:.0f} MB), "
                                  f"{f['seconds']:.1f} s" for m, f in r["members"].items()), flush=True)
                continue
            results.append(r)
            over = (r["rss_peak_mb"] - r["rss_baseline_mb"]) / r["f32_mb"]
            r["rss_over_baseline"] = over
            print(f"{rows:>9,} rows x {args.cols} cols ({args.format}), {r['model']} batch {r['batch_size']}: "
                  f"load {r['load_s']:6.1f}s  peak RSS {r['rss_peak_mb']:7.0f} MB = "
                  f"{r['rss_peak_mb'] / r['f32_mb']:4.2f}x float32 data ({r['f32_mb']:.0f} MB), "
                  f"{over:4.2f}x over the baseline ({r['rss_baseline_mb']:.0f} MB; peak after load "
                  f"{r['rss_after_load_mb']:.0f}, after the fold's fit {r['rss_after_fit_mb']:.0f}, after its "
                  f"inputs {r['rss_after_preprocess_mb']:.0f})  preprocess {r['preprocess_s']:6.1f}s  "
                  f"epoch {r['epoch_s']:6.2f}s  compute-only {r['compute_epoch_s']:6.2f}s  "
                  f"input/compute {r['epoch_s'] / r['compute_epoch_s']:4.2f}  embedding rows {r['vocab']:,}",
                  flush=True)
    if args.members:
        return
    small, large = results[0], results[-1]
    linearity = (large["epoch_s"] / large["rows"]) / (small["epoch_s"] / small["rows"])
    worst_input = max(r["epoch_s"] / r["compute_epoch_s"] for r in results)
    print(f"rss_ratio={large['rss_peak_mb'] / large['f32_mb']:.2f} "
          f"rss_over_baseline={large['rss_over_baseline']:.2f} epoch_linearity={linearity:.2f} "
          f"input_ratio={large['epoch_s'] / large['compute_epoch_s']:.2f} (worst size {worst_input:.2f})")


if __name__ == "__main__":
    main()

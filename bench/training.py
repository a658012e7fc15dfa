"""Training-toolkit benchmark (run by hand, not in CI), each part measured side by side in one run.

    python bench/training.py [--part speed --part families --part memory --part recipes] [--comp diamonds ...]

speed:   epoch time on diamonds' fold 0 with and without XLA, with and without mixed precision
         (bfloat16 on CPU), the median of the epochs after the first (which compiles).
families: epoch time of each Keras family with its own recipe (batch size included) on the same
         fold: mlp, realmlp, TabM as its authors set it (mini, k=32, 2x512) and smaller TabMs;
         the ratio to the mlp's epoch (the TabM issue's goal: at most 3x), and the authors' 32
         members against one member of the same width (k=1).
memory:  peak resident memory of a few training steps of a deep MLP with and without gradient
         checkpointing, each variant in its own process (peak RSS is per process).
recipes: the OOF score of each competition's default recipe against the default plus EMA, SWA,
         SAM, one-cycle and seed averaging, each alone, through the full 5-fold pipeline.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS first)

RECIPES = {
    "default": [],
    "+EMA": ["train.ema=true"],
    "+SWA": ["train.swa_epochs=10", "train.checkpoints=[swa]"],
    "+SAM": ["train.sam_rho=0.05"],
    "+one-cycle": ["train.schedule=onecycle", "train.warmup_epochs=0"],
    "+3 seeds": ["train.seeds=3"],
}


def epoch_times(comp: str, overrides: list[str], epochs: int = 4, model: str | None = None) -> float:
    import tf_keras as keras

    from pipeline.config_files import load_config
    from pipeline.cv.folds import assign_folds
    from pipeline.data import load_competition
    from pipeline.data.datasets import make_dataset
    from pipeline.models import build_model
    from pipeline.models.heads import encode_labels, make_loss, output_size
    from pipeline.models.layers import adapt_layers
    from pipeline.training.recipes import member_config
    from pipeline.preprocessing import TabularPreprocessor, make_target_transformer
    from pipeline.training.devices import precision_policy
    from pipeline.training.optimizers import make_optimizer
    from pipeline.training.schedules import make_schedule
    from pipeline.training.trainer import Trainer, steps_per_execution

    data = load_competition(load_config(comp, overrides + [f"train.epochs={epochs}"]))
    model = model or data.cfg.model.name
    cfg = member_config(data.cfg, model, data.task)  # realmlp and tabm: their own batch size and optimizer
    tc = cfg.train
    train_idx = np.flatnonzero(assign_folds(data).fold.to_numpy() != 0)
    rows = data.train.iloc[train_idx]
    y = data.y[train_idx]
    # The labels and task as a fold passes them (a target-encoded column needs them).
    pre = TabularPreprocessor(data.columns, cfg.preprocessing, task=data.task).fit(rows, y)
    if data.task == "regression":
        y = make_target_transformer(False, True).fit_transform(y.reshape(-1, 1)).ravel()
    features = pre.transform(rows, fit_rows=True)  # the cross-fitted encodings of its own rows
    ds = make_dataset(features, encode_labels(y, data.task, len(data.classes), tc),
                      batch_size=tc.batch_size, shuffle=True)
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    keras.utils.set_random_seed(0)
    with precision_policy(tc.precision):
        net = build_model(model, pre.input_spec_, cfg.model, output_size(data.task, len(data.classes)), data.task)
        adapt_layers(net, features)
        trainer = Trainer(net)
        steps = math.ceil(len(y) / tc.batch_size)
        trainer.compile(make_optimizer(tc, make_schedule(tc, steps), net=net, total_steps=epochs * steps),
                        make_loss(data.task, tc),
                        steps_per_execution=steps_per_execution(tc.steps_per_execution, steps),
                        jit_compile=tc.jit_compile)
        trainer.fit(ds, epochs=epochs, verbose=0, callbacks=[Clock()])
    return float(np.median(times[1:]))


def part_speed(comps) -> None:
    variants = {"float32": ["train.precision=float32", "train.jit_compile=false"],
                "float32 + XLA": ["train.precision=float32", "train.jit_compile=true"],
                "mixed_bfloat16": ["train.precision=mixed_bfloat16", "train.jit_compile=false"],
                "mixed_bfloat16 + XLA": ["train.precision=mixed_bfloat16", "train.jit_compile=true"]}
    for comp in comps:
        print(f"\n== speed: {comp}, fold 0, seconds per epoch (median of epochs 2-4)")
        base = None
        for name, overrides in variants.items():
            t = epoch_times(comp, overrides)
            base = base or t
            print(f"{name:24s} {t:8.3f} s   x{base / t:5.2f} vs float32", flush=True)


FAMILIES = {
    "mlp": ("mlp", []),
    "realmlp": ("realmlp", []),
    "tabm (authors: mini, k=32, 2x512)": ("tabm", []),
    "tabm mini, k=32, 2x256": ("tabm", ["model.tabm.hidden=[256, 256]"]),
    "tabm mini, k=8, 2x256": ("tabm", ["model.tabm.k=8", "model.tabm.hidden=[256, 256]"]),
    # One member of the authors' TabM: the MLP of its width, to see what its k = 32 members,
    # computed as one batched matmul, cost against one.
    "tabm mini, k=1, 2x512": ("tabm", ["model.tabm.k=1"]),
}
K32, K1 = "tabm (authors: mini, k=32, 2x512)", "tabm mini, k=1, 2x512"


def part_families(comps) -> None:
    for comp in comps:
        print(f"\n== families: {comp}, fold 0, seconds per training epoch (median of epochs 2-4), "
              f"each with its own recipe's batch size")
        base, times = None, {}
        for label, (model, overrides) in FAMILIES.items():
            t = times[label] = epoch_times(comp, ["train.steps_per_execution=16"] + overrides, model=model)
            base = base or t
            print(f"{label:36s} {t:8.3f} s   x{t / base:6.2f} the mlp's epoch", flush=True)
        print(f"tabm's 32 members against one of them: x{times[K32] / times[K1]:.2f} (32 separate networks: x32)")


MEMORY_SCRIPT = """
import os, resource, sys, json
os.environ["TF_USE_LEGACY_KERAS"] = "1"; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, {root!r})
import numpy as np, tensorflow as tf, tf_keras as keras
from pipeline.config import MLPConfig
from pipeline.models import get_builder
from pipeline.preprocessing.table import InputSpec
from pipeline.training.trainer import Trainer
checkpoint = sys.argv[1] == "on"
net = get_builder("mlp")(InputSpec(numeric_dim=64), MLPConfig(hidden=[1024] * 24, norm="layer",
                                                             checkpoint=checkpoint), 1)
t = Trainer(net); t.compile(keras.optimizers.Adam(1e-4), "mse")
x = np.random.default_rng(0).normal(size=(8192, 64)).astype("float32"); y = x[:, 0]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t.fit({{"numeric": x}}, y, batch_size=8192, epochs=3, verbose=0)
print(json.dumps({{"before_fit_mb": before / 1024, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def part_memory() -> None:
    print("\n== memory: deep MLP (24 x 1024, layer norm), batch 8192, peak RSS of the process")
    results = {}
    for mode in ("off", "on"):
        proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT.format(root=str(ROOT)), mode],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode:
            print(proc.stderr[-2000:])
            raise SystemExit(1)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[mode]
        print(f"checkpointing {mode:3s}: peak {r['peak_mb']:8.0f} MB (before fit {r['before_fit_mb']:.0f} MB, "
              f"training adds {r['peak_mb'] - r['before_fit_mb']:.0f} MB)", flush=True)
    off, on = (results[m]["peak_mb"] - results[m]["before_fit_mb"] for m in ("off", "on"))
    print(f"memory added by training, checkpointing on / off: {on / off:.2f}")


def part_recipes(comps, output_dir: Path) -> None:
    from pipeline import run_competition

    for comp in comps:
        print(f"\n== recipes: {comp}, 5-fold OOF and holdout, each technique alone on top of the default")
        rows = []
        for name, overrides in RECIPES.items():
            start = time.perf_counter()
            r = run_competition(comp, overrides, output_dir=output_dir,
                                run_name=f"recipe-{name.strip('+').replace(' ', '')}-{time.strftime('%H%M%S')}")
            rows.append((name, r.scores["cv"], r.scores["holdout"], time.perf_counter() - start))
            print(f"RESULT {comp} {name:12s} OOF {rows[-1][1]:.5g}  holdout {rows[-1][2]:.5g}  "
                  f"{rows[-1][3]:.0f}s", flush=True)
        metric = pipeline.load_config(comp).metric
        print(f"\n{'recipe':12s} {'OOF ' + metric:>12s} {'holdout':>10s} {'wall s':>8s} {'OOF vs default':>16s}")
        for name, cv, hold, secs in rows:
            print(f"{name:12s} {cv:12.5g} {hold:10.5g} {secs:8.0f} {cv - rows[0][1]:+16.5g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", action="append", choices=["speed", "families", "memory", "recipes"])
    p.add_argument("--comp", action="append", help="default: diamonds and health_insurance")
    p.add_argument("--output-dir", type=Path, default=ROOT / "outputs" / "bench")
    args = p.parse_args()
    comps = args.comp or ["diamonds", "health_insurance"]
    parts = args.part or ["speed", "memory", "recipes"]
    if "speed" in parts:
        part_speed(comps)
    if "families" in parts:
        part_families(comps)
    if "memory" in parts:
        part_memory()
    if "recipes" in parts:
        part_recipes(comps, args.output_dir)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()

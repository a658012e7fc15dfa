"""Image pipeline benchmark (run by hand, not in CI), each part measured side by side in one run.

    python bench/images.py [--part input --part run] [--epochs 4]

input: images per second of training mnist's CNN on fold 0, for the epochs after the first, fed by
       (a) the full input pipeline (files → decode → cache → shuffle → augment → batch → prefetch),
       (b) an in-memory tensor of the already decoded images (the compute-only limit), and
       (c) the same pipeline without the cache (every image decoded every epoch).
run:   the full `python run.py --comp mnist` (5-fold CV, the competition's recipe): OOF and holdout
       accuracy with and without TTA, and the wall time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS first)


def _clock():
    import tf_keras as keras

    class Clock(keras.callbacks.Callback):
        """Seconds per epoch."""

        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t)

    return Clock


def throughput(epochs: int) -> None:
    import dataclasses

    import tf_keras as keras

    from pipeline.config_files import load_config
    from pipeline.cv.folds import assign_folds
    from pipeline.data import load_competition
    from pipeline.data.datasets import make_dataset
    from pipeline.data.fold_inputs import FoldInputs
    from pipeline.models import build_model
    from pipeline.models.heads import encode_labels, make_loss, output_size
    from pipeline.preprocessing import TabularPreprocessor
    from pipeline.training.optimizers import make_optimizer
    from pipeline.training.trainer import Trainer

    Clock = _clock()
    data = load_competition(load_config("mnist"))
    cfg, tc = data.cfg, data.cfg.train
    idx = np.flatnonzero(assign_folds(data).fold.to_numpy() != 0)
    pre = TabularPreprocessor(data.columns, cfg.preprocessing).fit(data.train.iloc[idx])
    spec = dataclasses.replace(pre.input_spec_, image=(*cfg.image.size, cfg.image.channels))
    y = encode_labels(data.y[idx], data.task, len(data.classes), tc)
    paths = data.images["train"][idx]

    def pipeline_ds(cache: str):
        c = cfg.model_copy(update={"image": cfg.image.model_copy(update={"cache": cache})})
        return FoldInputs({"train": {}}, c, {"train": paths}).dataset("train", y, training=True, seed=0)

    # The in-memory tensor holds the plain decoded images (no augmentation: compute only).
    plain = FoldInputs({"train": {}}, cfg, {"train": paths}).dataset("train")
    decoded = np.concatenate([b["image"].numpy() for b in plain]).astype(np.float32)
    variants = {
        "(a) full pipeline (decode, cache, augment)": lambda: pipeline_ds("memory"),
        "(b) in-memory tensor (compute only)": lambda: make_dataset({"image": decoded}, y, batch_size=tc.batch_size,
                                                                    shuffle=True, seed=0),
        "(c) no cache (decode every epoch)": lambda: pipeline_ds("none"),
    }
    rates = {}
    for name, make in variants.items():
        keras.utils.set_random_seed(0)
        net = build_model(cfg.model.name, spec, cfg.model, output_size(data.task, len(data.classes)), data.task)
        trainer = Trainer(net)
        trainer.compile(optimizer=make_optimizer(tc, tc.lr), loss=make_loss(data.task, tc))
        clock = Clock()
        trainer.fit(make(), epochs=epochs, callbacks=[clock], verbose=0)
        rates[name] = len(paths) / float(np.median(clock.times[1:]))
    limit = rates["(b) in-memory tensor (compute only)"]
    print(f"\n== input pipeline: mnist fold 0, {len(paths)} training images, batch {tc.batch_size}, "
          f"images/s (median of epochs 2-{epochs})")
    for name, rate in rates.items():
        print(f"{name:46s} {rate:8.0f} img/s   x {rate / limit:.3f} of the compute-only limit")


def full_run() -> None:
    from pipeline import run_competition

    result = run_competition("mnist", run_name=f"bench_{time.strftime('%Y%m%d-%H%M%S')}")
    s = result.scores
    print(f"\n== mnist, 5-fold CV ({', '.join(s['tta_views'])} views)")
    print(f"{'':22s}{'OOF acc':>10s}{'holdout':>10s}")
    print(f"{'without TTA':22s}{s['cv_no_tta']:10.4f}{s['holdout_no_tta']:10.4f}")
    print(f"{'with TTA':22s}{s['cv']:10.4f}{s['holdout']:10.4f}")
    print(f"wall time {s['seconds']:.1f} s; folds {[round(f, 4) for f in s['folds']]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=["input", "run"])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    parts = args.part or ["input", "run"]
    if "input" in parts:
        throughput(args.epochs)
    if "run" in parts:
        full_run()


if __name__ == "__main__":
    main()

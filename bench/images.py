"""Image pipeline benchmark (run by hand, not in CI), each part measured side by side in one run.

    python bench/images.py [--part input --part run] [--epochs 4]

input: images per second of training mnist's CNN on fold 0, for the epochs after the first, fed by
       (a) the full input pipeline (files → decode → cache → shuffle → augment → batch → prefetch),
       (b) an in-memory tensor of the already decoded images (the compute-only limit), and
       (c) the same pipeline without the cache (every image decoded every epoch).
run:   the full `python run.py --comp mnist` (5-fold CV, the competition's recipe): OOF and holdout
       accuracy with and without TTA, and the wall time.
defaults, vit, pseudo: the automatic default (a config naming only the data and the image column,
       as a Kaggler's first run on new images) on mnist's 28x28 digits and on two tiny-image sets
       derived from them, 14x14 and 8x8 (each digit downsampled with Pillow's box filter, written
       under the bench's work folder); with model.name=vit; with train.pseudo_label. OOF and holdout
       accuracy and the wall time, side by side. mnist8_10pct: mnist8 with 10% of the training
       labels (the other digits join the test set, labels in solution.csv), for pseudo-labels.
pretrain: mnist with 10% of the labels: 400 labelled training digits, the other 3,600 and mnist's
       1,000 test digits as the test set (their labels only in solution.csv, the holdout). The
       default recipe without and with image.pretrain=simclr (pretrained on all 5,000 images), the
       same folds. Last line: pretrain_gain=G (holdout accuracy with minus without).
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


MNIST_DATA = ROOT / "competitions" / "mnist" / "data"
WORK = ROOT / "outputs" / "bench_images"


def derived_set(name: str, side: int, labelled: float = 1.0) -> Path:
    """A competition of mnist's digits at ``side`` x ``side`` pixels: its config (data and image
    column only: every other setting is the default), CSVs and PNGs. ``labelled`` < 1 keeps that
    share of the training labels (stratified) and moves the other training digits to the test set,
    their labels into solution.csv."""
    import pandas as pd
    from PIL import Image

    folder = WORK / name
    config = folder / "config.yaml"
    if config.is_file():
        return config
    train = pd.read_csv(MNIST_DATA / "train.csv.gz", dtype={"id": str})
    test = pd.read_csv(MNIST_DATA / "solution.csv.gz", dtype={"id": str})
    train["src"], test["src"] = "train", "test"
    if labelled < 1:
        keep = train.groupby("label", group_keys=False).sample(frac=labelled, random_state=0).index
        test = pd.concat([test, train.drop(index=keep)], ignore_index=True)
        train = train.loc[keep].sort_index()
    (folder / "data" / "train").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "test").mkdir(parents=True, exist_ok=True)
    for frame, split in ((train, "train"), (test, "test")):
        for ident, src in zip(frame["id"], frame["src"]):
            with Image.open(MNIST_DATA / src / f"{ident}.png") as img:
                out = img if side == img.width else img.resize((side, side), Image.Resampling.BOX)
                out.save(folder / "data" / split / f"{ident}.png")
    train[["id", "label"]].to_csv(folder / "data" / "train.csv.gz", index=False)
    test[["id"]].to_csv(folder / "data" / "test.csv.gz", index=False)
    test[["id", "label"]].to_csv(folder / "data" / "solution.csv.gz", index=False)
    test.assign(label=0)[["id", "label"]].to_csv(folder / "data" / "sample_submission.csv.gz", index=False)
    config.write_text(f"""# mnist at {side}x{side}, {labelled:.0%} of the training labels (bench/images.py)
data:
  train: train.csv.gz
  test: test.csv.gz
  sample_submission: sample_submission.csv.gz
  solution: solution.csv.gz
  id: id
  target: label
metric: accuracy
image:
  column: id
  extension: .png
""")
    return config


# name → (side in pixels, share of the training labels kept); the few-label set is where
# pseudo-labels have unlabelled digits to add (on mnist8 the test set is 1,000 of 5,000 digits).
SETS = {"mnist28": (28, 1.0), "mnist14": (14, 1.0), "mnist8": (8, 1.0), "mnist8_10pct": (8, 0.1)}


def scored_run(config: Path, overrides: list[str], tag: str) -> dict:
    from pipeline import run_competition

    quiet = ["diagnostics.importance=false", "diagnostics.adversarial=false", "diagnostics.report=false"]
    s = run_competition(config, overrides + quiet, output_dir=WORK / "runs",
                        run_name=f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}").scores
    return {"cv": s["cv"], "holdout": s["holdout"], "seconds": s["seconds"], "scores": s}


def variants(part: str) -> dict[str, list[str]]:
    """Each part's runs; vit and pseudo are compared with the defaults part's run of the same set
    (run them in one command, --part defaults --part vit, for the pair side by side)."""
    return {"defaults": {"default": []}, "vit": {"vit": ["model.name=vit"]},
            "pseudo": {"pseudo_label 0.95": ["train.pseudo_label=0.95"]}}[part]


def compare(part: str, sets: list[str], extra: list[str]) -> None:
    rows = []
    for set_name in sets:
        config = derived_set(set_name, *SETS[set_name])
        for label, overrides in variants(part).items():
            r = scored_run(config, overrides + extra, f"{part}-{set_name}")
            rows.append((set_name, label, r))
            print(f"  {set_name:8s} {label:20s} OOF {r['cv']:.4f} holdout {r['holdout']:.4f} {r['seconds']:7.1f} s",
                  flush=True)
    print(f"\n== {part}: accuracy, default recipe{' + ' + ' '.join(extra) if extra else ''}")
    print(f"{'set':9s}{'variant':22s}{'OOF':>8s}{'holdout':>9s}{'seconds':>9s}")
    for set_name, label, r in rows:
        print(f"{set_name:9s}{label:22s}{r['cv']:8.4f}{r['holdout']:9.4f}{r['seconds']:9.1f}")


def pretrain_gain(extra: list[str]) -> None:
    config = derived_set("mnist28_10pct", 28, labelled=0.1)
    plain = scored_run(config, extra, "pretrain-off")
    pre = scored_run(config, ["image.pretrain=simclr"] + extra, "pretrain-on")
    info = pre["scores"]["pretrain"]
    print("\n== mnist, 10% of the labels (400 training digits; 4,600 held out), default recipe")
    print(f"{'':26s}{'OOF':>8s}{'holdout':>9s}{'seconds':>9s}")
    print(f"{'from scratch':26s}{plain['cv']:8.4f}{plain['holdout']:9.4f}{plain['seconds']:9.1f}")
    print(f"{'SimCLR-pretrained encoder':26s}{pre['cv']:8.4f}{pre['holdout']:9.4f}{pre['seconds']:9.1f}")
    print(f"pretraining: {info['epochs']} epochs on {info['images']} images, NT-Xent {info['losses'][0]:.3f} → "
          f"{info['losses'][-1]:.3f}, {info.get('seconds', 0):.1f} s (in the run's seconds when not reused)")
    print(f"pretrain_gain={pre['holdout'] - plain['holdout']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=["input", "run", "defaults", "vit", "pseudo", "pretrain"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--sets", default=",".join(SETS), help="for defaults, vit, pseudo: of " + ", ".join(SETS))
    parser.add_argument("--set", action="append", default=[], dest="extra",
                        help="an override added to every run of defaults, vit, pseudo, pretrain")
    args = parser.parse_args()
    parts = args.part or ["input", "run"]
    if "input" in parts:
        throughput(args.epochs)
    if "run" in parts:
        full_run()
    for part in ("defaults", "vit", "pseudo"):
        if part in parts:
            compare(part, args.sets.split(","), args.extra)
    if "pretrain" in parts:
        pretrain_gain(args.extra)


if __name__ == "__main__":
    main()

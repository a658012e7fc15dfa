"""Build the embedded competitions from ../shared/datasets in Kaggle layout.

Run once by a maintainer (the results are committed, compressed):

    python tools/make_embedded.py [--shared ../shared/datasets]

Each competition gets data/train.csv.gz, test.csv.gz (no target), sample_submission.csv.gz and
solution.csv.gz (the held-out labels: a fixed 20% of the rows, as Kaggle's private leaderboard).
The split is seeded, so the files are reproducible byte for byte.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = 0.2
SEED = 2026


def _write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip header (and so the committed bytes) stable between rebuilds.
    df.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})


def _split(df: pd.DataFrame, target: str, stratify: bool):
    strat = df[target] if stratify else None
    return train_test_split(df, test_size=HOLDOUT, random_state=SEED, stratify=strat)


def make_tabular(src: Path, name: str, target: str, stratify: bool, sample_value) -> None:
    df = pd.read_csv(src)
    df = df.rename(columns={df.columns[0]: "id"})
    train, test = _split(df, target, stratify)
    train, test = train.sort_values("id"), test.sort_values("id")
    out = ROOT / "competitions" / name / "data"
    _write(train, out / "train.csv.gz")
    _write(test.drop(columns=[target]), out / "test.csv.gz")
    _write(pd.DataFrame({"id": test["id"], target: sample_value}), out / "sample_submission.csv.gz")
    _write(test[["id", target]], out / "solution.csv.gz")
    print(f"{name}: train {len(train)} rows, test {len(test)} rows -> {out}")


def make_images(src: Path, name: str, target: str) -> None:
    """Pixel rows → real PNG files in Kaggle's image layout: train/<id>.png and test/<id>.png, with
    train.csv (id, label), test.csv (id), sample_submission.csv and solution.csv."""
    from PIL import Image

    # The source is sorted by label: shuffle first, so ids say nothing about the label.
    df = pd.read_csv(src).sample(frac=1.0, random_state=SEED).reset_index(drop=True)
    pixels = [c for c in df.columns if c != target]
    side = int(round(len(pixels) ** 0.5))
    df = pd.concat([pd.Series([f"{i:05d}" for i in range(len(df))], name="id"), df], axis=1)
    train, test = _split(df, target, stratify=True)
    train, test = train.sort_values("id"), test.sort_values("id")
    out = ROOT / "competitions" / name / "data"
    for split, part in (("train", train), ("test", test)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for image_id, row in zip(part["id"], part[pixels].to_numpy(dtype=np.uint8)):
            Image.fromarray(row.reshape(side, side), mode="L").save(folder / f"{image_id}.png", optimize=True)
    _write(train[["id", target]], out / "train.csv.gz")
    _write(test[["id"]], out / "test.csv.gz")
    _write(pd.DataFrame({"id": test["id"], target: 0}), out / "sample_submission.csv.gz")
    _write(test[["id", target]], out / "solution.csv.gz")
    print(f"{name}: train {len(train)} images, test {len(test)} images ({side}x{side}) -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "datasets")
    args = parser.parse_args()
    make_tabular(args.shared / "diamonds.csv.gz", "diamonds", "price", stratify=False, sample_value=0.0)
    make_tabular(args.shared / "health_insurance.csv.gz", "health_insurance", "whi", stratify=True,
                 sample_value=0.5)
    make_images(args.shared / "mnist_5k.csv.gz", "mnist", "label")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

"""A fold's model inputs per split and the tf.data datasets built from them.

Tabular competitions get the in-memory batch builder (datasets.py); a competition with an image
column gets the image pipeline (images.py) with the tabular inputs riding along. Fold training,
prediction and TTA ask this one object for datasets, so they never branch on the data's kind.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .datasets import make_dataset
from .images import batches, decoded_bytes, decoded_dataset

SPLITS = ("train", "valid", "test")


class FoldInputs:
    def __init__(self, x: dict[str, dict], cfg, images: dict[str, np.ndarray] | None = None,
                 cache_dir: Path | None = None):
        """x: split → preprocessed tabular inputs; images: split → image file paths (or None)."""
        self.x, self.cfg, self.images, self.cache_dir = x, cfg, images, cache_dir
        self._decoded = {}
        if images is not None:
            total = decoded_bytes(sum(len(p) for p in images.values()), cfg.image)
            mode = cfg.image.cache
            if mode == "auto":
                mode = "memory" if total <= cfg.image.cache_memory_mb * 2**20 else "file"
            self.cache_mode = mode
        else:
            self.cache_mode = "memory"

    @property
    def views(self) -> list[str]:
        """TTA views to predict with (tabular data: the identity only)."""
        return list(self.cfg.image.tta.views) if self.images is not None else ["identity"]

    def dataset(self, split: str, y=None, *, training: bool = False, seed: int = 0, view: str = "identity",
                batch_size: int | None = None):
        tc = self.cfg.train
        if self.images is None:
            bs = batch_size or (tc.batch_size if training else tc.predict_batch_size)
            return make_dataset(self.x[split], y, batch_size=bs, shuffle=training, seed=seed,
                                mixup_alpha=tc.mixup_alpha if training else 0.0)
        # Images: prediction batches stay small, as a batch of large images is large.
        bs = batch_size or (tc.batch_size if training else min(tc.predict_batch_size, 2 * tc.batch_size))
        per_image = decoded_bytes(1, self.cfg.image)
        # A file cache is used when memory is short, so the shuffle buffer is bounded by the budget too.
        buffer = max(bs, min(len(self.images[split]), int(self.cfg.image.cache_memory_mb * 2**20 // per_image)))
        return batches(self._decoded_split(split), self.x[split], y, self.cfg.image, batch_size=bs,
                       training=training, seed=seed, mixup_alpha=tc.mixup_alpha if training else 0.0,
                       cutmix_alpha=tc.cutmix_alpha if training else 0.0, view=view, shuffle_buffer=buffer)

    def _decoded_split(self, split: str):
        # One decoded (and cached) dataset per split, reused by training, validation and every
        # TTA view, so each image is decoded once per fold.
        if split not in self._decoded:
            cache = {"memory": "", "none": None}.get(self.cache_mode)
            if self.cache_mode == "file":
                if self.cache_dir is None:
                    raise ValueError("image.cache=file needs a cache folder")
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                cache = str(self.cache_dir / split)
            self._decoded[split] = decoded_dataset(self.images[split], self.cfg.image, cache)
        return self._decoded[split]

    def close(self) -> None:
        """Drop the decoded caches (and the cache files: they are not outputs)."""
        self._decoded.clear()
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

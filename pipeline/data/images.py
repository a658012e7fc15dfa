"""Image files: locating them from the CSVs, checking them before training, and the tf.data
pipeline that decodes, caches, augments and batches them.

The pipeline, in order: file paths → parallel read + decode + resize (AUTOTUNE) → cache of the
decoded uint8 images (memory, or a file when the decoded set exceeds ``image.cache_memory_mb``)
→ shuffle → batch → per-image random augmentation (after the cache, so every epoch differs) →
Mixup/CutMix → prefetch. Validation, test and TTA views use the same decoded cache without random
augmentation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from ..errors import DataError
from .augment import IMAGE_KEY, augment_batch, mix_batch, view_batch

# What tf.io.decode_image reads; PIL names them so the check can say what a file really is.
FORMATS = {"PNG", "JPEG", "BMP", "GIF"}


def image_paths(values, folder: Path, extension: str) -> np.ndarray:
    return np.array([str(folder / f"{v}{extension}") for v in values], dtype=object)


def check_images(paths: np.ndarray, csv: Path, column: str) -> None:
    """Every file exists and is a readable PNG/JPEG/BMP/GIF; one DataError naming the files if not."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DataError(f"{csv}: {len(missing)} of {len(paths)} images named in column {column!r} are missing "
                        f"(first: {', '.join(missing[:3])}). Check image.train_dir / image.test_dir and "
                        f"image.extension, or --data-dir.")
    from PIL import Image, UnidentifiedImageError

    bad = []
    for p in paths:
        try:
            with Image.open(p) as im:
                fmt = im.format
                im.verify()  # structure and checksums, without decoding every pixel
            if fmt not in FORMATS:
                bad.append(f"{p} ({fmt})")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            bad.append(f"{p} ({type(exc).__name__}: {str(exc)[:60]})")
        if len(bad) >= 3:
            break
    if bad:
        raise DataError(f"{csv}: unreadable or unsupported image file(s) in column {column!r}: {'; '.join(bad)}. "
                        f"Replace or drop those rows (readable formats: PNG, JPEG, BMP, GIF).")


def decode(path, size: tuple[int, int], channels: int, resize: str = "resize"):
    """File → uint8 (height, width, channels). Grayscale files become RGB when channels is 3."""
    img = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False, dtype=tf.uint8)
    img.set_shape([None, None, channels])
    if resize == "pad":  # keep the aspect ratio, pad with black
        out = tf.image.resize_with_pad(tf.cast(img, tf.float32), size[0], size[1])
    else:
        out = tf.image.resize(tf.cast(img, tf.float32), size)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def decoded_bytes(n: int, cfg) -> int:
    h, w = cfg.size
    return n * h * w * cfg.channels


def decoded_dataset(paths: np.ndarray, cfg, cache_file: str | None = None) -> tf.data.Dataset:
    """Decoded images in file order, cached per ``image.cache``: "" memory, a path: file."""
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(paths, dtype=str))
    # deterministic: the order must match the labels zipped beside it.
    ds = ds.map(lambda p: decode(p, tuple(cfg.size), cfg.channels, cfg.resize),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds if cache_file is None else ds.cache(cache_file)


def batches(decoded: tf.data.Dataset, others: dict, y, cfg, *, batch_size: int, training: bool = False,
            seed: int = 0, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, view: str = "identity",
            shuffle_buffer: int | None = None) -> tf.data.Dataset:
    """Decoded images (+ tabular inputs, labels) → batches of float32 0-255 images in a dict."""
    n = len(next(iter(others.values()))) if others else (len(y) if y is not None else int(decoded.cardinality()))
    parts = [decoded] + ([tf.data.Dataset.from_tensor_slices(others)] if others else [])
    if y is not None:
        parts.append(tf.data.Dataset.from_tensor_slices(y))

    # Elements are (inputs, labels) when labels are given, else the inputs dict alone.
    def pack(x, rest):
        return (x, *rest) if rest else x

    def to_inputs(img, *rest):
        x = {IMAGE_KEY: img, **(rest[0] if others else {})}
        return pack(x, rest[1:] if others else rest)

    ds = tf.data.Dataset.zip(tuple(parts)).map(to_inputs)
    if training:
        ds = ds.shuffle(shuffle_buffer or n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def as_float(x, *rest):
        return pack({**x, IMAGE_KEY: tf.cast(x[IMAGE_KEY], tf.float32)}, rest)

    ds = ds.map(as_float, num_parallel_calls=tf.data.AUTOTUNE)
    augment = training and _augments(cfg.augment)
    mixing = training and y is not None and (mixup_alpha > 0 or cutmix_alpha > 0)
    if augment or mixing:
        seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).batch(2)

        def randomize(batch, s):
            x, rest = (batch[0], batch[1:]) if isinstance(batch, tuple) else (batch, ())
            s2 = tf.random.experimental.stateless_split(tf.cast(s, tf.int64), num=2)
            if augment:
                x = {**x, IMAGE_KEY: augment_batch(x[IMAGE_KEY], s2[0], cfg.augment)}
            if mixing:
                x, label = mix_batch(x, rest[0], s2[1], mixup_alpha, cutmix_alpha)
                rest = (label,)
            return pack(x, rest)

        ds = tf.data.Dataset.zip((ds, seeds)).map(randomize, num_parallel_calls=tf.data.AUTOTUNE)
    elif view != "identity":
        ds = ds.map(lambda x, *r: pack({**x, IMAGE_KEY: view_batch(x[IMAGE_KEY], view, cfg.tta)}, r),
                    num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)


def _augments(aug) -> bool:
    return any((aug.hflip, aug.vflip, aug.rotation, aug.shift, aug.zoom, aug.shear, aug.brightness,
                aug.contrast, aug.randaugment_n))

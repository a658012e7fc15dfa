"""Image augmentation on batches of float32 pixels in 0-255: random per-image transforms for
training, CutMix, and the deterministic views of test-time augmentation.

Every random draw is stateless from a per-batch seed, so a run repeats exactly. Augmentation is
vectorized over the batch with per-image parameters (each image its own angle, shift, ...): one
resampling per batch instead of one per image and per layer. That is why the geometry is written
here rather than stacked from Keras' RandomRotation/RandomTranslation/RandomZoom layers, which
resample once each and draw from stateful generators.
"""
from __future__ import annotations

import math

import tensorflow as tf

from .datasets import mixup_batch

IMAGE_KEY = "image"


def affine_transforms(h: int, w: int, angle=0.0, scale=1.0, shift_x=0.0, shift_y=0.0, shear_x=0.0, shear_y=0.0,
                      n=None):
    """Per-image projective transforms (n, 8) mapping output pixels to input pixels: rotation by
    ``angle`` (radians) and shear about the centre, zoom by ``scale`` (> 1 zooms in), then a shift in
    pixels. Parameters are scalars or (n,) tensors."""
    def vec(v):
        v = tf.cast(v, tf.float32)
        return v if n is None else tf.broadcast_to(v, [n])

    angle, scale, tx, ty, shx, shy = map(vec, (angle, scale, shift_x, shift_y, shear_x, shear_y))
    cos, sin = tf.cos(angle), tf.sin(angle)
    m00, m01 = (cos - sin * shy) / scale, (cos * shx - sin) / scale
    m10, m11 = (sin + cos * shy) / scale, (sin * shx + cos) / scale
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    a2 = cx - m00 * cx - m01 * cy - tx
    b2 = cy - m10 * cx - m11 * cy - ty
    zero = tf.zeros_like(m00)
    return tf.stack([m00, m01, a2, m10, m11, b2, zero, zero], axis=-1)


def transform(images, transforms, fill: str = "constant"):
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode=fill.upper())
    out.set_shape(images.shape)  # the op drops the static shape the model input needs
    return out


# RandAugment (Cubuk et al., 2020): N ops per image drawn uniformly, all at magnitude M of 10.
RANDAUGMENT_OPS = ("identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness",
                   "contrast", "solarize", "posterize", "autocontrast")


def _uniform(seed, n, low, high):
    return tf.random.stateless_uniform([n], seed, low, high)


def augment_batch(images, seed, cfg):
    """Random augmentation of a batch (n, h, w, c) float32 in 0-255 per ``image.augment``; the
    result has the same shape, dtype and range."""
    n, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=16)
    x = images
    if cfg.hflip:
        x = tf.where(_uniform(seeds[0], n, 0, 1)[:, None, None, None] < 0.5, tf.image.flip_left_right(x), x)
    if cfg.vflip:
        x = tf.where(_uniform(seeds[1], n, 0, 1)[:, None, None, None] < 0.5, tf.image.flip_up_down(x), x)

    zeros = tf.zeros([n])
    angle = _uniform(seeds[2], n, -1, 1) * cfg.rotation * math.pi / 180
    scale = 1 + _uniform(seeds[3], n, -1, 1) * cfg.zoom
    tx = _uniform(seeds[4], n, -1, 1) * cfg.shift * w
    ty = _uniform(seeds[5], n, -1, 1) * cfg.shift * h
    shx = _uniform(seeds[6], n, -1, 1) * cfg.shear
    shy = zeros
    geometric = any((cfg.rotation, cfg.zoom, cfg.shift, cfg.shear))
    ops = {}
    if cfg.randaugment_n:
        # Per image: a random subset of N ops (the N smallest of K uniform draws), random signs.
        k = len(RANDAUGMENT_OPS)
        rank = tf.argsort(tf.argsort(tf.random.stateless_uniform([n, k], seeds[7]), axis=1), axis=1)
        chosen = tf.cast(rank < cfg.randaugment_n, tf.float32)
        ops = {name: chosen[:, i] for i, name in enumerate(RANDAUGMENT_OPS)}
        sign = tf.where(tf.random.stateless_uniform([n, k], seeds[8]) < 0.5, -1.0, 1.0)
        m = cfg.randaugment_m / 10
        angle += ops["rotate"] * sign[:, 1] * m * 30 * math.pi / 180
        shx += ops["shear_x"] * sign[:, 2] * m * 0.3
        shy += ops["shear_y"] * sign[:, 3] * m * 0.3
        tx += ops["translate_x"] * sign[:, 4] * m * 0.3 * w
        ty += ops["translate_y"] * sign[:, 5] * m * 0.3 * h
        geometric = True
    if geometric:
        x = transform(x, affine_transforms(h, w, angle, scale, tx, ty, shx, shy), cfg.fill)

    def per_image(v):
        return v[:, None, None, None]

    if cfg.brightness:
        x = x + per_image(_uniform(seeds[9], n, -1, 1) * cfg.brightness * 255)
    if cfg.contrast:
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = mean + (x - mean) * per_image(1 + _uniform(seeds[10], n, -1, 1) * cfg.contrast)
    if ops:
        m = cfg.randaugment_m / 10
        x = tf.clip_by_value(x, 0, 255)
        bright = x + per_image(sign[:, 6] * m * 0.9 * 127.5)
        x = tf.where(per_image(ops["brightness"]) > 0, bright, x)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        contrasted = mean + (x - mean) * per_image(1 + sign[:, 7] * m * 0.9)
        x = tf.clip_by_value(tf.where(per_image(ops["contrast"]) > 0, contrasted, x), 0, 255)
        threshold = 256 - m * 256
        x = tf.where((per_image(ops["solarize"]) > 0) & (x >= threshold), 255 - x, x)
        bits = 8 - round(m * 4)
        step = float(2 ** (8 - bits))
        x = tf.where(per_image(ops["posterize"]) > 0, tf.floor(x / step) * step, x)
        lo = tf.reduce_min(x, axis=[1, 2], keepdims=True)
        hi = tf.reduce_max(x, axis=[1, 2], keepdims=True)
        stretched = tf.where(hi > lo, (x - lo) * 255 / tf.maximum(hi - lo, 1e-3), x)
        x = tf.where(per_image(ops["autocontrast"]) > 0, stretched, x)
    return tf.clip_by_value(x, 0, 255)


def cutmix_batch(x, y, alpha: float, seed, image_key: str = IMAGE_KEY):
    """CutMix (Yun et al., 2019): each image gets a box pasted from a shuffled partner, box area
    1 - lambda with lambda ~ Beta(alpha, alpha); labels are mixed by the box's actual area. Other
    inputs (tabular) are taken from the partner with probability equal to its share."""
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    images = x[image_key]
    n, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    g1 = tf.random.stateless_gamma([n], s[0], alpha=alpha)
    g2 = tf.random.stateless_gamma([n], s[1], alpha=alpha)
    lam = g1 / (g1 + g2)
    perm = tf.argsort(tf.random.stateless_uniform([n], s[2]))
    cut = tf.sqrt(1 - lam)
    cy = tf.random.stateless_uniform([n], s[3]) * h
    cx = tf.random.stateless_uniform([n], s[4]) * w
    y0, y1 = tf.clip_by_value(cy - cut * h / 2, 0, h), tf.clip_by_value(cy + cut * h / 2, 0, h)
    x0, x1 = tf.clip_by_value(cx - cut * w / 2, 0, w), tf.clip_by_value(cx + cut * w / 2, 0, w)
    y0, y1, x0, x1 = (tf.round(v) for v in (y0, y1, x0, x1))
    rows = tf.range(h, dtype=tf.float32)[None, :, None]
    cols = tf.range(w, dtype=tf.float32)[None, None, :]
    box = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None]) &
           (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
    share = (y1 - y0) * (x1 - x0) / float(h * w)  # the partner's share of the image
    keep = tf.random.stateless_uniform([n], s[5]) >= share

    def mix(key, a):
        b = tf.gather(a, perm)
        if key == image_key:
            return tf.where(box[..., None], b, a)
        shape = [-1] + [1] * (len(a.shape) - 1)
        if a.dtype.is_floating and key == "__label__":
            l = tf.reshape(tf.cast(share, a.dtype), shape)
            return (1 - l) * a + l * b
        return tf.where(tf.reshape(keep, shape), a, b)

    return {k: mix(k, v) for k, v in x.items()}, mix("__label__", tf.cast(y, tf.float32))


def mix_batch(x, y, seed, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
    """Mixup, CutMix, or (both set) one of the two per batch with equal chance, as timm does."""
    if not cutmix_alpha:
        return mixup_batch(x, y, mixup_alpha, seed)
    if not mixup_alpha:
        return cutmix_batch(x, y, cutmix_alpha, seed)
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    use_cutmix = tf.random.stateless_uniform([], s[0]) < 0.5
    return tf.cond(use_cutmix, lambda: cutmix_batch(x, y, cutmix_alpha, s[1]),
                   lambda: mixup_batch(x, y, mixup_alpha, s[1]))


def view_batch(images, view: str, tta):
    """One deterministic test-time view of a batch (``image.tta`` holds the amounts)."""
    if view == "identity":
        return images
    if view == "hflip":
        return tf.image.flip_left_right(images)
    if view == "vflip":
        return tf.image.flip_up_down(images)
    h, w = images.shape[1], images.shape[2]
    dx, dy = tta.shift * w, tta.shift * h
    angle = tta.rotation * math.pi / 180
    # A positive shift moves the content right / down.
    params = {"shift_left": {"shift_x": -dx}, "shift_right": {"shift_x": dx}, "shift_up": {"shift_y": -dy},
              "shift_down": {"shift_y": dy}, "zoom_in": {"scale": 1 + tta.zoom},
              "zoom_out": {"scale": 1 - tta.zoom}, "rotate_left": {"angle": -angle},
              "rotate_right": {"angle": angle}}[view]
    n = tf.shape(images)[0]
    return transform(images, affine_transforms(h, w, n=n, **params), "constant")

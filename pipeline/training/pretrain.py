"""Self-supervised pretraining of an image model's encoder on the competition's own images
(``image.pretrain``): SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", 2020).

Every train and test image, without its label, is seen as two random views (shift, rotation,
zoom, contrast: data/augment.py's per-image transforms); the encoder (the cnn's or vit's layers up
to the image features) and a projection head are trained so that the two views of one image are
closer than any other pair in the batch (the NT-Xent loss). The projection head is dropped; each
fold builds its own model, loads the encoder's weights and fine-tunes it (the head alone first for
``image.pretrain.head_epochs``, then the whole network: fold.py's stages).

Why by hand: neither tf_keras nor TensorFlow ships a contrastive trainer; the loss is the paper's
(a softmax over the batch's cosine similarities), a dozen lines.

The encoder is pretrained once per competition and settings, and saved beside the folds
(``<output root>/<competition>/pretrain/<model>-<key>/``: its weights and pretrain.json with the
loss per epoch); every run, tuning trial and fold with the same settings reuses it. A weights file is
data: it is loaded into a network the pipeline builds from the config, never executed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ..config import AugmentConfig
from ..data.augment import augment_batch
from ..data.images import decoded_dataset
from ..models import PRETRAINABLE, build_model, model_section
from ..models.inputs import IMAGE_INPUT
from ..outputs import write_json
from ..preprocessing.table import InputSpec

log = logging.getLogger("pipeline")
WEIGHTS = "encoder.weights.h5"


def nt_xent(z: tf.Tensor, temperature: float) -> tf.Tensor:
    """SimCLR's loss on 2N L2-normalized projections, the first N and the last N being the two
    views of the same N images: cross-entropy of each view's similarities, its other view the
    right answer, itself excluded."""
    n2 = tf.shape(z)[0]
    n = n2 // 2
    sim = tf.matmul(z, z, transpose_b=True) / temperature
    sim = sim - 1e9 * tf.eye(n2, dtype=sim.dtype)
    labels = tf.concat([tf.range(n, n2), tf.range(0, n)], axis=0)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=sim))


def encoder(net: keras.Model, model_name: str) -> keras.Model:
    """The image features of ``net`` (its image input → the PRETRAINABLE layer's output): the same
    layer objects, so weights loaded here are the fold model's."""
    image = next(t for t in net.inputs if t.name.split(":")[0] == IMAGE_INPUT)
    return keras.Model(image, net.get_layer(PRETRAINABLE[model_name]).output, name="encoder")


def encoder_layers(net: keras.Model, model_name: str) -> list:
    return [layer for layer in encoder(net, model_name).layers if layer.weights]


def view_config(cfg) -> AugmentConfig:
    pc, aug = cfg.image.pretrain, cfg.image.augment
    return AugmentConfig(rotation=pc.rotation, shift=pc.shift, zoom=pc.zoom, contrast=pc.contrast,
                         hflip=aug.hflip, vflip=aug.vflip, fill=aug.fill)


def settings_key(cfg, paths: np.ndarray) -> str:
    """What the pretrained encoder depends on: the model's section (less the head's widths), the
    image settings, the pretraining settings (less the fine-tuning's) and the images (their paths)."""
    im = cfg.image
    section = model_section(cfg.model, cfg.model.name).model_dump(mode="json", exclude={"hidden", "tabular_hidden"})
    parts = {"model": cfg.model.name, "section": section, "image": [im.size, im.channels, im.resize],
             "pretrain": im.pretrain.model_dump(mode="json", exclude={"head_epochs", "weights"}),
             "augment": [im.augment.hflip, im.augment.vflip, im.augment.fill], "seed": cfg.train.seed,
             "images": hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def pretrained_encoder(data, folder: Path) -> tuple[Path, dict]:
    """The encoder's weights file for the run's settings: reused from ``folder`` when saved, else
    pretrained now on the train and test images. Returns (path, pretrain.json's summary)."""
    cfg = data.cfg
    paths = np.concatenate([data.images["train"], data.images["test"]])
    out = Path(folder) / f"{cfg.model.name}-{settings_key(cfg, paths)}"
    weights, summary_path = out / WEIGHTS, out / "pretrain.json"
    if weights.is_file() and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        log.info("pretrained encoder: reusing %s (SimCLR, %d epochs on %d images, loss %.4g → %.4g)", weights,
                 summary["epochs"], summary["images"], summary["losses"][0], summary["losses"][-1])
        return weights, summary
    net, losses, seconds = simclr(data, paths)
    out.mkdir(parents=True, exist_ok=True)
    # Written beside, then moved in one step (tf_keras picks the format from the ".weights.h5" end,
    # which atomic_path's temporary name lacks).
    partial = out / f"partial-{os.getpid()}.{WEIGHTS}"
    encoder(net, cfg.model.name).save_weights(str(partial))
    os.replace(partial, weights)
    summary = {"method": "simclr", "images": int(len(paths)), "epochs": len(losses), "losses": losses,
               "seconds": round(seconds, 1), "key": out.name}
    write_json(summary, summary_path)
    return weights, summary


def simclr(data, paths: np.ndarray) -> tuple[keras.Model, list[float], float]:
    """Train the run's image model's encoder with a projection head on two views of every image.
    Returns (the network, its encoder trained; the mean loss per epoch; seconds)."""
    cfg, pc = data.cfg, data.cfg.image.pretrain
    start = time.perf_counter()
    keras.utils.set_random_seed(cfg.train.seed)
    spec = InputSpec(0, [], (*cfg.image.size, cfg.image.channels))
    net = build_model(cfg.model.name, spec, cfg.model, 1, "regression")
    enc = encoder(net, cfg.model.name)
    width = int(enc.output_shape[-1])
    head = keras.Sequential([keras.layers.Dense(width, activation="relu"), keras.layers.Dense(pc.projection)],
                            name="projection")
    batch = min(pc.batch_size, len(paths))
    steps = max(1, len(paths) // batch)
    schedule = keras.optimizers.schedules.CosineDecay(pc.lr, pc.epochs * steps)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=pc.weight_decay)
    views = view_config(cfg)
    ds = (decoded_dataset(paths, cfg.image, "").shuffle(len(paths), seed=cfg.train.seed, reshuffle_each_iteration=True)
          .batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    head.build((None, width))

    @tf.function
    def step(images, seed):
        x = tf.cast(images, tf.float32)
        a = augment_batch(x, tf.stack([seed, 0]), views)
        b = augment_batch(x, tf.stack([seed, 1]), views)
        with tf.GradientTape() as tape:
            z = head(enc(tf.concat([a, b], axis=0), training=True), training=True)
            loss = nt_xent(tf.math.l2_normalize(z, axis=1), pc.temperature)
        variables = enc.trainable_variables + head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    losses, count = [], 0
    log.info("pretraining the %s encoder (SimCLR): %d train + test images, %d epochs of %d batches of %d",
             cfg.model.name, len(paths), pc.epochs, steps, batch)
    every = max(1, math.ceil(pc.epochs / 5))
    for epoch in range(pc.epochs):
        total = []
        for images in ds:
            total.append(float(step(images, tf.constant(count, tf.int64))))
            count += 1
        losses.append(round(float(np.mean(total)), 6))
        if (epoch + 1) % every == 0 or epoch + 1 == pc.epochs:
            log.info("  pretrain epoch %d/%d: NT-Xent loss %.4f", epoch + 1, pc.epochs, losses[-1])
    return net, losses, time.perf_counter() - start


def load_encoder(net: keras.Model, model_name: str, weights: str | Path) -> None:
    """The pretrained encoder's weights into a fold's freshly built network."""
    encoder(net, model_name).load_weights(str(weights))


def set_encoder_trainable(net: keras.Model, model_name: str, trainable: bool) -> int:
    """Freeze (head stage) or release the encoder's layers; returns the weights-holding layers set."""
    layers = encoder_layers(net, model_name)
    for layer in layers:
        layer.trainable = trainable
    return len(layers)


def with_pretrained_encoder(data, folder: Path):
    """``data`` whose config names the encoder weights its folds start from, pretrained now or
    reused (a given image.pretrain.weights is used as it is); and the summary for scores.json (None
    without image.pretrain)."""
    import dataclasses

    from ..run_files import file_sha256

    pc = data.cfg.image.pretrain
    if not pc.method:
        return data, None
    if pc.weights:
        path, summary = Path(pc.weights), {"method": pc.method, "given": True}
    else:
        path, summary = pretrained_encoder(data, folder)
    cfg = data.cfg
    image = cfg.image.model_copy(update={"pretrain": pc.model_copy(update={"weights": str(path)})})
    summary = {**summary, "weights": str(path), "sha256": file_sha256(path)}
    return dataclasses.replace(data, cfg=cfg.model_copy(update={"image": image})), summary

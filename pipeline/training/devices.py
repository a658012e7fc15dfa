"""What the hardware decides: the precision policy and the tf.distribute strategy.

Both are chosen from the environment unless the config names them, so the same config runs on a
laptop CPU, a Kaggle GPU or a TPU:
- precision "auto": mixed_float16 on GPU (loss scaling via LossScaleOptimizer, which compile adds),
  mixed_bfloat16 on TPU, float32 on CPU. Any policy can be forced, mixed_bfloat16 on CPU included.
- strategy "auto": TPU → TPUStrategy; several GPUs → MirroredStrategy; TF_CONFIG naming several
  workers → MultiWorkerMirroredStrategy; else the default strategy. "mirrored" on a machine without
  GPUs mirrors over the logical CPU devices (how the tests exercise it).
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager

import tensorflow as tf
import tf_keras as keras

log = logging.getLogger("pipeline")


def _tpu_resolver():
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        resolver.master()  # raises when no TPU is attached
        return resolver
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        return None


def resolve_precision(name: str) -> str:
    if name != "auto":
        return name
    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "float32"


@contextmanager
def precision_policy(name: str):
    """Set the global Keras dtype policy while a model is built and trained, then restore it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(resolve_precision(name))
    try:
        yield keras.mixed_precision.global_policy().name
    finally:
        keras.mixed_precision.set_global_policy(previous)


def worker_count() -> int:
    try:
        return len(json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {}).get("worker", []))
    except json.JSONDecodeError:
        return 0


_STRATEGY = {}


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy for ``name`` (cached: TensorFlow allows one TPU/multi-worker setup a process)."""
    if name in _STRATEGY:
        return _STRATEGY[name]
    asked = name
    # Multi-worker first: its collective ops must be configured before anything initializes
    # TensorFlow's runtime, which listing the logical devices (below) or looking for a TPU does.
    if name == "multi_worker" or (name == "auto" and worker_count() > 1):
        name = "multi_worker"
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        gpus = tf.config.list_logical_devices("GPU")
        if name == "auto":
            name = "tpu" if _tpu_resolver() is not None else "mirrored" if len(gpus) > 1 else "default"
        if name == "tpu":
            resolver = _tpu_resolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            strategy = tf.distribute.TPUStrategy(resolver)
        elif name == "mirrored":
            devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
            strategy = tf.distribute.MirroredStrategy(devices=devices)
        else:
            strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync > 1:
        log.info("distribution: %s over %d replicas", type(strategy).__name__, strategy.num_replicas_in_sync)
    _STRATEGY[name] = _STRATEGY[asked] = strategy
    return strategy

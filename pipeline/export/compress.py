"""Model compression before conversion, with tensorflow-model-optimization (tfmot, on tf_keras):
quantization-aware training, magnitude pruning (also 2:4 structured), weight clustering, their
collaborative forms (pruning- and cluster-preserving QAT), low-rank factorization of Dense layers,
and knowledge distillation into a smaller student.

Only Dense and Conv2D layers are compressed (annotated through ``clone_model``): entity embeddings
take int32 codes, which tfmot's whole-model ``quantize_model`` would try to fake-quantize (it
fails on int32), and the 1-unit head is too small for 2:4 blocks. Every step fine-tunes on the
fold's training rows and returns a plain Keras model ready for the TFLite converter.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

COMPRESSIBLE = ("Dense", "Conv2D")


def _tfmot():
    from ..versions import require

    require("tensorflow-model-optimization")
    import tensorflow_model_optimization as tfmot

    return tfmot


def _compressible(layer) -> bool:
    return type(layer).__name__ in COMPRESSIBLE and layer.name != "head"


def require_compressible(model, kind: str) -> None:
    """tfmot wraps Keras' own Dense and Conv2D layers only: a network built of custom layers
    (realmlp's NTK layers) has nothing to compress, which tfmot reports as an internal error."""
    if not any(_compressible(layer) for layer in model.layers):
        raise ConfigError(f"export {kind}: the {model.name} network has no Dense or Conv2D layer that "
                          f"tensorflow-model-optimization can wrap (its layers are its own). Export int8 "
                          f"(post-training quantization) or float16 instead, or distill it into a student.")


def _clone(model, wrap):
    """``model`` with ``wrap(layer)`` around every compressible layer (tfmot's documented way).

    The layers themselves are reused, weights included, so ``model`` must be a fresh copy that
    nothing else uses (export loads one per artifact)."""
    import tf_keras as keras

    require_compressible(model, "compression")
    return keras.models.clone_model(model, clone_function=lambda l: wrap(l) if _compressible(l) else l)


def fine_tune(model, x, y, loss, lr: float, epochs: int, batch_size: int, callbacks=()):
    import tf_keras as keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=list(callbacks), shuffle=True)
    return model


def qat(model, x, y, loss, ec, scheme=None):
    """Quantization-aware training: fake-quantized Dense/Conv2D, fine-tuned."""
    import tf_keras as keras

    qk = _tfmot().quantization.keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_configs import \
        Default8BitOutputQuantizeConfig

    def annotate(layer):
        if _compressible(layer):
            return qk.quantize_annotate_layer(layer)
        if isinstance(layer, keras.layers.Rescaling):
            # The CNN's input scaling: tfmot has no config for it; its output gets a fake-quant range
            # like any activation, so the converter knows the first conv's input scale.
            return qk.quantize_annotate_layer(layer, Default8BitOutputQuantizeConfig())
        return layer

    require_compressible(model, "qat")
    annotated = keras.models.clone_model(model, clone_function=annotate)
    with qk.quantize_scope({"Default8BitOutputQuantizeConfig": Default8BitOutputQuantizeConfig}):
        q = qk.quantize_apply(annotated, scheme) if scheme is not None else qk.quantize_apply(annotated)
    return fine_tune(q, x, y, loss, ec.finetune_lr, ec.finetune_epochs, ec.batch_size)


def prune(model, x, y, loss, ec, sparsity: float, m_by_n: tuple[int, int] | None = None):
    """Magnitude pruning to ``sparsity`` on a polynomial schedule (or 2:4 blocks), fine-tuned, stripped."""
    if not 0 < sparsity < 1:
        raise ConfigError(f"export.sparsity must be in (0, 1), got {sparsity}")
    sp = _tfmot().sparsity.keras
    steps = ec.finetune_epochs * int(np.ceil(len(y) / ec.batch_size))
    if m_by_n:
        params = {"pruning_schedule": sp.ConstantSparsity(0.5, begin_step=0, frequency=1), "sparsity_m_by_n": m_by_n}
    else:
        end = max(1, int(steps * 0.7))  # reach the target with 30% of the steps left to recover
        params = {"pruning_schedule": sp.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end,
                                                          frequency=max(1, end // 20))}
    pruned = _clone(model, lambda l: sp.prune_low_magnitude(l, **params))
    fine_tune(pruned, x, y, loss, ec.finetune_lr, ec.finetune_epochs, ec.batch_size, [sp.UpdatePruningStep()])
    return sp.strip_pruning(pruned)


def cluster(model, x, y, loss, ec, clusters: int):
    cl = _tfmot().clustering.keras
    params = {"number_of_clusters": clusters,
              "cluster_centroids_init": cl.CentroidInitialization.KMEANS_PLUS_PLUS}
    clustered = _clone(model, lambda l: cl.cluster_weights(l, **params))
    fine_tune(clustered, x, y, loss, ec.finetune_lr, ec.finetune_epochs, ec.batch_size)
    return cl.strip_clustering(clustered)


def pqat(model, x, y, loss, ec, sparsity: float):
    """Pruning-preserving QAT: prune, then QAT that keeps the zeros."""
    combine = _tfmot().experimental.combine
    pruned = prune(model, x, y, loss, ec, sparsity)
    return qat(pruned, x, y, loss, ec, combine.Default8BitPrunePreserveQuantizeScheme())


def cqat(model, x, y, loss, ec, clusters: int):
    """Cluster-preserving QAT: cluster, then QAT that keeps the centroids."""
    combine = _tfmot().experimental.combine
    clustered = cluster(model, x, y, loss, ec, clusters)
    return qat(clustered, x, y, loss, ec, combine.Default8BitClusterPreserveQuantizeScheme())


def kernel_sparsity(model) -> float:
    """Share of zeros in the compressible layers' kernels."""
    kernels = [l.kernel.numpy() for l in model.layers if _compressible(l)]
    return float(sum((k == 0).sum() for k in kernels) / max(1, sum(k.size for k in kernels)))


def is_two_four(kernel: np.ndarray) -> bool:
    """At most 2 non-zeros in every block of 4 consecutive input channels (Dense: inputs; Conv2D:
    the input channels at each kernel position), as tfmot's sparsity_m_by_n lays them out."""
    inputs, outputs = kernel.shape[-2], kernel.shape[-1]
    k = kernel.reshape(-1, inputs, outputs).transpose(0, 2, 1)  # (positions, outputs, inputs)
    usable = inputs - inputs % 4
    blocks = k[..., :usable].reshape(k.shape[0], outputs, -1, 4)
    return bool(((blocks != 0).sum(-1) <= 2).all())


def two_four_layers(model) -> tuple[int, int]:
    """(layers in the 2:4 pattern, layers that can hold it: 4 or more input channels)."""
    kernels = [l.kernel.numpy() for l in model.layers if _compressible(l) and l.kernel.shape[-2] >= 4]
    return sum(is_two_four(k) for k in kernels), len(kernels)


def low_rank(model, x, y, loss, ec, rank: int | None = None, energy: float = 0.9):
    """Each hidden Dense W (n x m) → two Dense layers U_r (n x r, no bias) and S_r V_r (r x m) from a
    truncated SVD, when that is smaller; r given, or the smallest keeping ``energy`` of the squared
    singular values. Fine-tuned after. (Written here: tfmot has no factorization.)"""
    import tf_keras as keras

    factors = {}
    for layer in model.layers:
        if type(layer).__name__ == "Dense" and _compressible(layer):
            w = layer.kernel.numpy()
            u, s, vt = np.linalg.svd(w, full_matrices=False)
            r = rank or int(np.searchsorted(np.cumsum(s ** 2) / np.sum(s ** 2), energy) + 1)
            r = max(1, min(r, len(s)))
            if r * (w.shape[0] + w.shape[1]) < w.size:
                factors[layer.name] = (u[:, :r], s[:r, None] * vt[:r], r)

    def fn(layer):
        config = layer.get_config()
        if layer.name not in factors:
            return layer.__class__.from_config(config)
        r = factors[layer.name][2]
        first = keras.layers.Dense(r, use_bias=False, name=f"{layer.name}_u")
        second = keras.layers.Dense.from_config({**config, "name": f"{layer.name}_v"})
        return keras.Sequential([first, second], name=layer.name)

    factored = keras.models.clone_model(model, clone_function=fn)
    for layer in model.layers:
        target = factored.get_layer(layer.name)
        if layer.name in factors:
            u, sv, _ = factors[layer.name]
            target.layers[0].set_weights([u])
            target.layers[1].set_weights([sv, layer.bias.numpy()])
        else:
            target.set_weights(layer.get_weights())
    fine_tune(factored, x, y, loss, ec.finetune_lr, ec.finetune_epochs, ec.batch_size)
    return factored, {name: f[2] for name, f in factors.items()}


def distillation_loss(task: str, temperature: float, alpha: float):
    """Labels arrive packed as [hard target(s), teacher soft target(s)]; the loss is
    alpha * task loss on the labels + (1 - alpha) * T^2 * KL(teacher_T || student_T) (Hinton et al.,
    2015), or for regression alpha * MSE(labels) + (1 - alpha) * MSE(teacher)."""
    import tensorflow as tf

    def loss(packed, logits):
        logits = tf.cast(logits, tf.float32)
        if task == "regression":
            y, t = packed[:, :1], packed[:, 1:]
            return alpha * tf.reduce_mean(tf.square(y - logits)) + (1 - alpha) * tf.reduce_mean(tf.square(t - logits))
        if task == "binary":
            y, t = packed[:, :1], packed[:, 1:]
            hard = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
            t_logit = tf.math.log(t + 1e-7) - tf.math.log(1 - t + 1e-7)
            t_soft = tf.sigmoid(t_logit / temperature)
            soft = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=t_soft, logits=logits / temperature)
                                  - tf.nn.sigmoid_cross_entropy_with_logits(labels=t_soft, logits=t_logit / temperature))
            return alpha * hard + (1 - alpha) * temperature ** 2 * soft
        k = logits.shape[-1]
        y, t = packed[:, :k], packed[:, k:]
        hard = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits))
        t_soft = tf.nn.softmax(tf.math.log(t + 1e-7) / temperature)
        log_student = tf.nn.log_softmax(logits / temperature)
        kl = tf.reduce_sum(t_soft * (tf.math.log(t_soft + 1e-7) - log_student), axis=-1)
        return alpha * hard + (1 - alpha) * temperature ** 2 * tf.reduce_mean(kl)

    return loss

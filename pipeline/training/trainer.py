"""The training step: a Keras model that wraps the built network and adds, as config switches,
gradient accumulation, SAM and Lookahead (Mixup is a batch transform of the input pipeline).

Only the wrapped network is saved (``Trainer.net``): inference needs none of this. The step keeps
Keras' contract (``compile`` takes the loss and optimizer, ``metrics`` lists the trackers), so
fit / evaluate / callbacks work unchanged. Mixed precision's loss scaling is honoured when the
optimizer is a LossScaleOptimizer.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


AUTO_STEPS_PER_EXECUTION = 32


def steps_per_execution(setting, steps_per_epoch: int) -> int:
    """``train.steps_per_execution``: a number as given, or auto: 32 batches per call into
    TensorFlow (the epoch's batches when fewer). One call per batch costs a Python round trip
    that a small tabular network's step does not cover (bench/speed.py measures it); per-epoch
    callbacks see the same epochs either way."""
    if setting == "auto":
        return max(1, min(AUTO_STEPS_PER_EXECUTION, int(steps_per_epoch)))
    return int(setting)


class Trainer(keras.Model):
    def __init__(self, net: keras.Model, *, grad_accum_steps: int = 1, sam_rho: float | None = None,
                 lookahead_steps: int | None = None, lookahead_alpha: float = 0.5,
                 backbone_variables: list | None = None, backbone_optimizer=None):
        """backbone_variables / backbone_optimizer: a pretrained backbone's variables, updated by
        their own optimizer (a lower learning rate than the head's)."""
        super().__init__(name="trainer")
        self.net = net
        self.grad_accum_steps = int(grad_accum_steps)
        self.sam_rho = sam_rho
        self.lookahead_steps = lookahead_steps
        self.lookahead_alpha = lookahead_alpha
        self.backbone_optimizer = backbone_optimizer if backbone_variables else None
        self._backbone = {v.ref() for v in backbone_variables or []}
        weights = net.trainable_variables
        self._step = tf.Variable(0, trainable=False, dtype=tf.int64)
        if self.grad_accum_steps > 1:
            self._accum = [tf.Variable(tf.zeros_like(w), trainable=False) for w in weights]
        if lookahead_steps:
            self._slow = [tf.Variable(w, trainable=False) for w in weights]

    def call(self, inputs, training=False):
        return self.net(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        """An ensemble network (TabM) outputs (batch, members, outputs) in training: the loss is
        the mean of the members' losses, each against the same labels."""
        if y_pred is not None and y_pred.shape.rank == 3:
            k = tf.shape(y_pred)[1]
            y_pred = tf.reshape(y_pred, (-1, y_pred.shape[-1]))  # batch-major: row b's members together
            y = tf.repeat(y, k, axis=0)
            if sample_weight is not None:
                sample_weight = tf.repeat(sample_weight, k, axis=0)
        return super().compute_loss(x, y, y_pred, sample_weight)

    # ------------------------------------------------------------------ pieces of the step
    def _gradients(self, x, y, sample_weight=None):
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
            scaled = self.optimizer.get_scaled_loss(loss) if self._loss_scaled else loss
        grads = tape.gradient(scaled, self.net.trainable_variables)
        if self._loss_scaled:
            grads = self.optimizer.get_unscaled_gradients(grads)
        if self.sam_rho or self.grad_accum_steps > 1:
            # Embeddings give sparse IndexedSlices; SAM and accumulation do arithmetic on gradients.
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return loss, y_pred, grads

    @property
    def _loss_scaled(self) -> bool:
        # compile() wraps the optimizer for mixed_float16; the wrapper's classes differ between the
        # legacy and new optimizers, its interface does not.
        return hasattr(self.optimizer, "get_scaled_loss")

    def _sam_gradients(self, x, y, sample_weight=None):
        """Sharpness-aware minimization (Foret et al., 2021): the gradient at the worst nearby point
        w + rho * g / ||g||, applied at w."""
        _, _, grads = self._gradients(x, y, sample_weight)
        scale = self.sam_rho / (tf.linalg.global_norm(grads) + 1e-12)
        eps = [g * scale if g is not None else None for g in grads]
        for w, e in zip(self.net.trainable_variables, eps):
            if e is not None:
                w.assign_add(e)
        loss, y_pred, grads = self._gradients(x, y, sample_weight)
        for w, e in zip(self.net.trainable_variables, eps):
            if e is not None:
                w.assign_sub(e)
        return loss, y_pred, grads

    def _apply(self, grads):
        pairs = list(zip(grads, self.net.trainable_variables))
        if self.backbone_optimizer is None:
            self.optimizer.apply_gradients(pairs)
        else:
            slow = [(g, v) for g, v in pairs if v.ref() in self._backbone]
            self.optimizer.apply_gradients([(g, v) for g, v in pairs if v.ref() not in self._backbone])
            if self._loss_scaled:
                # The head's LossScaleOptimizer skips steps whose gradients overflowed; so must this one.
                finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g, _ in slow])

                def step():
                    self.backbone_optimizer.apply_gradients(slow)
                    return tf.constant(True)

                tf.cond(finite, step, lambda: tf.constant(False))
            else:
                self.backbone_optimizer.apply_gradients(slow)
        if self.lookahead_steps:
            self._lookahead()

    def _lookahead(self):
        """Lookahead (Zhang et al., 2019): every k steps the slow weights move alpha of the way to
        the fast ones, and the fast weights restart from there."""
        def sync():
            for slow, fast in zip(self._slow, self.net.trainable_variables):
                slow.assign_add(self.lookahead_alpha * (fast - slow))
                fast.assign(slow)
            return tf.constant(True)

        tf.cond(self.optimizer.iterations % self.lookahead_steps == 0, sync, lambda: tf.constant(False))

    # ------------------------------------------------------------------ the step
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.sam_rho:
            loss, y_pred, grads = self._sam_gradients(x, y, sample_weight)
        else:
            loss, y_pred, grads = self._gradients(x, y, sample_weight)
        self._step.assign_add(1)
        if self.grad_accum_steps == 1:
            self._apply(grads)
        else:
            # Average N micro-batch gradients, then one optimizer step: the same update as one step
            # on an N times larger batch (for a mean loss and equal micro-batches, without BatchNorm).
            for acc, g in zip(self._accum, grads):
                acc.assign_add(g / self.grad_accum_steps)

            def step():
                self._apply([tf.identity(a) for a in self._accum])
                for acc in self._accum:
                    acc.assign(tf.zeros_like(acc))
                return tf.constant(True)

            tf.cond(self._step % self.grad_accum_steps == 0, step, lambda: tf.constant(False))
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def build_optimizer(self):
        """Create the optimizer's slots up front: a step inside tf.cond must not create variables."""
        inner = self.optimizer.inner_optimizer if self._loss_scaled else self.optimizer
        head = [v for v in self.net.trainable_variables if v.ref() not in self._backbone]
        inner.build(head)
        if self.backbone_optimizer is not None:
            self.backbone_optimizer.build([v for v in self.net.trainable_variables if v.ref() in self._backbone])

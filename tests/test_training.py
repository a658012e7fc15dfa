import logging

import numpy as np
import tf_keras as keras

from pipeline.config import TrainConfig
from pipeline.training.callbacks import EpochLogger, Snapshots, make_callbacks


def kinds(cbs):
    return [type(c).__name__ for c in cbs]


def test_callbacks_follow_the_config():
    snap = object.__new__(Snapshots)
    cbs = make_callbacks(TrainConfig(), "fold_0", constant_lr=True, log_every=10, snapshots=snap)
    # Snapshots first: with EMA it rewrites val_loss before the others read it.
    assert cbs[0] is snap
    assert kinds(cbs[1:]) == ["NonFiniteLoss", "EpochLogger", "EarlyStopping", "ReduceLROnPlateau"]
    early = cbs[3]
    # Early stopping only stops: which weights predict is the Snapshots' choice.
    assert early.patience == 10 and not early.restore_best_weights and early.monitor == "val_loss"
    # A schedule owns the learning rate: no ReduceLROnPlateau; early stopping can be switched off.
    cbs = make_callbacks(TrainConfig(early_stopping=None), "fold_0", constant_lr=False, log_every=10)
    assert kinds(cbs) == ["NonFiniteLoss", "EpochLogger"]


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_epoch_logger_writes_one_line_every_n_epochs_and_the_last():
    handler, logger = Lines(), logging.getLogger("pipeline")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("adam", "mse")
        x, y = np.zeros((16, 2), "float32"), np.zeros(16, "float32")
        model.fit(x, y, epochs=5, verbose=0, validation_data=(x, y), callbacks=[EpochLogger("fold_0", 5, every=2)])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [l.split("  ")[0] for l in handler.lines] == ["fold_0 epoch 2/5", "fold_0 epoch 4/5", "fold_0 epoch 5/5"]
    assert "val_loss" in handler.lines[0] and "lr 1.00e-03" in handler.lines[0]


def test_auto_steps_per_execution_batches_calls_and_never_exceeds_the_epoch():
    from pipeline.training.trainer import steps_per_execution

    assert steps_per_execution("auto", 135) == 32
    assert steps_per_execution("auto", 5) == 5  # a small epoch: all its batches in one call
    assert steps_per_execution("auto", 0) == 1
    assert steps_per_execution(4, 135) == 4  # a number is kept as given
    assert TrainConfig().steps_per_execution == "auto"


def test_the_history_pass_reports_the_loss_keras_validation_would():
    """One prediction pass per epoch gives val_loss and the metric; its val_loss must be the one
    Keras' own validation pass computes (compiled loss, label smoothing and regularization
    included), for every task's loss."""
    from pipeline.models.heads import encode_labels, make_loss
    from pipeline.training.members import validation_loss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 5)).astype("float32")
    for task, outputs, y, tc in [
            ("regression", 1, rng.normal(size=1000), TrainConfig()),
            ("regression", 1, rng.poisson(3.0, size=1000).astype(float), TrainConfig(loss="poisson")),
            ("binary", 1, rng.integers(0, 2, 1000), TrainConfig(label_smoothing=0.1)),
            ("multiclass", 3, rng.integers(0, 3, 1000), TrainConfig()),
            ("multiclass", 3, rng.integers(0, 3, 1000), TrainConfig(label_smoothing=0.1))]:
        keras.utils.set_random_seed(0)
        inp = keras.Input((5,))
        out = keras.layers.Dense(outputs, kernel_regularizer=keras.regularizers.l2(0.01))(
            keras.layers.Dense(8, activation="relu")(inp))
        net = keras.Model(inp, out)
        net.compile(loss=make_loss(task, tc))
        y_fit = encode_labels(y, task, outputs, tc)
        expected = net.evaluate(x, y_fit, batch_size=128, verbose=0)
        got = validation_loss(task, tc, y_fit)(net, net.predict(x, batch_size=128, verbose=0))
        assert abs(got - expected) < 1e-5 * max(1.0, abs(expected)), (task, tc.loss, got, expected)


def test_thread_pools_follow_the_cpu_quota_not_the_host(tmp_path, monkeypatch):
    """A container's CPU quota (a Kaggle kernel's 4 cores on a 64-core host) sizes TensorFlow's
    pools; without a quota, or when an environment variable sets them, TensorFlow's own choice
    stays."""
    import os

    from pipeline.tf_runtime import set_thread_pools, usable_cores

    quota = tmp_path / "cpu.max"
    quota.write_text("400000 100000\n")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cores(str(quota)) == 4
    quota.write_text("max 100000\n")
    assert usable_cores(str(quota)) == 64
    assert usable_cores(str(tmp_path / "absent")) == 64

    calls = {}

    class Threading:
        def set_intra_op_parallelism_threads(self, n):
            calls["intra"] = n

        def set_inter_op_parallelism_threads(self, n):
            calls["inter"] = n

    class TF:
        class config:
            threading = Threading()

    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "2")
    assert set_thread_pools(TF, cores=4) == 4 and calls == {"intra": 4}
    calls.clear()
    assert set_thread_pools(TF, cores=64) is None and not calls


def test_the_validation_forward_pass_predicts_what_keras_predict_does():
    """Every epoch's validation rows go through one traced forward pass (training/forward.py), not
    Model.predict: the same outputs, over a packed block with its 0/1 columns as bits, in chunks
    whose last one is shorter, with dropout off, traced once for every row count."""
    from pipeline.config import RealMLPConfig
    from pipeline.data.datasets import make_dataset
    from pipeline.models import get_builder
    from pipeline.preprocessing import InputSpec
    from pipeline.preprocessing.arrays import PackedColumns
    from pipeline.training.forward import can_forward, forward_function, predict_rows

    rng = np.random.default_rng(0)
    n, width, flags = 50, 6, [4, 5]
    dense = rng.normal(size=(n, width)).astype("float32")
    dense[:, flags] = rng.integers(0, 2, (n, 2))
    packed = PackedColumns(n, width, flags)
    packed[:] = dense
    codes = rng.integers(0, 5, (n, 1)).astype("int32")
    spec = InputSpec(width, [("cat__c", 5, 3)], continuous=[0, 1, 2, 3])
    net = get_builder("realmlp")(spec, RealMLPConfig(hidden=[16, 16], dropout=0.5), 3, "multiclass")
    assert can_forward(net)
    expected = net.predict(make_dataset({"numeric": dense, "cat__c": codes}, batch_size=64), verbose=0)
    forward = forward_function(net)
    for rows_per_call in (7, 64):  # 7: seven full chunks and a last one of 1 row
        got = predict_rows(forward, {"numeric": packed, "cat__c": codes}, rows_per_call)
        assert got.dtype == np.float32 and got.shape == (n, 3)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert forward.traced.experimental_get_tracing_count() == 1  # one trace for any row count

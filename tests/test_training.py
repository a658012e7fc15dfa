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

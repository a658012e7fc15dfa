"""Keras/TensorFlow pipeline for Kaggle competitions.

    import pipeline
    run = pipeline.fit(train=train_df, test=test_df, target="price", train__epochs=20)
    run.scores["cv"], run.oof, run.submission, run.predict(new_rows), run.leaderboard()

    result = pipeline.run_competition("diamonds", overrides=["train.epochs=5"])   # as run.py does
"""
import os

# One Keras: tf_keras (Keras 2). Set before TensorFlow is imported anywhere, so that third-party
# integrations (Optuna's Keras callbacks) see this same Keras through TensorFlow. Quiet C++ logs.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import tf_runtime, versions  # noqa: E402

versions.check()  # the installed versions against the tested ranges: one clear error, not a late crash

tf_runtime.install()  # TensorFlow's start-up lines and Keras' per-model retracing alarm kept out

# The entry points (api.py); none of these loads TensorFlow: training does, when it starts.
from .api import (export_run, find_learning_rate, fit, load_run, predict_file, run_competition,  # noqa: E402
                  stack_runs, tune)
from .config_files import load_config  # noqa: E402
from .errors import ConfigError, DataError, PipelineError, TrainingError  # noqa: E402


__all__ = ["fit", "run_competition", "tune", "stack_runs", "export_run", "predict_file", "find_learning_rate",
           "load_run", "load_config", "PipelineError", "ConfigError", "DataError",
           "TrainingError"]

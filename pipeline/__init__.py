"""Keras/TensorFlow pipeline for Kaggle competitions.

    from pipeline import run_competition
    result = run_competition("diamonds", overrides=["train.epochs=5"], output_dir="/kaggle/working")
    result.scores["cv"], result.run_dir
"""
import os

# One Keras: tf_keras (Keras 2). Set before TensorFlow is imported anywhere, so that third-party
# integrations (Optuna's Keras callbacks) see this same Keras through TensorFlow. Quiet C++ logs.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .config_files import load_config  # noqa: E402
from .errors import ConfigError, DataError, PipelineError, TrainingError  # noqa: E402


def run_competition(*args, **kwargs):
    """See :func:`pipeline.runner.run_competition` (imported on first use: it loads TensorFlow)."""
    from .runner import run_competition as _run

    return _run(*args, **kwargs)


def load_run(run, output_dir=None, competition=None):
    """A finished run (``pipeline.runs.Run``): ``load_run("outputs/diamonds/r1").predict(df)``."""
    from .predict import load_run as _load

    return _load(run, output_dir, competition)


__all__ = ["run_competition", "load_run", "load_config", "PipelineError", "ConfigError", "DataError",
           "TrainingError"]

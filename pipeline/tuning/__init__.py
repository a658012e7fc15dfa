"""Optuna studies around the CV: search spaces, the objective, and running a study."""
from .study import tune

__all__ = ["tune"]

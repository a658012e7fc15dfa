"""Optuna studies around the CV: search spaces, the objective, and running a study."""
from .study import run_study

__all__ = ["run_study"]

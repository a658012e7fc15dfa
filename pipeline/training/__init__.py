"""Training one fold: optimizers and schedules, callbacks, and ``fit_fold`` → ``FoldResult``."""
from .fold import FoldResult, fit_fold, load_fold_predictor

__all__ = ["FoldResult", "fit_fold", "load_fold_predictor"]

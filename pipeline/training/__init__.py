"""Training one fold: optimizers and schedules, callbacks, and ``fit_fold`` → ``FoldResult``;
artifact.py: a saved fold (save, load, predict)."""
from .artifact import FoldArtifact, FoldResult, load_fold_predictor
from .fold import fit_fold

__all__ = ["FoldArtifact", "FoldResult", "fit_fold", "load_fold_predictor"]

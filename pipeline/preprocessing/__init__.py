"""Per-fold preprocessing with scikit-learn's fit/transform contract.

``TabularPreprocessor`` is fitted on the training rows of one fold only and saved beside that fold's
model; numeric.py and categorical.py hold the registries of what each column can be turned into.
"""
from .table import InputSpec, TabularPreprocessor
from .target import make_target_transformer

__all__ = ["InputSpec", "TabularPreprocessor", "make_target_transformer"]

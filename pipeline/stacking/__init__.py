"""Level-2: combine finished runs (their OOF and test predictions, on the same saved folds)."""
from .level2 import STACKERS
from .stack import stack_runs

__all__ = ["STACKERS", "stack_runs"]

"""Level-2: combine finished runs (their OOF and test predictions, on the same saved folds)."""
from .level2 import STACKERS
from .stack import open_members, stack

__all__ = ["STACKERS", "open_members", "stack"]

"""Reading competition files (load.py) and feeding arrays to Keras through tf.data (datasets.py)."""
from .load import CompetitionData, is_proba_submission, load_competition

__all__ = ["CompetitionData", "is_proba_submission", "load_competition"]

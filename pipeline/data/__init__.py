"""Reading competition files (load.py) and feeding arrays to Keras through tf.data (datasets.py)."""
from .load import CompetitionData, load_competition

__all__ = ["CompetitionData", "load_competition"]

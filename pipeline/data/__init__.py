"""Reading competition files (read.py), checking them (load.py), the settings they imply (infer.py), and
feeding arrays to Keras through tf.data (datasets.py)."""
from .load import CompetitionData, load_competition

__all__ = ["CompetitionData", "load_competition"]

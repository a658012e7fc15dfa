"""TFLite export of a finished run, with the preprocessing as JSON and a size/speed/accuracy report."""
from .run import check_artifacts, export

__all__ = ["export", "check_artifacts"]

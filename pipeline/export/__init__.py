"""TFLite export of a finished run, with the preprocessing as JSON and a size/speed/accuracy report."""
from .run import export_run

__all__ = ["export_run"]

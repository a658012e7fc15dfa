"""One exception hierarchy: every error a user can cause is a PipelineError with one actionable line.

The command line prints ``str(error)`` and exits non-zero; notebooks see the exception itself.
ConfigError and DataError are also ValueErrors, so generic ``except ValueError`` code keeps working.
"""


class PipelineError(Exception):
    """Base of every error caused by input (config, data, arguments, environment)."""


class ConfigError(PipelineError, ValueError):
    """A config file, a --set override or a command-line argument is invalid."""


class DataError(PipelineError, ValueError):
    """A data file is missing, malformed or inconsistent with the config."""


class TrainingError(PipelineError, RuntimeError):
    """Training could not produce usable predictions (e.g. the loss diverged)."""

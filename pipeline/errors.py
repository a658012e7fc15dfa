"""One exception hierarchy: every error a user can cause is a PipelineError with one actionable line.

The command line prints ``str(error)`` and exits non-zero; notebooks see the exception itself.
ConfigError and DataError are also ValueErrors, so generic ``except ValueError`` code keeps working.
"""
import re

# numpy 2 writes a scalar inside an f-string's !r as np.float64(0.5) or np.str_('a'); a user reads
# the value itself. Every message passes through here, so no call site can leak the repr.
_NUMPY_REPR = re.compile(r"\bnp\.(?:float|int|uint|bool|str|complex|datetime|timedelta)\w*\((.*?)\)")


def plain_text(message: str) -> str:
    return _NUMPY_REPR.sub(r"\1", message)


def first_line(exc: BaseException) -> str:
    """A library exception's first line (at most 200 characters), or its type where it has no text:
    what an error line quotes of the cause."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class PipelineError(Exception):
    """Base of every error caused by input (config, data, arguments, environment)."""

    def __init__(self, *args):
        super().__init__(*(plain_text(a) if isinstance(a, str) else a for a in args))


class ConfigError(PipelineError, ValueError):
    """A config file, a --set override or a command-line argument is invalid."""


class DataError(PipelineError, ValueError):
    """A data file is missing, malformed or inconsistent with the config."""


class TrainingError(PipelineError, RuntimeError):
    """Training could not produce usable predictions (e.g. the loss diverged)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Kaggle, schedulers and ``timeout`` send), raised in the main thread so a run
    ends as Ctrl-C ends it: finished folds kept, state ``interrupted``, one line, exit 143."""

    def __init__(self):
        super().__init__("interrupted (SIGTERM)")


_terminated = False  # set by the SIGTERM handler: raised again at the next epoch's end


def on_sigterm(signum=None, frame=None):
    """The command line's SIGTERM handler. The exception it raises may land inside library code
    that swallows it (TensorFlow's tracing); the flag makes the next epoch raise it again."""
    global _terminated
    _terminated = True
    raise Terminated()


def raise_if_terminated() -> None:
    if _terminated:
        raise Terminated()

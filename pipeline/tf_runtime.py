"""TensorFlow's start-up noise and a false retracing alarm, kept out of a run's lines.

- Start-up: importing TensorFlow and its first look at the devices print C++ lines straight to
  the process's stderr (oneDNN, "could not find cuda drivers", cuInit), before absl's logging is
  initialized, so ``TF_CPP_MIN_LOG_LEVEL`` does not hold them back. The first ``import
  tensorflow``, wherever it happens, runs with file descriptor 2 sent to a temporary file; the
  lines go to the ``pipeline`` logger at DEBUG level (``--debug`` shows them) and are written back
  to stderr when the import fails.
- Retracing: TensorFlow counts traces per Python code object, so every new Keras model's
  ``predict_function`` (one per fold, seed and checkpoint, each traced once) counts as a retrace of
  "the same" function, and it warns after five. Those warnings from Keras' own
  ``Model.make_*_function`` are dropped; a real retrace of any other function still warns.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile

log = logging.getLogger("pipeline")


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with tempfile.TemporaryFile() as sink:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(sink.fileno(), 2)
            failed = True
            try:
                self.loader.exec_module(module)
                module.config.list_physical_devices()  # the device probe prints its lines now
                failed = False
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode(errors="replace")
                if failed and text:
                    sys.stderr.write(text)
                elif text.strip():
                    log.debug("TensorFlow start-up:\n%s", text.rstrip())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finder does the rest
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _KerasRetracingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "Model.make_" in message)


def install() -> None:
    """Called once when ``pipeline`` is imported (before any TensorFlow import of ours)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _KerasRetracingFilter) for f in tf_logger.filters):
        tf_logger.addFilter(_KerasRetracingFilter())

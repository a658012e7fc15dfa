"""TensorFlow's start-up noise and a false retracing alarm, kept out of a run's lines.

- Start-up: importing TensorFlow and its first look at the devices print C++ lines straight to
  the process's stderr (oneDNN, "could not find cuda drivers", cuInit), before absl's logging is
  initialized, so ``TF_CPP_MIN_LOG_LEVEL`` does not hold them back. The first ``import
  tensorflow``, wherever it happens, runs with file descriptor 2 sent to a temporary file; the
  lines go to the ``pipeline`` logger at DEBUG level (``--debug`` shows them) and are written back
  to stderr when the import fails.
- Threads: TensorFlow sizes its thread pools by the machine's cores, not by the CPU quota of a
  container (a Kaggle kernel or a Docker limit sees the host's cores but may use 4): a pool of 64
  threads on 4 cores' worth of time makes every step wait on the others. When the quota (cgroup
  ``cpu.max``) or the affinity mask allows fewer cores than the machine has, both pools are set
  to that number, unless ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` say otherwise.
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


def usable_cores(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The cores this process may use: the affinity mask, capped by the cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open(cpu_max).read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(float(quota) / float(period) + 0.5)))
    except (OSError, ValueError):
        pass
    return cores


def set_thread_pools(tf, cores: int | None = None) -> int | None:
    """Both of TensorFlow's thread pools at ``usable_cores()`` when that is below the machine's
    count (see the module's text); returns the number set, or None when left to TensorFlow."""
    cores = cores or usable_cores()
    if cores >= (os.cpu_count() or cores):
        return None
    if not os.environ.get("TF_NUM_INTRAOP_THREADS"):
        tf.config.threading.set_intra_op_parallelism_threads(cores)
    if not os.environ.get("TF_NUM_INTEROP_THREADS"):
        tf.config.threading.set_inter_op_parallelism_threads(cores)
    return cores


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
                set_thread_pools(module)  # before the runtime starts: it cannot change after
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

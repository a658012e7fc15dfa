"""Folds trained side by side, one worker process each (``train.fold_workers``).

Why: a tabular network's training step is a chain of small operations (batches of 256 rows, layers
of 256 units) that TensorFlow's second thread speeds up by only 15-25% on two cores, while two
single-threaded fits side by side each run at nearly the speed of one. Measured on this project's
2-core machine, RealMLP on diamonds' fold 0, seconds per epoch: 0.71-1.05 alone with two threads,
0.90-1.02 alone with one, 0.84-1.07 each with two processes of one thread side by side. So on a CPU
a run trains up to one fold per core, each worker with its share of the cores.

Where the folds do not divide among the cores (5 folds on 2 cores), one worker per core leaves a
core idle for the last fold's whole time. A worker more shares the cores instead: the kernel splits
them evenly between processes, so equal folds started together end together and every core stays
busy to the end (``balanced_workers``). Measured on diamonds' default run (2026-12-06, 2 cores):
3 workers 86.5 and 86.6 s, 2 workers 95.2 and 91.2 s, 5 workers 96.8 s (each fold 8-11% slower
while they share a core, and three more TensorFlow imports), the same scores.

TensorFlow does not survive a fork. loky (the process pool scikit-learn's joblib brings) starts
clean interpreters without running the user's script again (no ``if __name__ == "__main__"``
needed), sets the workers' thread counts in their environment before TensorFlow starts, and
reports a worker that died instead of waiting for it forever.

A worker trains and saves a whole fold (``fit_fold``), as the sequential loop does; the parent
takes the FoldResults in fold order and relays the workers' progress lines to its own log.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import queue as queue_module
import threading

import numpy as np

from ..errors import TrainingError, raise_if_terminated

log = logging.getLogger("pipeline")

# Below this many training rows a fold trains in a few seconds: the workers' start (importing
# TensorFlow, about 7 s on two cores) costs about what the folds side by side save. The default
# run's K-fold loop, one fold at a time against 3 workers on 2 cores (2026-12-06, alternating, the
# same scores): chile's first 600 rows 16.5 and 18.1 s against 18.1 and 19.7 s; its first 1,000
# 20.1 and 17.2 against 17.7 and 17.6; chile 2,025 rows 24.3 and 22.4 against 23.5 and 22.2; ames
# 2,344 43.2 and 43.6 against 36.0 and 37.5; nmes 3,524 26.9 and 28.1 against 25.9 and 27.4;
# caravan 4,657 47.0 and 48.2 against 37.2 and 37.6.
MIN_ROWS = 2_000
# The train and test tables are copied into every worker: above this (in memory), one at a time.
MAX_TABLE_BYTES = 256 * 2 ** 20
# What a worker holds besides its fold's data (TensorFlow's runtime, the network, Python): workers
# are capped so that this and 4x the table each fit in the memory available when the run starts.
WORKER_BYTES = 1536 * 2 ** 20


def fold_workers(data, pending: int) -> int:
    """How many folds train at once: ``train.fold_workers``, or auto: ``balanced_workers`` (one per
    usable core, or a few more where the folds do not divide among the cores) when the run trains
    at least two folds of a tabular competition with a Keras member, on a CPU, the table is at least
    MIN_ROWS rows and at most MAX_TABLE_BYTES, and the available memory holds each worker
    (WORKER_BYTES and 4x the table); else 1."""
    from ..models.sklearn_models import MATRIX_MODELS
    from ..tf_runtime import usable_cores
    from ..training.members import member_names

    setting = data.cfg.train.fold_workers
    if setting != "auto":
        return max(1, min(int(setting), pending))
    if pending < 2 or data.images is not None or len(data.train) < MIN_ROWS:
        return 1
    if all(name in MATRIX_MODELS for name in member_names(data.cfg, False)):
        return 1  # scikit-learn's models use every core themselves
    table = _table_bytes(data)
    if table > MAX_TABLE_BYTES or _accelerated(data.cfg.train.strategy):
        return 1
    return max(1, min(balanced_workers(pending, usable_cores()), _available_memory() // (WORKER_BYTES + 4 * table)))


def balanced_workers(pending: int, cores: int) -> int:
    """The fewest workers, at least one per core, whose last round of folds still fills every core:
    5 folds on 2 cores get 3 (3 folds sharing 2 cores, then 2 on 2), on 4 cores 5; 10 on 2 get 2."""
    if pending <= cores:
        return pending
    return next(w for w in range(cores, pending + 1) if pending % w == 0 or pending % w >= cores)


def _available_memory() -> int:
    """MemAvailable (Linux), else the free pages; a very large number when neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 50


def _table_bytes(data) -> int:
    return int(data.train.memory_usage(deep=True).sum() + data.test.memory_usage(deep=True).sum())


def _accelerated(strategy: str) -> bool:
    """A GPU or TPU trains one fold at a time (each process would claim the whole device)."""
    if strategy not in ("auto", "default"):
        return True
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))


class FoldPool:
    """Worker processes that each train one fold at a time; a context manager. Leaving it by an
    exception (a failed fold, Ctrl-C, SIGTERM) kills the workers: their unfinished fold folders
    are incomplete and a resumed run trains them again."""

    def __init__(self, data, workers: int):
        from joblib.externals.loky import ProcessPoolExecutor
        from joblib.externals.loky.backend import get_context

        from ..tf_runtime import usable_cores

        threads = str(max(1, usable_cores() // workers))
        # Each worker's share of the cores, read by TensorFlow and OpenMP (HGB) when they start.
        env = {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads, "OMP_NUM_THREADS": threads}
        self._relay = _Relay(get_context("loky").Queue(), threading.get_ident())
        # The data goes to each worker once, when it starts, not with every fold.
        self._executor = ProcessPoolExecutor(max_workers=workers, initializer=_start_worker,
                                             initargs=(self._relay.queue, log.getEffectiveLevel(), data), env=env)
        log.info("training %d folds at a time (train.fold_workers; %s TensorFlow thread%s each)", workers,
                 threads, "" if threads == "1" else "s")

    def submit(self, unit, path, seed: int, prefix: str, start_line: str):
        return self._executor.submit(_train, unit.name, unit.train_idx, unit.valid_idx, path, seed, prefix,
                                     start_line)

    @staticmethod
    def result(future):
        """The fold's FoldResult; SIGTERM and Ctrl-C are seen while waiting."""
        from concurrent.futures.process import BrokenProcessPool

        while True:
            raise_if_terminated()
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                continue
            except BrokenProcessPool:  # a worker killed from outside: most often out of memory
                raise TrainingError("a worker process training folds died (killed; most often the system ends "
                                    "a process when memory runs out); its folds are not saved. Rerun with "
                                    "the same --run-name and --set train.fold_workers=1 (one fold at a "
                                    "time, in this process).") from None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self._executor.shutdown(wait=exc_type is None, kill_workers=exc_type is not None)
        self._relay.stop(drain=exc_type is None)
        return False


class _Relay:
    """A thread that hands the workers' log records to the parent's logger as if the run's thread
    had logged them (run.log takes only that thread's lines: logs.run_logging).

    Not logging's QueueListener: its stop() waits for a sentinel to come through the queue, and a
    worker killed while writing to the queue can leave the queue's write lock held forever."""

    def __init__(self, queue, thread: int):
        self.queue, self.thread = queue, thread
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="fold-worker-logs", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            self._handle_next(timeout=0.2)

    def _handle_next(self, timeout: float) -> bool:
        try:
            record = self.queue.get(timeout=timeout)
        except (queue_module.Empty, OSError, EOFError):
            return False
        record.thread = self.thread
        logging.getLogger(record.name).handle(record)
        return True

    def stop(self, drain: bool) -> None:
        """drain: the workers have exited (their last lines are in the queue): hand those over too."""
        self._stop.set()
        self._reader.join(timeout=5)
        while drain and self._handle_next(timeout=0.1):
            pass


_DATA = None  # in a worker: the run's CompetitionData, given once by _start_worker


def _start_worker(queue, level: int, data) -> None:
    """In each worker: keep the run's data; its "pipeline" lines go to the parent; Ctrl-C is the
    parent's to handle; the worker ends with the parent (Linux), so a killed run leaves no fold
    training behind it."""
    import signal

    global _DATA
    _DATA = data
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    logger = logging.getLogger("pipeline")
    logger.handlers[:] = [logging.handlers.QueueHandler(queue)]
    logger.setLevel(level)
    logger.propagate = False


def _end_with_parent() -> None:
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: loky's own check ends an orphaned worker after its current task


def _train(name: str, train_idx: np.ndarray, valid_idx: np.ndarray, path, seed: int, prefix: str, start_line: str):
    from ..training import fit_fold

    log.info(start_line)
    return fit_fold(_DATA, name, train_idx, valid_idx, path, seed=seed, label=prefix)

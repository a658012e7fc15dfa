"""A Kaggle kernel's session in one process: five pipeline.fit runs in a row, RSS after each, and
what TensorFlow printed on the way (start-up lines, retracing warnings).

    python bench/kernel.py [--runs 5]

Prints one line per run and ends with ``rss_growth_mb=G retracing_warnings=W startup_lines=S``
(G: RSS after the last run minus after the first).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Counter(logging.Handler):
    def __init__(self):
        super().__init__()
        self.retracing = 0

    def emit(self, record):
        if "retracing" in record.getMessage():
            self.retracing += 1


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    # Everything written to file descriptor 2 (C++ start-up lines included) goes to a file we read.
    err = tempfile.TemporaryFile()
    saved = os.dup(2)
    os.dup2(err.fileno(), 2)
    import pandas as pd

    import pipeline

    counter = Counter()
    logging.getLogger("tensorflow").addHandler(counter)
    comp = Path(__file__).resolve().parents[1] / "competitions" / "health_insurance" / "data"
    train = pd.read_csv(comp / "train.csv.gz").head(2000)
    test = pd.read_csv(comp / "test.csv.gz").head(500)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for i in range(args.runs):
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run = pipeline.fit(train, test, target="whi", config={"data": {"positive_label": "yes"}},
                                   output_dir=out, run_name=f"r{i}", train__epochs=3, cv__folds=3,
                                   diagnostics__importance=False, diagnostics__adversarial=False)
            rows.append((i, time.perf_counter() - t, rss_mb(), run.scores["cv"]))
    os.dup2(saved, 2)
    err.seek(0)
    text = err.read().decode(errors="replace")
    startup = sum(1 for line in text.splitlines() if line[:1] in "IWE" and line[1:5].isdigit()
                  or "absl::InitializeLog" in line)
    for i, sec, rss, cv in rows:
        print(f"run {i + 1}: {sec:6.1f}s  RSS {rss:7.1f} MB  OOF auc {cv:.4f}")
    retracing = counter.retracing + text.count("triggered tf.function retracing")
    print(f"rss_growth_mb={rows[-1][2] - rows[0][2]:.1f} retracing_warnings={retracing} "
          f"startup_lines={startup}")


if __name__ == "__main__":
    main()

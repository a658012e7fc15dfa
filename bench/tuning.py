"""Tuning and stacking benchmark (run by hand, not in CI), each part measured side by side in one run.

    python bench/tuning.py [--part pruning --part memory --part workers --part stack]

pruning: the same number of trials of the MLP on health_insurance with no pruner, the median
         pruner (per epoch, first fold) and the Wilcoxon pruner (across folds): wall time, best
         value and pruned count side by side.
memory:  30 trials in this process vs 30 trials each in its own worker process: the tuning
         process's resident memory after trials 1, 10, 20 and 30 (with workers: the parent's).
workers: 1 and 2 worker processes, each without and with the median pruner, for the same time on
         one study each (journal file): trials per hour, best value, and the seconds each took to
         reach the best value all four reached (throughput at equal best value).
stack:   on diamonds and health_insurance: the default Keras run, HistGradientBoosting and the linear
         model through the same CV, and their stack (OOF and holdout, each member and each method).
Studies and runs go to outputs/bench/ (removed and rebuilt on each run of a part).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS first)

OUT = ROOT / "outputs" / "bench"


def _trials(summary):
    import optuna

    from pipeline.tuning.study import make_storage

    return optuna.load_study(study_name=summary["study"], storage=make_storage(summary["storage"])).trials


def pruning(trials: int) -> None:
    from pipeline import tune

    common = ["train.epochs=20", "train.seeds=1", "tune.folds=3", "tune.isolate=false"]
    rows = []
    for pruner in ("none", "median", "wilcoxon"):
        out = OUT / "pruning" / pruner
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        s = tune("health_insurance", common + [f"tune.pruner={pruner}"], trials=trials, output_dir=out, study="p")
        rows.append((pruner, time.perf_counter() - t, s["best_value"], s["complete"], s["pruned"]))
    print(f"\n== pruning: health_insurance MLP, {trials} trials, 20 epochs, first 3 folds (AUC, maximize)")
    print(f"{'pruner':10s}{'wall s':>9s}{'best AUC':>10s}{'complete':>10s}{'pruned':>8s}{'time vs none':>14s}")
    for p, wall, best, c, pr in rows:
        print(f"{p:10s}{wall:9.1f}{best:10.5f}{c:10d}{pr:8d}{wall / rows[0][1]:14.2f}")


def memory(trials: int) -> None:
    """Each mode in a fresh process of its own, so neither inherits the other's memory."""
    import subprocess

    print(f"\n== memory: {trials} trials (diamonds MLP, 3 epochs, 1 fold); resident MB of the tuning process")
    for isolate in ("false", "true"):
        proc = subprocess.run([sys.executable, __file__, "--memory-mode", isolate, "--memory-trials", str(trials)],
                              capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("MEMORY ")]
        print(lines[-1].removeprefix("MEMORY ") if lines else f"failed: {proc.stderr[-500:]}")


def memory_one(isolate: str, trials: int) -> None:
    import re

    from pipeline import tune
    from pipeline.tuning.objective import rss_mb

    common = ["train.epochs=3", "tune.folds=1", "tune.pruner=none", "cv.folds=5"]
    out = OUT / "memory" / isolate
    shutil.rmtree(out, ignore_errors=True)
    before = rss_mb()
    s = tune("diamonds", common + [f"tune.isolate={isolate}"], trials=trials, output_dir=out, study="m")
    after = rss_mb()
    per_trial = [t.user_attrs.get("rss_mb") for t in sorted(_trials(s), key=lambda t: t.number)]
    marks = [per_trial[i - 1] for i in (1, 10, 20, 30) if i <= len(per_trial)]
    label = "own process per trial" if isolate == "true" else "all in this process"
    parent = ""
    if isolate == "true":  # the parent logs its own memory after each worker
        log = (out / "diamonds" / "studies" / "m" / "tune.log").read_text()
        rss = [float(m) for m in re.findall(r"parent process memory after a trial: (\d+) MB", log)]
        if rss:
            parent = f"; parent after trial 1: {rss[0]:.0f} MB, after trial {len(rss)}: {rss[-1]:.0f} MB"
    print(f"MEMORY {label:22s} tuning process {before:.0f} MB before, {after:.0f} MB after {len(per_trial)} trials; "
          f"the trial's process after trials 1/10/20/30: {marks} MB{parent}", flush=True)


def workers(seconds: float) -> None:
    from pipeline import tune

    common = ["train.epochs=8", "tune.folds=1", "tune.isolate=true", "tune.pruner_warmup_epochs=2"]
    print(f"\n== workers: {seconds:.0f} s per study (health_insurance MLP, 8 epochs, first fold; AUC, maximize)")
    rows = []
    for jobs in (1, 2):
        for pruner in ("none", "median"):
            out = OUT / "workers" / f"{jobs}-{pruner}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.time()
            s = tune("health_insurance", common + [f"tune.pruner={pruner}"], trials=1000, timeout=seconds, jobs=jobs,
                     output_dir=out, study="w", storage=str(out / "study.log"))
            done = sorted((t for t in _trials(s) if t.state.name == "COMPLETE"), key=lambda t: t.datetime_complete)
            curve, best = [], float("-inf")
            for t in done:
                best = max(best, t.value)
                curve.append((t.datetime_complete.timestamp() - start, best))
            rows.append((jobs, pruner, s["complete"] + s["pruned"], s["pruned"], best, curve))
    target = min(r[4] for r in rows)  # the best value every configuration reached
    print(f"{'workers':>8s}{'pruner':>8s}{'trials':>8s}{'pruned':>8s}{'trials/h':>10s}{'best AUC':>10s}"
          f"{'s to ' + format(target, '.4f'):>14s}{'trials/h vs 1, none':>21s}")
    base = rows[0][2]
    for jobs, pruner, n, pruned, best, curve in rows:
        reach = next(t for t, b in curve if b >= target)
        print(f"{jobs:8d}{pruner:>8s}{n:8d}{pruned:8d}{n * 3600 / seconds:10.0f}{best:10.4f}{reach:14.0f}"
              f"{n / max(1, base):21.2f}")


def stack() -> None:
    from pipeline import run_competition
    from pipeline import stack_runs

    for comp, methods in (("diamonds", ["linear", "hill"]), ("health_insurance", ["linear", "hill", "rank"])):
        out = OUT / "stack"
        shutil.rmtree(out / comp, ignore_errors=True)
        t = time.perf_counter()
        runs = {"keras": [], "hgb": ["model.name=hgb"], "linear": ["model.name=linear"]}
        for name, overrides in runs.items():
            run_competition(comp, overrides, output_dir=out, run_name=name)
        s = stack_runs(comp, list(runs), methods=methods, output_dir=out, run_name="stack").scores
        print(f"\n== stack: {comp} ({s['metric']}, {s['direction']}), {time.perf_counter() - t:.0f} s in all")
        print(f"{'':24s}{'OOF':>10s}{'holdout':>10s}")
        for m in runs:
            print(f"{'member ' + m:24s}{s['members'][m]:10.5g}{s['members_holdout'][m]:10.5g}")
        for m, e in s["methods"].items():
            print(f"{'stack ' + m:24s}{e['cv']:10.5g}{e['holdout']:10.5g}  {e.get('weights', e.get('coef', ''))}")
        sign = 1 if s["direction"] == "maximize" else -1
        best_member = max(s["members"].values(), key=lambda v: sign * v)
        beats = sign * (s["cv"] - best_member) > 0
        print(f"chosen: {s['method']}; stack OOF {s['cv']:.5g} vs best member {best_member:.5g}: "
              f"{'beats every member' if beats else 'does NOT beat every member'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=["pruning", "memory", "workers", "stack"])
    parser.add_argument("--trials", type=int, default=12, help="pruning: trials per pruner")
    parser.add_argument("--memory-trials", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--memory-mode", choices=["false", "true"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_mode:
        memory_one(args.memory_mode, args.memory_trials)
        return
    parts = args.part or ["pruning", "memory", "workers", "stack"]
    if "stack" in parts:
        stack()
    if "pruning" in parts:
        pruning(args.trials)
    if "workers" in parts:
        workers(args.seconds)
    if "memory" in parts:
        memory(args.memory_trials)


if __name__ == "__main__":
    main()

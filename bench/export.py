"""Export benchmark (run by hand, not in CI): the export report of the embedded competitions, and
the issue's targets checked side by side.

    python bench/export.py [--comp diamonds --run RUN] [--comp health_insurance --run RUN] [--comp mnist --run RUN]

Without --run a competition's default run is trained first (mnist: ~13 minutes). Every artifact is
exported from fold 0's first model; latencies are LiteRT, 1 thread, with and without XNNPACK.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS first)

ALL = ["float32", "float16", "dynamic", "int8", "qat", "prune", "prune24", "cluster", "pqat", "cqat", "lowrank",
       "distill"]
# The tolerance for the metric change of INT8 against the float Keras model.
TOLERANCE = {"auc": ("abs", 0.003), "accuracy": ("abs", 0.003)}


def check(comp: str, report: dict, output_dir: Path) -> None:
    rows = {r["artifact"]: r for r in report["artifacts"]}
    metric = report["metric"]
    kind, tol = TOLERANCE.get(metric, ("rel", 0.005))
    print(f"\n-- targets, {comp}")
    f32, i8 = rows["float32"], rows["int8"]
    print(f"INT8 size / float32 size: {i8['bytes'] / f32['bytes']:.3f} (target <= 0.30)")
    for key in ("valid", "holdout"):
        ref = report["float_keras"][key]
        delta = i8[f"{key}_delta"]
        ok = abs(delta) <= (tol if kind == "abs" else tol * abs(ref))
        print(f"INT8 {key} {metric} {i8[key]:.5g} vs float Keras {ref:.5g}: delta {delta:+.4g} "
              f"({'within' if ok else 'OUTSIDE'} {'±' + str(tol) if kind == 'abs' else f'{tol:.1%} relative'})")
    for tag in ("xnnpack", "no_delegate"):
        a, b = i8[f"latency_ms_1_{tag}"], f32[f"latency_ms_1_{tag}"]
        print(f"single-sample latency {tag}: INT8 {a:.4f} ms vs float32 {b:.4f} ms -> INT8 is "
              f"{'faster' if a < b else 'SLOWER'} (x {a / b:.2f})")
    for name in ("float32", "int8"):
        r = rows[name]
        print(f"XNNPACK took {r['delegated_nodes']} of {name}'s {r['nodes']} nodes ({r['xnnpack_partitions']} partition(s))")
    if "distill" in rows:
        d = rows["distill"]
        teacher = d["teacher_fold_score"]
        rel = (d["valid"] - teacher) / abs(teacher)
        smaller = d["ensemble_float32_bytes"] / d["bytes"]
        print(f"distilled INT8 student: valid {metric} {d['valid']:.5g} vs the fold ensemble's OOF {teacher:.5g} "
              f"({rel:+.2%} relative; target within 1%); {smaller:.1f}x smaller than the ensemble's float32 "
              f"weights ({d['ensemble_float32_bytes']} bytes; target >= 5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comp", action="append")
    parser.add_argument("--run", action="append", help="a finished run per --comp, in order")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "outputs")
    args = parser.parse_args()
    comps = args.comp or ["diamonds", "health_insurance", "mnist"]
    runs = (args.run or []) + [None] * len(comps)
    from pipeline import run_competition
    from pipeline import export_run

    for comp, run in zip(comps, runs):
        if run is None:
            run = run_competition(comp, output_dir=args.output_dir).run_dir.name
        out = export_run(comp, run, ALL, output_dir=args.output_dir)
        report = json.loads((out / "export_report.json").read_text())
        print(f"\n== {comp}: run {run}, fold {report['fold']} ({report['model']}), metric {report['metric']}")
        print((out / "report.md").read_text())
        check(comp, report, args.output_dir)


if __name__ == "__main__":
    main()

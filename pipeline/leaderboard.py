"""``python run.py --comp X --leaderboard`` and ``Run.leaderboard()``: every run, stack and tuning
study of a competition in one table, sorted by the metric (best first, by its direction), with the
model, its key settings, CV ± std, holdout, wall time and state; printed and written as
``<output root>/<competition>/leaderboard.csv``."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from .outputs import write_csv
from .paths import check_name

COLUMNS = ["name", "kind", "state", "model", "settings", "metric", "cv", "cv_std", "holdout", "seconds", "finished"]


def _settings(cfg: dict) -> str:
    model, train = cfg.get("model", {}), cfg.get("train", {})
    name = model.get("name") or "mlp"
    # The model's own section (model.<name>); a run saved before the sections has the keys flat.
    own = model.get(name) if isinstance(model.get(name), dict) else model
    parts = [f"hidden={own.get('hidden')}"] if name == "mlp" else []
    if name in ("hgb", "linear", "lightgbm") and (own or model.get("params")):
        parts.append(f"params={own if own is not model else model.get('params')}")
    parts += [f"lr={train.get('lr')}", f"epochs={train.get('epochs')}",
              f"folds={cfg.get('cv', {}).get('folds')}x{cfg.get('cv', {}).get('repeats')}"]
    return " ".join(parts)


def _read(path: Path, reader, damaged: list) -> dict:
    """A run's JSON or YAML file as a dict; {} when absent; {} and a note in ``damaged`` when it
    cannot be read (a truncated scores.json lists the run as damaged, it does not stop the table)."""
    if not path.is_file():
        return {}
    try:
        value = reader(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        value = None
    if not isinstance(value, dict):
        damaged.append(f"{path.name} unreadable")
        return {}
    return value


def _run_row(run_dir: Path) -> dict:
    from .runs import damage

    damaged: list[str] = []
    info = _read(run_dir / "run.json", json.loads, damaged)
    cfg = _read(run_dir / "config.yaml", yaml.safe_load, damaged)
    scores = _read(run_dir / "scores.json", json.loads, damaged)
    state = info.get("state")
    if state == "finished" and not scores and not damaged:
        state = "failed"
    problem = damage(run_dir, info) if not damaged else None
    if problem:
        damaged.append(problem.replace(f"{run_dir}/", ""))
    if damaged:
        state = f"damaged: {damaged[0]}"
        scores = {}
    kind = info.get("kind", "train")
    model = cfg.get("model", {}).get("name") if kind == "train" else f"stack ({scores.get('method', '?')})"
    return {"name": run_dir.name, "kind": kind, "state": state, "model": model,
            "settings": _settings(cfg) if kind == "train" else " + ".join(cfg.get("stack", {}).get("runs", [])),
            "metric": scores.get("metric") or cfg.get("metric"), "cv": scores.get("cv"),
            "cv_std": scores.get("fold_std"), "holdout": scores.get("holdout"),
            "seconds": scores.get("seconds", info.get("seconds")), "finished": info.get("finished"),
            "_direction": scores.get("direction")}


def _study_row(study_dir: Path) -> dict | None:
    path = study_dir / "summary.json"
    if not path.is_file():
        return None
    damaged: list[str] = []
    s = _read(path, json.loads, damaged)
    if damaged:
        return {"name": study_dir.name, "kind": "study", "state": f"damaged: {damaged[0]}", "model": None,
                "settings": "", "metric": None, "cv": None, "cv_std": None, "holdout": None, "seconds": None,
                "finished": None}
    return {"name": study_dir.name, "kind": "study", "state": f"{s.get('trials')} trials",
            "model": s.get("study"), "settings": json.dumps(s.get("best_params")) if s.get("best_params") else "",
            "metric": None, "cv": s.get("best_value"), "cv_std": None, "holdout": None, "seconds": None,
            "finished": None}


def leaderboard(root: Path, competition: str) -> pd.DataFrame:
    """Every run and study of ``competition`` under ``root``, best first."""
    comp_dir = Path(root) / check_name(competition, "competition name")
    rows = [_run_row(p.parent) for p in sorted(comp_dir.glob("*/run.json"))]
    directions = {r.pop("_direction") for r in rows} - {None}
    studies = [r for r in (_study_row(p) for p in sorted((comp_dir / "studies").glob("*"))) if r]
    metric = next((r["metric"] for r in rows if r["metric"]), None)
    for r in studies:
        r["metric"] = f"{metric} (best trial)" if metric else "best trial"
    frame = pd.DataFrame(rows + studies, columns=COLUMNS)
    descending = directions == {"maximize"}
    frame["_done"] = frame["cv"].notna()
    frame = frame.sort_values(["_done", "cv"], ascending=[False, not descending], na_position="last")
    return frame.drop(columns="_done").reset_index(drop=True)


def show(root: Path, competition: str) -> tuple[pd.DataFrame, Path]:
    """Print the leaderboard and write it as CSV beside the runs."""
    frame = leaderboard(root, competition)
    path = write_csv(frame, Path(root) / competition / "leaderboard.csv")
    shown = frame.drop(columns=["finished"]).assign(  # the CSV keeps the whole settings text
        settings=frame["settings"].astype(str).map(lambda t: t if len(t) <= 48 else t[:45] + "..."))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.5g}")
          if len(frame) else f"no runs of {competition} under {root}")
    print(f"leaderboard: {path}")
    return frame, path

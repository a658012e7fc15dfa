"""The data profile: what was inferred from the files and why, before any training.

Written as ``profile.json`` in the run folder and as a short block in run.log: the task (and
why: the config, the metric, or the target's values), the classes and the positive label (and
why), each column's type (and why), missing counts, category levels, levels seen once and levels
of test unseen in train, plus what reading changed (whitespace stripped, tokens read as missing).
"""
from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger("pipeline")


def _why_type(data, col: str) -> str:
    if col in data.notes.get("types", {}):
        return data.notes["types"][col]
    return "numeric values" if data.columns[col]["type"] == "numeric" else "text or boolean values"


def profile(data) -> dict:
    train, test = data.train, data.test
    columns = {}
    for col, plan in data.columns.items():
        entry = {"type": plan["type"], "why": _why_type(data, col),
                 "missing": {"train": int(train[col].isna().sum()), "test": int(test[col].isna().sum())}}
        if plan["type"] == "categorical":
            counts = train[col].astype(str).value_counts()
            entry.update(levels=int(len(counts)), seen_once=int((counts == 1).sum()),
                         unseen_in_test=int((~test[col].astype(str).isin(counts.index)).sum()))
        columns[str(col)] = entry
    out = {"task": data.notes.get("task", {"task": data.task, "why": "task is set in the config"}),
           "metric": data.cfg.metric, "rows": {"train": int(len(train)), "test": int(len(test))},
           "columns": columns}
    if data.task != "regression":
        out["classes"] = [c if isinstance(c, (int, float, str, bool)) else str(c) for c in data.classes]
        out["class_counts"] = {str(c): int(n) for c, n in zip(data.classes, pd.Series(data.y).value_counts()
                                                                   .reindex(range(len(data.classes)), fill_value=0))}
    if "positive" in data.notes:
        out["positive"] = {"label": str(data.notes["positive"]["label"]), "why": data.notes["positive"]["why"]}
    for key in ("stripped", "tokens"):
        if data.notes.get(key):
            out[key] = data.notes[key]
    return out


def log_profile(p: dict) -> None:
    """The profile as a few lines of the run's log."""
    log.info("data profile: task %s (%s); metric %s; %d train / %d test rows", p["task"]["task"], p["task"]["why"],
             p["metric"], p["rows"]["train"], p["rows"]["test"])
    if "classes" in p:
        counts = ", ".join(f"{c}: {n}" for c, n in list(p["class_counts"].items())[:10])
        log.info("  classes %s", counts)
    if "positive" in p:
        log.info("  positive class %r (%s)", p["positive"]["label"], p["positive"]["why"])
    kinds = pd.Series([c["type"] for c in p["columns"].values()]).value_counts().to_dict()
    missing = {c: e["missing"]["train"] for c, e in p["columns"].items() if e["missing"]["train"]}
    log.info("  columns %s; missing in train: %s", kinds, missing or "none")
    wide = {c: (e["levels"], e["seen_once"]) for c, e in p["columns"].items() if e.get("levels", 0) > 50}
    if wide:
        log.info("  many levels (levels, seen once): %s", wide)

"""``report.html``: one self-contained page per finished run (plots embedded as PNG data, no
script, nothing fetched), and one per tuning study.

A run's page has its scores (CV, per fold, holdout), the plots of diagnostics.py, permutation
importance, adversarial validation, the data profile, export results when the run was exported,
and the resolved config. It is built from the run folder's files alone, so it can be rebuilt at
any time (export rebuilds it to add its section).
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from .outputs import atomic_path

CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1180px;
       color: #222; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
td, th { border: 1px solid #ddd; padding: 3px 9px; text-align: right; } th { background: #f3f5f8; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 6px 0; display: block; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 0.85em; }
.muted { color: #777; } .bad { color: #b03a2e; } nav a { margin-right: 12px; }
"""


def _esc(value) -> str:
    return html.escape(str(value))


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.5g}"
    return _esc(value)


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{_esc(alt)}' src='data:image/png;base64,{data}'>"


def _section(anchor: str, title: str, body: str) -> str:
    return f"<section id='{anchor}'><h2>{_esc(title)}</h2>{body}</section>"


def _page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f"<a href='#{a}'>{_esc(t)}</a>" for a, t, _ in sections)
    body = "".join(_section(*s) for s in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{_esc(title)}</h1><p class='muted'>{_esc(subtitle)}</p>"
            f"<nav>{nav}</nav>{body}</body></html>\n")


def _write(text: str, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _scores_section(scores: dict) -> str:
    rows = [{"": "OOF (cv)", scores["metric"]: scores.get("cv")},
            {"": "folds mean ± std", scores["metric"]: f"{scores['fold_mean']:.5g} ± {scores['fold_std']:.3g}"}]
    if "holdout" in scores:
        rows.append({"": "holdout", scores["metric"]: scores.get("holdout")})
    for key, label in (("cv_no_tta", "OOF without TTA"), ("holdout_no_tta", "holdout without TTA")):
        if key in scores:
            rows.append({"": label, scores["metric"]: scores[key]})
    folds = [{"fold": n, scores["metric"]: v, "best epoch": e}
             for n, v, e in zip(scores["fold_names"], scores["folds"], scores.get("best_epochs", []))]
    weights = scores.get("ensemble", {}).get("weights", {})
    info = scores.get("member_info", {})
    members = [{"member": m, "what": ", ".join(f"{k} {v}" for k, v in info.get(m, {}).items() if k != "name"),
                f"OOF {scores['metric']}": v,
                f"holdout {scores['metric']}": scores.get("members_holdout", {}).get(m, ""),
                "ensemble weight": weights.get(m, "")} for m, v in scores.get("members", {}).items()]
    return (_table(rows) + f"<p>{scores['n_train']} training rows, {scores['n_test']} test rows, "
            f"{scores['seconds']:.0f} s of training.</p>" + _table(folds) + (_table(members) if members else ""))


def _profile_section(profile: dict) -> str:
    parts = [f"<p>Task <b>{_esc(profile['task']['task'])}</b> ({_esc(profile['task']['why'])}); metric "
             f"<b>{_esc(profile['metric'])}</b>.</p>"]
    if "positive" in profile:
        parts.append(f"<p>Positive class <b>{_esc(profile['positive']['label'])}</b> "
                     f"({_esc(profile['positive']['why'])}).</p>")
    if "class_counts" in profile:
        parts.append(_table([{"class": c, "rows": n} for c, n in profile["class_counts"].items()]))
    rows = [{"column": c, "type": e["type"], "why": e["why"], "missing (train)": e["missing"]["train"],
             "missing (test)": e["missing"]["test"], "levels": e.get("levels"), "seen once": e.get("seen_once"),
             "test values unseen in train": e.get("unseen_in_test")} for c, e in profile["columns"].items()]
    parts.append(_table(rows))
    for key, label in (("stripped", "whitespace stripped"), ("tokens", "non-numeric tokens read as missing")):
        if profile.get(key):
            parts.append(f"<p>{label}: {_esc(json.dumps(profile[key]))}</p>")
    return "".join(parts)


def _export_section(report: dict) -> str:
    keys = [k for k in ("valid", "holdout") if k in report["float_keras"]]
    rows = [{"artifact": "float Keras", **{f"{k} {report['metric']}": report["float_keras"][k] for k in keys}}]
    for a in report["artifacts"]:
        rows.append({"artifact": a["artifact"], "bytes": a["bytes"], "ms/1 (xnnpack)": a.get("latency_ms_1_xnnpack"),
                     **{f"{k} {report['metric']}": a.get(k) for k in keys},
                     **{f"{k} agreement": a.get(f"{k}_agreement") for k in keys}})
    columns = list(dict.fromkeys(c for r in rows for c in r))
    return f"<p>Fold {_esc(report.get('fold_unit', report['fold']))}, model {_esc(report['model'])}.</p>" + _table(
        rows, columns)


PLOTS = (("learning_curves", "Learning curves"), ("fold_scores", "Per-fold scores"), ("residuals", "Residuals"),
         ("confusion", "Confusion matrix"), ("roc_pr_calibration", "ROC, precision-recall, calibration"))


def write_report(run, scores: dict | None = None) -> Path:
    """Build ``report.html`` from the run folder (``scores`` before scores.json is written)."""
    scores = scores if scores is not None else run.scores
    sections = [("scores", "Scores", _scores_section(scores))]
    plots = "".join(_image(run.plots_dir / f"{name}.png", label) for name, label in PLOTS
                    if (run.plots_dir / f"{name}.png").is_file())
    sections.append(("plots", "Diagnostics", plots or "<p class='muted'>no plots</p>"))
    if run.importance_path.is_file():
        table = pd.read_csv(run.importance_path)
        body = _image(run.plots_dir / "importance.png", "permutation importance") if (
            run.plots_dir / "importance.png").is_file() else ""
        sections.append(("importance", "Permutation importance", body + _table(table.head(30).to_dict("records"))))
    if run.adversarial_path.is_file():
        adv = json.loads(run.adversarial_path.read_text())
        cls = " class='bad'" if adv["auc"] >= 0.75 else ""
        body = (f"<p{cls}>Train vs test AUC <b>{adv['auc']:.3f}</b>: {_esc(adv['verdict'])} "
                f"({adv['rows']['train']} train and {adv['rows']['test']} test rows).</p>"
                + _table(adv["drifting_features"]))
        sections.append(("adversarial", "Adversarial validation", body))
    if run.profile_path.is_file():
        sections.append(("profile", "Data profile", _profile_section(json.loads(run.profile_path.read_text()))))
    export_report = run.export_dir / "export_report.json"
    if export_report.is_file():
        sections.append(("export", "Export (TFLite)", _export_section(json.loads(export_report.read_text()))))
    sections.append(("config", "Resolved config", f"<pre>{_esc(run.config_path.read_text())}</pre>"))
    cfg = run.cfg
    subtitle = (f"{cfg.name}: {cfg.task}, {scores['metric']}; model {cfg.model.name}; {cfg.cv.scheme} CV, "
                f"{cfg.cv.folds} folds x {cfg.cv.repeats}; run folder {run.dir}")
    return _write(_page(f"Run {run.name}", subtitle, sections), run.report_path)


def write_study_report(summary: dict, study_dir: Path, trials: list) -> Path:
    """A tuning study's page: its counts, the best trial, Optuna's plots and every trial."""
    head = [{"": k, "value": summary.get(k)} for k in ("study", "direction", "trials", "complete", "pruned", "fail",
                                                     "uncounted", "best_value", "best_trial")]
    sections = [("summary", "Study", _table(head) + (f"<pre>{_esc(json.dumps(summary.get('best_params'), indent=1))}"
                                                     f"</pre>" if summary.get("best_params") else ""))]
    plots = "".join(_image(study_dir / f"{n}.png", n) for n in ("history", "importances")
                    if (study_dir / f"{n}.png").is_file())
    sections.append(("plots", "Optimization history and parameter importances", plots or "<p class='muted'>none</p>"))
    rows = [{"trial": t.number, "state": t.state.name, "value": t.value, **{k: v for k, v in t.params.items()},
             "note": t.user_attrs.get("uncounted") or t.user_attrs.get("fail_reason")} for t in trials]
    columns = list(dict.fromkeys(c for r in rows for c in r))
    sections.append(("trials", "Trials", _table(rows, columns)))
    return _write(_page(f"Study {summary['study']}", f"storage {summary['storage']}", sections),
                  study_dir / "report.html")

"""What a finished run records of its files, and the check of them when it is opened.

``run.json``'s ``files``: the size and sha256 of every file that later commands read (fold models,
fitted preprocessing, OOF and test predictions, scores, the resolved config). A deleted fold model
would otherwise change every prediction without a word; a changed config.yaml would be trusted.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

# Not recorded: what later commands rewrite (state, log, lock, the report and the export they add)
# and the atomic writes' temporary files.
UNVERIFIED = ("run.json", "run.lock", "run.log", "report.html", "export", "export.partial", "plots")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(run_dir: Path) -> dict[str, dict]:
    """Relative path → size and sha256 of every file of ``run_dir`` that later commands read."""
    run_dir = Path(run_dir)
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if not path.is_file() or rel.parts[0] in UNVERIFIED or path.name.endswith(".tmp"):
            continue
        out[rel.as_posix()] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    return out


def damage(run_dir: Path, info: dict) -> str | None:
    """The first file that a finished run recorded (run.json's ``files``) and that is now missing
    or changed, said as "<path> is missing"; None when all are as recorded."""
    if info.get("state") != "finished":
        return None
    for rel, rec in (info.get("files") or {}).items():
        path = Path(run_dir) / rel
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != rec["size"] or file_sha256(path) != rec["sha256"]:
            return f"{path} has changed since the run finished (its sha256 differs from run.json's)"
    return None

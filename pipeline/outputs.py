"""Where a run writes, and how: every file goes to a temporary name in the same folder and is moved
into place with ``os.replace``, so a failed or killed run never leaves a half-written file.

Layout: ``<output root>/<competition>/<run>/`` holds config.yaml, folds.csv, oof.csv, test_pred.csv,
submission.csv, scores.json, run.log and folds/fold_K/ (model + fitted preprocessing);
``<output root>/<competition>/folds/`` holds the fold assignments shared by all runs.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml

from .errors import PipelineError

# A checkout writes to its own outputs/; an installed package (site-packages is no place for runs)
# to outputs/ in the working folder.
_CHECKOUT = Path(__file__).resolve().parents[1]
OUTPUT_ROOT = (_CHECKOUT if (_CHECKOUT / "run.py").is_file() and (_CHECKOUT / "pipeline").is_dir()
               and _CHECKOUT.name not in ("site-packages", "dist-packages") else Path.cwd()) / "outputs"


def file_mode() -> int:
    """0666 less the process's umask (0644 usually): what open() would give a new file. mkstemp
    makes 0600 files, unreadable to a teammate or a Kaggle dataset upload."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def json_text(obj, indent: int = 2) -> str:
    """Strict JSON: a NaN or infinite score is written as null (JSON has no NaN)."""
    return json.dumps(_finite(obj), indent=indent, default=_plain, allow_nan=False) + "\n"


def write_json(obj, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj))
    return path


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_yaml(obj, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def _plain(obj):
    # numpy scalars and paths in JSON.
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def default_run_name(smoke: bool = False) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"smoke-{stamp}" if smoke else stamp


def output_root(output_dir: str | Path | None = None, *, writable: bool = True) -> Path:
    """The output root: ``output_dir`` (``--output-dir``) or ``outputs/``, proven writable unless
    the caller only reads it."""
    root = Path(output_dir) if output_dir is not None else OUTPUT_ROOT
    return ensure_writable(root) if writable else root


def ensure_writable(directory: Path) -> Path:
    """Create ``directory`` and prove a file can be written there, before any work starts."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise PipelineError(f"{directory}: output directory is not writable ({exc.strerror}). "
                            f"Pass --output-dir to a writable folder (on Kaggle: /kaggle/working).") from None
    return directory

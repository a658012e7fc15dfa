"""The supported versions of what the pipeline runs on, checked once when it is imported.

The ranges are the ones tested at both ends: the oldest set is the Kaggle image's
(tools/oldest-versions.txt, run by tools/oldest_versions.sh), the newest is what CI installs.
requirements.txt and pyproject.toml carry the same ranges (tests/test_versions.py keeps them in
step). A version outside its range fails here with one line naming the package, the version found
and the range, instead of a TypeError deep inside GroupKFold an hour into a run.

Only installed metadata is read (importlib.metadata): nothing heavy is imported to check it.
"""
from __future__ import annotations

import os
import sys
from importlib import metadata

from .errors import PipelineError

# distribution name → (range, what needs it). "run": every command; others only that command.
SUPPORTED: dict[str, tuple[str, str]] = {
    "tensorflow": (">=2.20,<2.22", "run"),
    "tf-keras": (">=2.20,<2.22", "run"),  # must share TensorFlow's minor version (checked below)
    "scikit-learn": (">=1.6.1,<1.10", "run"),
    "pandas": (">=2.2.2,<3.2", "run"),
    "numpy": (">=2.0.2,<3", "run"),
    "scipy": (">=1.13", "run"),
    "pydantic": (">=2.7,<3", "run"),
    "PyYAML": (">=6.0", "run"),
    "skops": (">=0.10,<1", "run"),
    "lightgbm": (">=4.5,<5", "run"),
    "optuna": (">=5.0,<6", "--tune"),
    "ai-edge-litert": (">=2.3,<2.4", "--export"),
    "tensorflow-model-optimization": (">=0.8.1,<0.9", "--export (pruning, quantization-aware training)"),
    "pyarrow": (">=14", "Parquet input"),
}
PYTHON = ((3, 11), (3, 14))  # tested: 3.11 (CI), 3.12 (the Kaggle image), 3.13 (tools/py313_check.sh)
SKIP_ENV = "PIPELINE_SKIP_VERSION_CHECK"
OFFLINE_HINT = ("Offline (a Kaggle kernel without internet): attach the wheelhouse dataset made by "
                "tools/wheelhouse.py and run pip install --no-index --find-links <its folder> <package>.")


class VersionError(PipelineError, ImportError):
    """An installed package is outside the tested range (or missing)."""


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():  # 2.21.0rc1: the release part ends here
            break
    return tuple(parts)


def in_range(version: str, spec: str) -> bool:
    """``version`` within a comma-separated ``>=``/``<`` range. packaging's SpecifierSet would
    do this, but it is not guaranteed to be installed before the check it serves."""
    v = _release(version)
    for clause in spec.split(","):
        clause = clause.strip()
        op = clause[:2] if clause[:2] in (">=", "<=", "==", "!=") else clause[:1]
        bound = _release(clause[len(op):].strip())
        width = max(len(v), len(bound))
        a, b = v + (0,) * (width - len(v)), bound + (0,) * (width - len(bound))
        ok = {">=": a >= b, "<=": a <= b, "==": a == b, "!=": a != b, ">": a > b, "<": a < b}[op]
        if not ok:
            return False
    return True


def problem(name: str, version: str | None) -> str | None:
    """What is wrong with one package at ``version`` (None: not installed); None when fine."""
    spec, needed_by = SUPPORTED[name]
    install = f"pip install '{name}{spec}'"
    if version is None:
        needed = "the pipeline" if needed_by == "run" else needed_by
        return f"{name} is not installed; {needed} needs it ({spec}): {install}"
    if not in_range(version, spec):
        return f"{name} {version} is installed; this pipeline is tested with {name}{spec}: {install}"
    return None


def check(versions: dict[str, str | None] | None = None, python: tuple[int, int] | None = None) -> None:
    """Raise one VersionError naming every package out of range. Packages only some commands need
    are checked when installed (and by ``require`` when that command runs). ``versions`` and
    ``python`` replace what is installed (tests)."""
    if os.environ.get(SKIP_ENV) == "1":
        return
    found = {name: installed(name) for name in SUPPORTED} if versions is None else versions
    problems = []
    py = python or sys.version_info[:2]
    if not PYTHON[0] <= tuple(py) < PYTHON[1]:
        problems.append(f"Python {py[0]}.{py[1]} is not supported; tested with Python "
                        f"{PYTHON[0][0]}.{PYTHON[0][1]} to {PYTHON[1][0]}.{PYTHON[1][1] - 1}")
    for name, (_, needed_by) in SUPPORTED.items():
        version = found.get(name)
        if version is None and needed_by != "run":
            continue
        text = problem(name, version)
        if text:
            problems.append(text)
    tf, tk = found.get("tensorflow"), found.get("tf-keras")
    if tf and tk and _release(tf)[:2] != _release(tk)[:2]:
        problems.append(f"tf-keras {tk} does not match tensorflow {tf}: tf-keras must share TensorFlow's minor "
                        f"version. pip install 'tf-keras=={'.'.join(map(str, _release(tf)[:2]))}.*'")
    if problems:
        raise VersionError("; ".join(problems) + f". {OFFLINE_HINT} (Set {SKIP_ENV}=1 to run anyway.)")


def require(name: str) -> None:
    """Before a command that needs an optional package: one clear error instead of a bare
    ModuleNotFoundError."""
    if os.environ.get(SKIP_ENV) == "1":
        return
    text = problem(name, installed(name))
    if text:
        raise VersionError(f"{text}. {OFFLINE_HINT}")

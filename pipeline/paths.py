"""The one rule for names that become paths (run, study, competition, teacher run), and the check
that a path a user handed us lies under the output root.

A name is a single path component of ``[A-Za-z0-9._-]``, never ``.`` or ``..``: ``--run-name
../../x``, ``--run-name /abs/path`` and a config's ``name: ../x`` are refused before anything is
read or written. A run given as a path is accepted only inside the output root.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def check_name(name, what: str) -> str:
    """``name`` if it is one safe path component; one ConfigError naming ``what`` otherwise."""
    text = str(name)
    if not _NAME.fullmatch(text) or text in (".", ".."):
        raise ConfigError(f"{what} {text!r}: a name must be one folder name of letters, digits, '.', '_' and '-' "
                          f"(not '.' or '..', no '/'), at most 128 characters. Choose another.")
    return text


def inside(path: Path, root: Path, what: str) -> Path:
    """``path`` resolved, if it lies under ``root``; one ConfigError otherwise."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise ConfigError(f"{what} {path}: lies outside the output folder {base}. Give a run of that folder "
                          f"(or its name), or pass --output-dir.")
    return resolved


def is_path(text) -> bool:
    """Whether a run argument was given as a path rather than a name."""
    return isinstance(text, Path) or "/" in str(text) or "\\" in str(text)

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


def output_file(path, what: str, inputs=()) -> Path:
    """A file the user asked us to write (``--out``, ``--submission``): never a folder, never one of
    the command's own ``inputs``, never inside a run folder (a folder holding run.json), whose files
    the run's later commands read and verify. One ConfigError naming ``what`` otherwise."""
    target = Path(path)
    if target.is_dir() or str(path).endswith(("/", "\\")):
        raise ConfigError(f"{what} {path}: is a folder. Give a file name, such as {target / 'predictions.csv'}.")
    resolved = target.resolve()
    for given in inputs:
        if given is not None and Path(given).resolve() == resolved:
            raise ConfigError(f"{what} {path}: is also this command's input; writing it would destroy the input. "
                              f"Give another file name.")
    for folder in resolved.parents:
        if (folder / "run.json").is_file():
            raise ConfigError(f"{what} {path}: lies inside the run folder {folder}, whose files belong to the run "
                              f"(it would overwrite or add to them). Write it outside the run folder.")
    return target

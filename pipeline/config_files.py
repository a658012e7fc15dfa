"""Config files: locating a competition's config, reading YAML, ``--params`` overlays, ``--set``
overrides, and the checks of names against the registries that own them.

``load_config`` is the one way a command turns (competition, overlay, overrides) into a validated
Config: read → overlay → overrides → schema (config.py) → registered names.
"""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from .config import RENAMED, Config, schema_paths, validate
from .errors import ConfigError

# A checkout keeps competitions/ beside the package; an installed wheel carries it inside.
_INSTALLED = Path(__file__).resolve().parent / "competitions"
COMPETITIONS_DIR = _INSTALLED if _INSTALLED.is_dir() else Path(__file__).resolve().parents[1] / "competitions"
DEFAULT_COMPETITION = "diamonds"


def list_competitions(competitions_dir: Path = COMPETITIONS_DIR) -> list[str]:
    names = [p.parent.name for p in competitions_dir.glob("*/config.yaml")]
    names += [p.stem for p in competitions_dir.glob("*.yaml")]
    return sorted(names)


def find_config(comp: str, competitions_dir: Path = COMPETITIONS_DIR) -> Path:
    """A competition name under competitions/, or a path to a YAML file or a folder holding one."""
    given = Path(comp)
    for candidate in (given, given / "config.yaml", competitions_dir / comp / "config.yaml",
                      competitions_dir / f"{comp}.yaml"):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"--comp {comp}: no competition of that name in {competitions_dir} and no such config file. "
        f"Valid: {list_competitions(competitions_dir)}"
    )




def _match(path: str, pattern: str) -> bool:
    a, b = path.split("."), pattern.split(".")
    return len(a) == len(b) and all(q == "*" or p == q for p, q in zip(a, b, strict=True))


def check_key(path: str, where: str) -> None:
    valid = schema_paths(Config)
    if any(_match(path, p) for p in valid):
        return
    # A dict-of-sections key (features.columns.price) is valid as a prefix of its own fields.
    if any(_match(path, ".".join(p.split(".")[: len(path.split("."))])) for p in valid if "*" in p):
        return
    if path in RENAMED:
        raise ConfigError(f"{where}: {path} was replaced: {RENAMED[path]}.")
    near = difflib.get_close_matches(path, valid, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    raise ConfigError(f"{where}: unknown key {path!r}.{hint}")


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: YAML keeps
    the last one without a word, so `lr: 0.01` written twice would train with whichever came last."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice; keep one",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str):
    """YAML text → Python values; duplicate keys refused. A value nested thousands of levels deep
    exhausts the parser's recursion: it is a yaml.YAMLError here, like any other malformed text."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        raise yaml.YAMLError("values are nested too deeply (thousands of levels)") from None


def parse_override(item: str) -> tuple[str, Any]:
    """``train.epochs=2`` → ("train.epochs", 2); the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. --set train.epochs=2")
    try:
        value = load_yaml_text(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML "
                          f"({getattr(exc, 'problem', None) or exc})") from None
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 as a string; users mean the number
    return key, value


# Sections that a single value may stand for: ``image.pretrain=simclr`` sets image.pretrain.method,
# so that a later ``image.pretrain.epochs=5`` adds to it instead of replacing it.
SHORTHANDS = {"image.pretrain": "method"}


def apply_overrides(raw: dict, overrides: list[str] | dict[str, Any], where: str = "--set") -> dict:
    """Return a copy of ``raw`` with dotted-key overrides applied; unknown keys are errors."""
    out = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        check_key(key, where)
        if key in SHORTHANDS and not isinstance(value, dict):
            key = f"{key}.{SHORTHANDS[key]}"
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def merge(base: dict, overlay: dict) -> dict:
    """Deep-merge ``overlay`` into a copy of ``base`` (overlay wins)."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out




def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: is not UTF-8 text (byte {exc.start}). Save the config as UTF-8.") from None
    try:
        raw = load_yaml_text(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{at}: {problem}. Fix the syntax there.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(raw).__name__}")
    return raw



# Folders that name a place, not a competition: a Kaggle kernel keeps its config in
# /kaggle/working, next to everything else it writes.
GENERIC_FOLDERS = {"working", "input", "kaggle", "tmp", "data", "src", "content"}


def competition_name(path: Path, raw: dict) -> str:
    """A config without ``name:`` is named by its folder (competitions/<name>/config.yaml) or its
    file (<name>.yaml); a generic folder such as /kaggle/working gives way to the data folder's
    name (data.dir: /kaggle/input/<name>), else the config must say ``name:``."""
    guess = path.parent.name if path.name == "config.yaml" else path.stem
    if guess.lower() not in GENERIC_FOLDERS:
        return guess
    data_dir = Path(str((raw.get("data") or {}).get("dir", "")))
    if data_dir.name and data_dir.name.lower() not in GENERIC_FOLDERS and data_dir.name not in (".", ".."):
        return data_dir.name
    raise ConfigError(f"{path}: the competition has no name (its folder is {path.parent.name!r}, which names a place). "
                      f"Add name: <competition> to the config.")


def check_names(cfg: Config, source: str) -> Config:
    """Names that refer to registries exist there (an unknown one lists the valid names)."""
    from .metrics import METRICS
    from .models import MODELS
    from .preprocessing.categorical import ENCODERS
    from .preprocessing.numeric import SCALERS

    try:
        MODELS.get(cfg.model.name, "model.name")
        if cfg.metric is not None:
            METRICS.get(cfg.metric, "metric")
        SCALERS.get(cfg.preprocessing.numeric, "preprocessing.numeric")
        ENCODERS.get(cfg.preprocessing.categorical, "preprocessing.categorical")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def resolve(raw: dict, source: str, path: Path | None = None) -> Config:
    """Schema validation, then registered names; ``path`` anchors the config's relative paths."""
    cfg = check_names(validate(raw, source), source)
    if path is not None:
        cfg._path = Path(path)
    return cfg


def load_config(comp: str | Path | Config = DEFAULT_COMPETITION,
                overrides: list[str] | dict[str, Any] | None = None,
                params: str | Path | None = None,
                competitions_dir: Path = COMPETITIONS_DIR) -> Config:
    """Read a competition's config (or take a Config built in code), apply a params overlay file
    and ``--set`` overrides, validate."""
    if isinstance(comp, Config):
        path, raw = comp.path, comp.to_dict()
        source = str(path) if path is not None else "config"
    else:
        path = find_config(str(comp), competitions_dir)
        raw = read_yaml(path)
        if "name" not in raw:
            raw["name"] = competition_name(path, raw)
        source = str(path)
    if params is not None:
        overlay_path = Path(params)
        overlay = read_yaml(overlay_path)
        for key in _flatten(overlay):
            check_key(key, str(overlay_path))
        raw = merge(raw, overlay)
        source = f"{path} + {overlay_path}"
    if overrides:
        raw = apply_overrides(raw, overrides)
        source += " with --set"
    return resolve(raw, source, path)


def _flatten(d: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        keys += _flatten(v, path + ".") if isinstance(v, dict) and v else [path]
    return keys


def config_from_dict(raw: dict, root: Path | None = None) -> Config:
    """Build a validated config in code (notebooks, tests); ``root`` anchors relative paths."""
    return resolve(raw, "config", Path(root) / "config.yaml" if root is not None else None)

"""The README's config reference is checked against the schema and the registries, so its defaults
and its lists of choices cannot drift from the code."""
import re
import typing

import pytest
import yaml

from conftest import ROOT
from pipeline.config import Config, schema_paths

README = (ROOT / "README.md").read_text()
# Registry-backed fields: the README's "a | b | c" list must name exactly what is registered.
REGISTRY_FIELDS = {"preprocessing.numeric": ("pipeline.preprocessing.numeric", "SCALERS"),
                   "preprocessing.categorical": ("pipeline.preprocessing.categorical", "ENCODERS")}
EXAMPLES = ("data.target", "data.classes", "features.columns")  # illustrations, not defaults


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, flags=re.S)


def reference_block(which: str = "full") -> str:
    """The full config reference, or the image section's reference ("image")."""
    if which == "image":
        return next(b for b in yaml_blocks() if "\nimage:" in b and "pretrain:" in b)
    return next(b for b in yaml_blocks() if b.lstrip().startswith("data:") and "preprocessing:" in b)


# The image reference's illustrations (its data line, the column, and the model of an image column).
IMAGE_EXAMPLES = ("data", "image.column", "model.name")


def reference_lines(which: str = "full"):
    """(dotted key, value text, comment) for every block-style key of a config reference."""
    block = reference_block(which)
    stack = []
    for line in block.splitlines():
        m = re.match(r"^(\s*)([a-z_0-9]+):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack = stack[:depth] + [m.group(2)]
        yield ".".join(stack), m.group(3), m.group(4) or ""


def field_of(path: str):
    model, info = Config, None
    for part in path.split("."):
        info = model.model_fields[part]
        ann = info.annotation
        model = ann if isinstance(ann, type) else None
    return info


def literal_choices(annotation) -> set | None:
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    for arg in typing.get_args(annotation):  # Optional[Literal[...]]
        if typing.get_origin(arg) is typing.Literal:
            return set(typing.get_args(arg))
    return None


@pytest.mark.parametrize("which, least", [("full", 40), ("image", 30)])
def test_every_key_of_the_reference_exists_with_its_default(which, least):
    checked = 0
    for path, value, _ in reference_lines(which):
        if path.startswith(EXAMPLES) or (which == "image" and path in IMAGE_EXAMPLES):
            continue
        assert path in schema_paths(Config), f"README names {path}, which the schema does not have"
        if not value:  # a section header
            continue
        parsed = yaml.safe_load(value)
        info = field_of(path)
        default = info.default.model_dump(mode="json") if hasattr(info.default, "model_dump") else info.default
        if isinstance(parsed, dict):  # a flow mapping such as model: {name: mlp, ...}
            for k, v in parsed.items():
                sub = default[k] if isinstance(default, dict) else getattr(Config().model, k)
                assert v == sub, f"README: {path}.{k} is {v!r}, the default is {sub!r}"
                checked += 1
            continue
        assert parsed == default, f"README: {path} is {parsed!r}, the default is {default!r}"
        checked += 1
    assert checked > least


def test_choice_lists_name_every_choice():
    import importlib

    checked = 0
    for path, _, comment in reference_lines():
        m = re.match(r"[\w.-]+(?:\s+\|\s+[\w.-]+)+", comment)  # "a | b | c" opening the comment
        if not m or path.startswith(EXAMPLES):
            continue
        listed = {w.strip() for w in m.group(0).split("|")}
        if path in REGISTRY_FIELDS:
            module, name = REGISTRY_FIELDS[path]
            expected = set(getattr(importlib.import_module(module), name).names())
        else:
            expected = literal_choices(field_of(path).annotation)
            assert expected is not None, f"README lists choices for {path}, which is not a fixed choice"
            expected = {str(c) for c in expected}
        assert listed == expected, f"README: {path} lists {sorted(listed)}, the code has {sorted(expected)}"
        checked += 1
    assert checked >= 8


def test_metric_list_is_the_registry():
    from pipeline.metrics import METRICS

    line = next(c for p, _, c in reference_lines() if p == "metric")
    assert set(line.split(";")[0].split()) == set(METRICS.names())


FILE_SUFFIXES = {"joblib", "skops", "json", "log", "yaml", "csv", "png", "md", "py", "db", "parquet", "txt"}  # preprocessing.json is a file


@pytest.mark.parametrize("key", sorted(k for k in set(re.findall(
    r"`((?:data|cv|features|preprocessing|model|train|image|tune|export|stack)\.[a-z_0-9]+(?:\.[a-z_0-9]+)?)",
    README)) if k.rsplit(".", 1)[-1] not in FILE_SUFFIXES))
def test_every_dotted_setting_named_in_the_readme_exists(key):
    valid = schema_paths(Config)
    assert key in valid or any(re.fullmatch(p.replace(".", r"\.").replace("*", "[^.]+"), key) for p in valid), key

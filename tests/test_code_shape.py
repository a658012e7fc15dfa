"""The shape of the code a newcomer reads: no function in pipeline/ longer than 80 lines (a longer
one hides several steps that deserve names of their own)."""
import ast

from conftest import ROOT

MAX_LINES = 80


def test_no_function_in_the_package_is_longer_than_80_lines():
    long = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_every_module_has_its_tests_named_in_the_map():
    """tests/README.md maps each module of pipeline/ to the files that test it; a new module
    without a row, or a row naming a file that does not exist, fails here."""
    import re

    text = (ROOT / "tests" / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(pipeline/[\w/]+\.py)` \| ([^|]+) \|$", text, re.M))
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "pipeline").rglob("*.py")
               if p.name != "__init__.py" or p.parent.name in ("pipeline", "models")}
    assert sorted(modules - set(rows)) == []
    assert sorted(set(rows) - modules) == []
    named = {f.strip() for files in rows.values() for f in files.split(",")}
    assert sorted(f for f in named if not (ROOT / "tests" / f).is_file()) == []

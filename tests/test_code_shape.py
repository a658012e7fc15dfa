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

"""Supported versions: one table (pipeline/versions.py) that requirements.txt and pyproject.toml
repeat, checked at import with a clear error, and a wheel that holds every package."""
import re
import tomllib
from pathlib import Path

import pytest

from pipeline import versions
from pipeline.versions import SUPPORTED, VersionError, check, in_range, installed

ROOT = Path(__file__).resolve().parents[1]


def _installed_set(**changes):
    found = {name: installed(name) for name in SUPPORTED}
    found.update(changes)
    return found


def _ranges(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*([<>=!~][^;]*)?", line)
        if m:
            out[m.group(1).lower()] = (m.group(3) or "").replace(" ", "")
    return out


def test_requirements_and_pyproject_carry_the_tested_ranges():
    reqs = _ranges((ROOT / "requirements.txt").read_text().splitlines())
    project = _ranges(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    for name, (spec, _) in SUPPORTED.items():
        assert reqs[name.lower()] == spec, f"requirements.txt: {name}"
        assert project[name.lower()] == spec, f"pyproject.toml: {name}"
    # Never an exact TensorFlow: pip would replace the one a Kaggle image has.
    assert "==" not in reqs["tensorflow"] and "==" not in project["tensorflow"]
    (lo_major, lo_minor), (hi_major, hi_minor) = versions.PYTHON
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == f">={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"


def test_the_oldest_set_lies_inside_the_ranges():
    for line in (ROOT / "tools" / "oldest-versions.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, version = line.split("==")
        if name in SUPPORTED:
            assert in_range(version.replace("*", "0"), SUPPORTED[name][0]), line


def test_pyproject_lists_every_package_of_the_pipeline():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pipeline").rglob("__init__.py")}
    assert found <= listed and listed - found == {"pipeline.competitions"}


def test_what_is_installed_here_passes():
    check()


@pytest.mark.parametrize("changes, message", [
    ({"scikit-learn": "1.5.2"}, r"scikit-learn 1\.5\.2 is installed; this pipeline is tested with "
                                r"scikit-learn>=1\.6\.1,<1\.10: pip install 'scikit-learn>=1\.6\.1,<1\.10'"),
    ({"tensorflow": "2.21.0", "tf-keras": "2.20.0"}, r"tf-keras 2\.20\.0 does not match tensorflow 2\.21\.0"),
    ({"tensorflow": None}, r"tensorflow is not installed; the pipeline needs it \(>=2\.20,<2\.22\)"),
    ({"pandas": "3.2.0"}, r"pandas 3\.2\.0 is installed"),
    ({"optuna": "4.5.0"}, r"optuna 4\.5\.0 is installed"),
])
def test_a_version_out_of_range_is_one_clear_error(changes, message):
    with pytest.raises(VersionError, match=message) as info:
        check(_installed_set(**changes))
    assert "--no-index --find-links" in str(info.value)  # how to install offline
    assert "\n" not in str(info.value)


def test_optional_packages_are_checked_when_a_command_needs_them(monkeypatch):
    check(_installed_set(optuna=None, **{"ai-edge-litert": None}))  # importing without them is fine
    monkeypatch.setattr(versions, "installed", lambda name: None if name == "optuna" else "9")
    with pytest.raises(VersionError, match=r"optuna is not installed; --tune needs it"):
        versions.require("optuna")


def test_python_outside_the_tested_versions():
    with pytest.raises(VersionError, match=r"Python 3\.10 is not supported"):
        check(_installed_set(), python=(3, 10))


def test_the_check_can_be_skipped(monkeypatch):
    monkeypatch.setenv(versions.SKIP_ENV, "1")
    check(_installed_set(**{"scikit-learn": "1.0"}))


def test_in_range_reads_release_numbers():
    assert in_range("2.21.0", ">=2.20,<2.22") and not in_range("2.22.0", ">=2.20,<2.22")
    assert in_range("2.21.0rc1", ">=2.20,<2.22") and in_range("1.6.1", ">=1.6.1")
    assert not in_range("1.6.0", ">=1.6.1") and in_range("2.0.2", ">=2.0.2,<3")


def test_the_command_line_says_it_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    # A sitecustomize that makes scikit-learn look too old, in a child process only.
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.metadata as m\n_v = m.version\n"
        "m.version = lambda n: '1.5.2' if n == 'scikit-learn' else _v(n)\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "run.py", "--help"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: scikit-learn 1.5.2 is installed") and out.stderr.count("\n") == 1


def test_the_readme_table_shows_the_ranges():
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| ([A-Za-z0-9_.\-]+) \| ([^|]+?) \|", readme, flags=re.M))
    for name, (spec, _) in SUPPORTED.items():
        assert rows.get(name) == spec, f"README's Supported versions: {name}"

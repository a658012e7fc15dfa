# Sourced by tools/oldest_versions.sh and tools/py313_check.sh: make (or reuse) a virtual
# environment of one Python version and activate it, with a current pip.
#   make_venv VERSION VENV     (VERSION such as 3.12; $PYTHON overrides the interpreter)
make_venv() {
    local version="$1" venv="$2" python="${PYTHON:-python$1}"
    command -v "$python" >/dev/null && "$python" -V >/dev/null 2>&1 ||
        python="$(ls /root/.pyenv/versions/"$version"*/bin/python"$version" 2>/dev/null | head -n1)"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    . "$venv/bin/activate"
    python -m pip install --quiet --upgrade pip
}

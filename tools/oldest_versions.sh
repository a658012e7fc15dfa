#!/usr/bin/env bash
# Build a virtual environment with the oldest supported versions (tools/oldest-versions.txt, the
# Kaggle image's set, on its Python 3.12) and run the fast tests in it. The README's "Supported
# versions" table is the result of this script and of CI (the newest set).
#   bash tools/oldest_versions.sh [VENV]        (default .venv-oldest; PYTHON=python3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/venv.sh
make_venv 3.12 "${1:-.venv-oldest}"
python -m pip install --quiet -c tools/oldest-versions.txt -r requirements.txt pytest hypothesis
python - <<'PY'
import importlib.metadata as md, sys
print("python", sys.version.split()[0])
for name in ["tensorflow", "tf-keras", "scikit-learn", "pandas", "numpy", "scipy", "optuna", "skops",
             "tensorflow-model-optimization", "ai-edge-litert", "pydantic", "SQLAlchemy", "lightgbm"]:
    print(name, md.version(name))
PY
python -m pytest -q -m "not slow and not postgres" "${@:2}"

#!/usr/bin/env bash
# The newest Python (3.13, Colab's and so Kaggle's next image) with the newest versions and Keras 3
# installed beside tf_keras, as Kaggle's image has them: build a venv, then run the fast tests, a
# smoke run with an INT8 export, and the Keras 3 coexistence tests (tests/test_keras3.py, slow
# ones included). The README's "Supported versions" table quotes its result.
#   bash tools/py313_check.sh [VENV]        (default .venv-py313; PYTHON=python3.13)
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/venv.sh
make_venv 3.13 "${1:-.venv-py313}"
python -m pip install --quiet -r requirements.txt "keras>=3,<4"
python - <<'PY'
import importlib.metadata as md, sys
print("python", sys.version.split()[0])
for name in ["tensorflow", "tf-keras", "keras", "scikit-learn", "pandas", "numpy", "optuna", "skops",
             "tensorflow-model-optimization", "ai-edge-litert"]:
    print(name, md.version(name))
PY
python -m pytest -q -m "not slow and not postgres" "${@:2}"
python -m pytest -q tests/test_keras3.py
out="$(mktemp -d)"
python run.py --smoke --set model.name=mlp --output-dir "$out" --run-name py313 --export int8
ls "$out"/diamonds/py313/export/
rm -rf "$out"

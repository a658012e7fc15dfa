#!/usr/bin/env bash
# The offline install, end to end, as a Kaggle kernel without internet does it:
#   1. an "image" venv: Python 3.12 with the Kaggle image's versions (tools/oldest-versions.txt)
#      and without what the image lacks (optuna, skops, tensorflow-model-optimization, ai-edge-litert);
#   2. tools/wheelhouse.py from that venv's pip freeze;
#   3. pip install --no-index --find-links <wheelhouse> kaggle-keras-pipeline, with pip's own
#      configuration off (no index, no other wheel folder);
#   4. kaggle-keras-pipeline's command on the embedded default, --smoke, in an empty folder.
# Too slow for CI (it downloads TensorFlow once); the issue note reports its output.
#   bash tools/offline_install_check.sh [WORKDIR]       (default /tmp/offline-check)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/tmp/offline-check}"
python="${PYTHON:-python3.12}"
command -v "$python" >/dev/null && "$python" -V >/dev/null 2>&1 || python="$(ls /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | head -n1)"
mkdir -p "$work"
grep -v -E '^(optuna|skops|tensorflow-model-optimization|ai-edge-litert|optuna-dashboard|psycopg|pytest|hypothesis)' \
  requirements.txt | sed 's/  *#.*//' | grep -v '^#' | grep . > "$work/image-requirements.txt"
rm -rf "$work/image" && "$python" -m venv "$work/image"  # a fresh image every time
# The image has SQLAlchemy 2.0 and psycopg2 too (optuna's and PostgreSQL's drivers).
"$work/image/bin/python" -m pip install --quiet -c tools/oldest-versions.txt -r "$work/image-requirements.txt" \
  SQLAlchemy psycopg2-binary
"$work/image/bin/python" -m pip freeze > "$work/image-packages.txt"
rm -rf "$work/wheelhouse"
"$work/image/bin/python" tools/wheelhouse.py --image-packages "$work/image-packages.txt" --out "$work/wheelhouse"
du -sh "$work/wheelhouse"
# pip's own configuration off (files and PIP_* variables): the wheelhouse is the only source.
env $(env | grep -o '^PIP_[A-Z_]*' | sed 's/^/-u /') PIP_CONFIG_FILE=/dev/null \
  "$work/image/bin/python" -m pip install --no-index --find-links "$work/wheelhouse" kaggle-keras-pipeline
rm -rf "$work/kernel" && mkdir -p "$work/kernel" && cd "$work/kernel"
"$work/image/bin/kaggle-pipeline" --smoke

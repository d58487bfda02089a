#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv with the pinned versions.
# Idempotent and quick when everything is already installed. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# constraints.txt pins every version (torch==2.13.0: the CPU wheel; an unpinned torch is a multi-GB CUDA build).
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,onnx]' \
    >.venv/setup.log 2>&1; then
  cat .venv/setup.log >&2
  echo "setup failed: see the pip output above (also in .venv/setup.log)" >&2
  exit 1
fi
.venv/bin/python -c "import classicnets, torch; print(f'classicnets {classicnets.__version__} ready (torch {torch.__version__})')"

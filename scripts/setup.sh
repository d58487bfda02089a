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
# The browser tests of `classicnets explore` drive Debian's Chromium through Playwright (no browser
# download). Install it where this user may (root with apt-get); elsewhere those tests skip, saying why.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends chromium >.venv/apt.log 2>&1; then
    apt-get update >>.venv/apt.log 2>&1 && apt-get install -y --no-install-recommends chromium >>.venv/apt.log 2>&1 \
      || echo "note: could not install chromium (see .venv/apt.log); the browser tests will be skipped" >&2
  fi
fi
.venv/bin/python -c "import classicnets, torch; print(f'classicnets {classicnets.__version__} ready (torch {torch.__version__})')"

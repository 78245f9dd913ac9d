#!/usr/bin/env bash
# Create (or update) .venv with the pinned environment: Python 3.11 and pip are all it needs.
# Sourced by scripts/test and scripts/main-job; safe to run again (a no-op when up to date).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# uv resolves and installs the ~680 pinned packages in seconds where pip takes minutes.
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
fi
# Compiled bytecode makes `import prefect` about 3 s faster in every process that imports it.
UV_COMPILE_BYTECODE=1 .venv/bin/uv pip install --quiet --python .venv/bin/python \
  -r requirements/ci.txt -e .

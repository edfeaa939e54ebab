#!/usr/bin/env bash
# Fresh-machine install: a virtualenv in .venv with patou, its test and conversion tools, and Ray
# (the `ray` extra, so the --engine ray tests run in CI).
# torch==2.13.0 is the CPU wheel (pip finds it on this machine's disk); zamba is installed
# without its dependencies because patou only reads its detector weights file.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,ray]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps zamba==2.7.2
.venv/bin/patou --help >/dev/null
echo "patou installed in $(pwd)/.venv (activate with: . .venv/bin/activate)"

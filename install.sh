#!/usr/bin/env bash
# Fresh-machine install: a virtualenv in .venv with patou, its test and conversion tools, and Ray
# (the `ray` extra, so the --engine ray tests run in CI): about 2.5 GB, about 2.5 minutes.
# torch==2.13.0 is the CPU wheel (pip finds it on this machine's disk); zamba is installed
# without its dependencies because patou only reads its detector weights file.
#   bash install.sh        install only
#   bash install.sh demo   install, then run patou on the 6 bundled sample photos -> demo-out/
#   bash install.sh test   install, then run the tests (what .ci/run does after a clean start)
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
    ""|demo|test) ;;
    *) echo "usage: bash install.sh [demo|test]  (unknown: $1)" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,ray]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps zamba==2.7.2
.venv/bin/patou --help >/dev/null
echo "patou installed in $(pwd)/.venv (activate with: . .venv/bin/activate)"
case "${1:-}" in
    demo) exec .venv/bin/patou run --demo --out demo-out ;;
    test) exec .venv/bin/python -m pytest -q -rs ;;
esac

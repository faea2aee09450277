#!/usr/bin/env bash
# Lint and type checks, configured in pyproject.toml ([tool.ruff], [tool.mypy]):
#   ruff   every Python file of the repo (pycodestyle, pyflakes, import order, bugbear, pyupgrade)
#   mypy   hpcaug/ (strict, with the few exceptions pyproject.toml explains)
# Usage: ./scripts/lint.sh [ROOT]   (ROOT: a tree with its own pyproject.toml; default: this repo)
# scripts/test.sh runs it before pytest; exits non-zero when either tool finds a problem.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
cd "${1:-$REPO}"
"$PY" -m ruff --version >/dev/null 2>&1 && "$PY" -m mypy --version >/dev/null 2>&1 ||
  { echo "lint.sh: ruff and mypy are not installed in $PY: run ./scripts/setup.sh (the dev extra)" >&2; exit 2; }
rc=0
echo "lint.sh: ruff check"
"$PY" -m ruff check . || rc=1
echo "lint.sh: mypy"
"$PY" -m mypy || rc=1
[ "$rc" = 0 ] || echo "lint.sh: FAILED (ruff or mypy above); ruff check --fix repairs import order and the like" >&2
exit "$rc"

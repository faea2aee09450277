#!/usr/bin/env bash
# The test command:  ./scripts/test.sh [pytest args...]
#   1. scripts/setup.sh (idempotent install into .venv/; seconds when nothing changed)
#   2. scripts/lint.sh: ruff and mypy (pyproject.toml); pytest still runs when they fail
#   3. starts the project's SLURM cluster on this host (slurm/local/start.sh, NODES=2 fake nodes)
#   4. runs pytest from .venv with your arguments, e.g. ./scripts/test.sh -k cluster -x
#   5. stops the cluster again (trap: also when tests fail or you press Ctrl-C)
# Exits with pytest's code, or 1 when pytest passed but lint failed; 5 ("no tests collected")
# counts as a failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
T0=$SECONDS
say() { echo "[test.sh $((SECONDS - T0))s] $*"; }

./scripts/setup.sh

say "lint: scripts/lint.sh"
lint_rc=0
./scripts/lint.sh || lint_rc=$?

export BASE=${HPCAUG_SLURM_BASE:-/tmp/hpcaug-slurm}
export HPCAUG_SLURM_BASE=$BASE NODES=${NODES:-2}
# A cluster that was already up (started by hand or by another session) is left running.
started=0
slurm/local/status.sh -q || started=1
cleanup() {
  local rc=$?
  rm -f "$BASE/clients/$$"
  if [ "$started" = 1 ]; then
    slurm/local/stop.sh --if-unused || echo "test.sh: stopping the cluster failed; run slurm/local/stop.sh" >&2
  else
    say "the SLURM cluster under $BASE was running before: left running (slurm/local/stop.sh stops it)"
  fi
  return $rc
}
trap cleanup EXIT
trap 'exit 130' INT   # make Ctrl-C and kill run the EXIT trap too
trap 'exit 143' TERM
slurm/local/start.sh
touch "$BASE/clients/$$"   # registered: another session's stop.sh --if-unused leaves it up
source "$BASE/env.sh"      # exports SLURM_CONF; the slurm_cluster fixture reuses this cluster

say "pytest $*"
set +e
.venv/bin/python -m pytest "$@" < /dev/null   # CI has no stdin
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests (exit 5): check the arguments / the tests/ directory" >&2
fi
say "pytest exit code $rc"
if [ "$lint_rc" != 0 ]; then
  echo "test.sh: lint or type checks failed (scripts/lint.sh, output at the top): the test command fails" >&2
  [ "$rc" != 0 ] || rc=1
fi
exit "$rc"

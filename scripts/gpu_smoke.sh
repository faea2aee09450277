#!/usr/bin/env bash
# The GPU smoke check (docs/performance.md): every GPU path the machine can run, with numbers.
#   scripts/gpu_smoke.sh [--device auto|cuda|cpu] [--only train,loader,...] [--photos DIR] [--json FILE]
# At most 8 minutes on one H100/H200; without CUDA a scaled-down CPU run of the same steps
# (tests/test_gpu_smoke.py). Last line: "SMOKE OK <device> ..." (exit 0) or "SMOKE FAILED ..." (exit 1).
# Python: $PYTHON, else .venv/bin/python (scripts/setup.sh), else python3 (a GPU machine's own
# torch: needs only torch, torchvision, numpy, PIL and PyYAML; hpcaug need not be installed).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu_smoke.py "$@"

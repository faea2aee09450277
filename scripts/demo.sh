#!/usr/bin/env bash
# The demo:  ./scripts/demo.sh [extra hpcaug.submit args, e.g. --set aws.rounds=2]
#   1. scripts/setup.sh (idempotent install into .venv/)
#   2. prepares real Fashion-MNIST (Debian's dataset-fashion-mnist) in the ImageNet layout
#      under data/fashion_mnist (kept when already there)
#   3. runs a small real AWS search on it, in this process (no cluster needed), in runs/demo;
#      a re-run resumes or just reports that run (start over: rm -rf runs/demo, or
#      ./scripts/demo.sh --set run_dir=runs/demo2)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=.venv/bin/python

./scripts/setup.sh

if [ ! -f data_prep/fashion_mnist.py ]; then
  echo "demo.sh: data_prep/fashion_mnist.py is missing from this checkout; cannot prepare the demo data" >&2
  exit 1
fi
"$PY" -m data_prep.fashion_mnist --out data/fashion_mnist

CMD=("$PY" -m hpcaug.submit --stage search --config configs/demo.yaml --executor inline "$@")
if [ ! -f hpcaug/submit.py ]; then
  echo "demo.sh: hpcaug/submit.py is not written yet. The data is ready; the demo would run:"
  echo "  ${CMD[*]}"
  exit 0
fi
echo "demo.sh: ${CMD[*]}"
exec "${CMD[@]}"

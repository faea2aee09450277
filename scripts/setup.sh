#!/usr/bin/env bash
# Install everything hpcaug needs into .venv/ at the repo root, idempotently.
#   - Debian packages: SLURM (slurmctld, slurmd, client, slurmdbd), munge, MariaDB, dataset-fashion-mnist
#   - .venv with torch 2.14.1 + torchvision 0.29.1, hpcaug[dali,dev] (editable), foolbox's sample images
#   - Horovod 0.28.1 built from the sdist with the patches in docs (cached wheel under $HPCAUG_CACHE)
# A re-run with nothing changed takes a few seconds (stamp file keyed on the inputs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CACHE=${HPCAUG_CACHE:-$HOME/.cache/hpcaug}
VENV=$ROOT/.venv
PY=${PYTHON:-python3}
source "$ROOT/scripts/_horovod_sdist.sh"   # HOROVOD_VERSION, the sdist and its patches (shared with build_horovod_gpu.sh)
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
log() { echo "[setup $(date +%H:%M:%S)] $*"; }

# One setup at a time per checkout (test.sh and demo.sh may be started together).
exec 8>"$ROOT/.setup.lock"
flock -w 1800 8 || { echo "setup: another scripts/setup.sh holds $ROOT/.setup.lock" >&2; exit 1; }

# ---------- 1. Debian packages (root, apt) ----------
# Checked with dpkg/command -v (milliseconds); apt-get update runs only when something is missing.
APT_PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server dataset-fashion-mnist)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# A bare Debian 12 image has no Python and no compilers: Horovod is built from source.
if ! command -v "$PY" >/dev/null; then
  [ "$PY" = python3 ] || { echo "setup: PYTHON=$PY not found" >&2; exit 1; }
  missing+=(python3 python3-venv python3-dev)
elif [ "$(command -v "$PY")" = /usr/bin/python3 ]; then   # Debian's Python: venv and headers are extra packages
  "$PY" -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
  "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' ||
    missing+=(python3-dev)
fi
for pair in cmake:cmake g++:g++ make:make; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: need root to apt-get install ${missing[*]} (or install them first)" >&2; exit 1; }
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null ||
  { echo "setup: hpcaug needs Python >= 3.10; $PY is $("$PY" -V 2>&1). Set PYTHON=python3.11 (or newer)." >&2; exit 1; }

# ---------- 2. the virtualenv ----------
STAMP_KEY=$(cat setup.cfg pyproject.toml scripts/setup.sh scripts/_horovod_sdist.sh | sha256sum | cut -c1-16)
if [ -f "$VENV/.hpcaug-stamp" ] && [ "$(cat "$VENV/.hpcaug-stamp")" = "$STAMP_KEY" ]; then
  log "environment up to date ($VENV)"
  exit 0
fi
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
VPY=$VENV/bin/python
"$VPY" -m pip install -q --upgrade pip wheel setuptools
log "installing ${TORCH_PINS[*]}"
"$VPY" -m pip install -q "${TORCH_PINS[@]}"
log "installing hpcaug[dali,dev] (editable)"
"$VPY" -m pip install -q -e ".[dali,dev]"
# foolbox ships 20 real ImageNet JPEGs used by tests; its own deps are not needed
"$VPY" -m pip install -q --no-deps foolbox==3.3.4

# ---------- 3. Horovod (built once, wheel cached outside the repo) ----------
# Horovod 0.28.1 pins C++14; torch 2.14 needs C++20 (fix merged upstream, never released).
# This machine's torch is a CUDA build beside an nvcc without CUDA libraries: force the CPU
# (gloo) build. On a GPU cluster use scripts/build_horovod_gpu.sh (NCCL; docs/cluster.md).
PATCH_ID=cxx20-cpu-gloo-v1
TORCH_V=$("$VPY" -c 'import torch; print(torch.__version__)')
PY_V=$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
WHEEL_DIR=$CACHE/wheels/horovod-$HOROVOD_VERSION-py$PY_V-torch$TORCH_V-$PATCH_ID
if ! "$VPY" -c "import horovod.torch" 2>/dev/null; then
  if ! ls "$WHEEL_DIR"/horovod-*.whl >/dev/null 2>&1; then
    log "building Horovod $HOROVOD_VERSION (once; cached in $WHEEL_DIR)"
    "$VPY" -m pip install -q "${HOROVOD_BUILD_DEPS[@]}"
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    SRC=$(horovod_sdist "$VPY" "$CACHE" "$BUILD")
    horovod_force_cpu "$SRC"
    mkdir -p "$WHEEL_DIR.tmp"
    (cd "$SRC" && env "${HOROVOD_COMMON_ENV[@]}" HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=gloo \
      MAKEFLAGS=-j"$(nproc)" LDFLAGS=-s "$VPY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEEL_DIR.tmp" .)
    rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.tmp" "$WHEEL_DIR"
  fi
  log "installing cached Horovod wheel"
  "$VPY" -m pip install -q --no-deps "$WHEEL_DIR"/horovod-*.whl
  "$VPY" -m pip install -q cloudpickle psutil pyyaml packaging cffi
fi
"$VPY" -c "import horovod.torch, nvidia.dali, torchvision, submitit, h5py" ||
  { echo "setup: import check failed" >&2; exit 1; }
echo "$STAMP_KEY" > "$VENV/.hpcaug-stamp"
log "ready: $VENV"

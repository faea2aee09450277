#!/usr/bin/env bash
# Build Horovod with NCCL for a GPU cluster, into the Python environment that runs hpcaug,
# reusing the NCCL that torch's CUDA wheel brings (nvidia-nccl-cu*). docs/cluster.md section 3.
#
#   scripts/build_horovod_gpu.sh [--dry-run | --check-nccl] [--python PY]
#
#   --dry-run     print the NCCL found, the link and the build environment; change nothing
#   --check-nccl  make the link, then run Horovod's own FindNCCL.cmake against it (seconds)
#   --python PY   the environment's interpreter (default: python; activate the venv first)
#
# Why: torch's NCCL wheel ships only lib/libnccl.so.2, while Horovod's FindNCCL looks for
# libnccl.so (HOROVOD_NCCL_LINK=SHARED) or libnccl_static.a, so a plain
# HOROVOD_GPU_OPERATIONS=NCCL build stops with "Could NOT find NCCL". This script
#   1. finds torch's NCCL (nvidia/nccl: lib/libnccl.so.2, include/nccl.h), or takes
#      HOROVOD_NCCL_HOME from the environment (a site NCCL);
#   2. adds the link lib/libnccl.so -> libnccl.so.2;
#   3. unpacks the sdist patched to C++20 (scripts/_horovod_sdist.sh, shared with setup.sh)
#      WITHOUT setup.sh's CPU-forcing FindPytorch patch;
#   4. builds with HOROVOD_NCCL_HOME, HOROVOD_NCCL_LINK=SHARED, HOROVOD_GPU_OPERATIONS=NCCL
#      (+ HOROVOD_WITH_MPI=1 when WITH_MPI=1), an rpath to that NCCL, and installs it;
#   5. checks that horovod.torch imports and reports NCCL built.
# Needs the CUDA toolkit (nvcc): `module load cuda/12.x` or HOROVOD_CUDA_HOME / CUDA_HOME.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/_horovod_sdist.sh"
MODE=build PY=python
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry-run ;;
    --check-nccl) MODE=check-nccl ;;
    --python) PY=$2; shift ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "build_horovod_gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
CACHE=${HPCAUG_CACHE:-$HOME/.cache/hpcaug}
say() { echo "[build_horovod_gpu] $*"; }

# ---- 1. NCCL
if [ -n "${HOROVOD_NCCL_HOME:-}" ]; then
  NCCL_HOME=$HOROVOD_NCCL_HOME
else
  NCCL_HOME=$("$PY" - <<'EOF'
import importlib.util, sys
import torch
if torch.version.cuda is None:
    sys.exit("this torch is a CPU build: install the CUDA build of torch first (it brings NCCL)")
spec = importlib.util.find_spec("nvidia.nccl")
if spec is None or not spec.submodule_search_locations:
    sys.exit("torch's NCCL wheel (nvidia-nccl-cu*) is not installed; set HOROVOD_NCCL_HOME to a site NCCL")
print(list(spec.submodule_search_locations)[0])
EOF
  ) || exit 1
fi
if [ ! -f "$NCCL_HOME/include/nccl.h" ] || { [ ! -e "$NCCL_HOME/lib/libnccl.so.2" ] && [ ! -e "$NCCL_HOME/lib/libnccl.so" ]; }; then
  echo "build_horovod_gpu.sh: $NCCL_HOME has no include/nccl.h and lib/libnccl.so[.2]" >&2; exit 1
fi
LINK=$NCCL_HOME/lib/libnccl.so
BUILD_ENV=("${HOROVOD_COMMON_ENV[@]}" "HOROVOD_NCCL_HOME=$NCCL_HOME" HOROVOD_NCCL_LINK=SHARED
           HOROVOD_GPU_OPERATIONS=NCCL "LDFLAGS=-Wl,-rpath,$NCCL_HOME/lib" "MAKEFLAGS=-j$(nproc)")
if [ "${WITH_MPI:-0}" = 1 ]; then BUILD_ENV+=(HOROVOD_WITH_MPI=1); else BUILD_ENV+=(HOROVOD_WITHOUT_MPI=1); fi
CUDA_DIR=${HOROVOD_CUDA_HOME:-${CUDA_HOME:-}}
[ -n "$CUDA_DIR" ] && BUILD_ENV+=("HOROVOD_CUDA_HOME=$CUDA_DIR")

say "NCCL: $NCCL_HOME"
if [ -e "$LINK" ]; then
  say "link: $LINK exists"
else
  say "link: ln -s libnccl.so.2 $LINK"
fi
say "patches: C++20 (CMakeLists.txt, horovod/torch/CMakeLists.txt); FindPytorch left as it is (GPU build)"
say "environment: ${BUILD_ENV[*]}"
say "command: $PY -m pip install --no-deps --no-cache-dir --no-build-isolation horovod-$HOROVOD_VERSION/"
[ "$MODE" = dry-run ] && exit 0

# ---- 2. the link FindNCCL needs
[ -e "$LINK" ] || ln -s libnccl.so.2 "$LINK"

BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
SRC=$(horovod_sdist "$PY" "$CACHE" "$BUILD")

if [ "$MODE" = check-nccl ]; then
  # Horovod's own FindNCCL.cmake, in a scratch project, with the build's variables
  mkdir -p "$BUILD/probe"
  cat > "$BUILD/probe/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.13)
project(nccl_probe NONE)
list(APPEND CMAKE_MODULE_PATH "$SRC/cmake/Modules")
find_package(NCCL REQUIRED)
message(STATUS "NCCL library for Horovod: \${NCCL_LIBRARIES}")
EOF
  env HOROVOD_NCCL_HOME="$NCCL_HOME" HOROVOD_NCCL_LINK=SHARED cmake -S "$BUILD/probe" -B "$BUILD/probe/out" |
    grep -E "NCCL" || { echo "build_horovod_gpu.sh: Horovod's FindNCCL does not find $NCCL_HOME" >&2; exit 1; }
  exit 0
fi

# ---- 3. build and check
command -v nvcc >/dev/null || [ -n "$CUDA_DIR" ] ||
  { echo "build_horovod_gpu.sh: no nvcc: load the CUDA toolkit (module load cuda) or set HOROVOD_CUDA_HOME" >&2; exit 1; }
"$PY" -m pip install -q "${HOROVOD_BUILD_DEPS[@]}"
(cd "$SRC" && env "${BUILD_ENV[@]}" "$PY" -m pip install --no-deps --no-cache-dir --no-build-isolation .)
"$PY" -c 'import torch, horovod.torch as hvd; assert hvd.nccl_built(), "Horovod was built without NCCL"; print("horovod", hvd.__version__, "NCCL", hvd.nccl_built())'
say "done; horovodrun --check-build lists the frameworks and operations"

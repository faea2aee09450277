# Sourced by scripts/setup.sh (the CPU/gloo build of this repository's machines) and
# scripts/build_horovod_gpu.sh (the NCCL build of a GPU cluster): the Horovod source both
# build from, and the settings they share. docs/cluster.md section 3 explains the patches.

HOROVOD_VERSION=0.28.1
# What --no-build-isolation needs in the target environment.
HOROVOD_BUILD_DEPS=(numpy cloudpickle psutil pyyaml packaging cffi wheel)
# Every build: PyTorch only, with gloo (hpcaug's srun rendezvous needs gloo).
HOROVOD_COMMON_ENV=(HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1)

# horovod_sdist PYTHON CACHE DEST: the sdist (downloaded once into CACHE/sdist) unpacked in
# DEST and patched to C++20 (0.28.1 pins C++14; torch >= 2.13 needs C++17, 2.14 C++20; the
# upstream fix was never released and CXXFLAGS cannot override the pin). Prints the source dir.
horovod_sdist() {
  local py=$1 cache=$2 dest=$3
  local tgz=$cache/sdist/horovod-$HOROVOD_VERSION.tar.gz
  mkdir -p "$cache/sdist" "$dest"
  [ -f "$tgz" ] || "$py" -m pip download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$cache/sdist" >&2
  tar xzf "$tgz" -C "$dest"
  local src=$dest/horovod-$HOROVOD_VERSION
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 20)/' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
  echo "$src"
}

# horovod_force_cpu SRC: make Horovod's CMake ignore torch's CUDA (a CUDA torch wheel beside an
# nvcc without CUDA libraries would start a GPU build that fails). CPU machines only: on a GPU
# cluster this would give a Horovod that silently reduces on the CPU.
horovod_force_cpu() {
  sed -i 's/(torch.version.cuda is not None) and (CUDA_HOME is not None)/False/' "$1/cmake/Modules/FindPytorch.cmake"
}

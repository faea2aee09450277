"""The Horovod GPU (NCCL) build, as far as it runs without a GPU (issue 18.4): the dry run
prints the NCCL of the installed torch wheel and what the build would do; Horovod's own
FindNCCL.cmake does not find that wheel's NCCL as shipped (only libnccl.so.2) and does once
scripts/build_horovod_gpu.sh has made its link; the sdist helper shared with setup.sh patches
C++20 and leaves the CPU-forcing FindPytorch patch to the CPU build."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "build_horovod_gpu.sh"


def _wheel_nccl() -> Path:
    spec = importlib.util.find_spec("nvidia.nccl")
    assert spec is not None and spec.submodule_search_locations, "torch's NCCL wheel is not installed"
    return Path(list(spec.submodule_search_locations)[0])


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_dry_run_names_torchs_nccl_and_the_build_settings() -> None:
    nccl = _wheel_nccl()
    had_link = (nccl / "lib" / "libnccl.so").exists()
    p = _run(str(SCRIPT), "--dry-run", "--python", sys.executable, env={"HOROVOD_NCCL_HOME": ""})
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert f"NCCL: {nccl}\n" in out
    link = f"link: {nccl}/lib/libnccl.so exists" if had_link else f"link: ln -s libnccl.so.2 {nccl}/lib/libnccl.so"
    assert link in out
    for setting in (f"HOROVOD_NCCL_HOME={nccl} ", "HOROVOD_NCCL_LINK=SHARED", "HOROVOD_GPU_OPERATIONS=NCCL",
                    "HOROVOD_WITH_PYTORCH=1", "HOROVOD_WITH_GLOO=1", f"LDFLAGS=-Wl,-rpath,{nccl}/lib"):
        assert setting in out, (setting, out)
    assert "HOROVOD_CPU_OPERATIONS" not in out and "FindPytorch left as it is" in out
    assert (nccl / "lib" / "libnccl.so").exists() == had_link  # a dry run changes nothing


def _find_nccl(src: Path, nccl: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """Horovod's FindNCCL.cmake in a scratch project, as the build runs it."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(p NONE)\n"
        f'list(APPEND CMAKE_MODULE_PATH "{src}/cmake/Modules")\nfind_package(NCCL REQUIRED)\n')
    env = {**os.environ, "HOROVOD_NCCL_HOME": str(nccl), "HOROVOD_NCCL_LINK": "SHARED"}
    return subprocess.run(["cmake", "-S", str(work), "-B", str(work / "out")], capture_output=True, text=True,
                          timeout=120, env=env)


def test_find_nccl_needs_the_link_the_script_makes(tmp_path: Path) -> None:
    # the wheel's NCCL as shipped, in a scratch copy (the real site-packages stay untouched)
    wheel = _wheel_nccl()
    assert not (wheel / "lib" / "libnccl_static.a").exists()
    nccl = tmp_path / "nccl"
    (nccl / "lib").mkdir(parents=True)
    (nccl / "include").mkdir()
    (nccl / "lib" / "libnccl.so.2").symlink_to(wheel / "lib" / "libnccl.so.2")
    (nccl / "include" / "nccl.h").symlink_to(wheel / "include" / "nccl.h")
    # the sdist as both builds get it (scripts/_horovod_sdist.sh)
    p = _run("-c", f'set -euo pipefail; source scripts/_horovod_sdist.sh; horovod_sdist "{sys.executable}" '
                   f'"${{HPCAUG_CACHE:-$HOME/.cache/hpcaug}}" "{tmp_path / "src"}"')
    assert p.returncode == 0, p.stderr
    src = Path(p.stdout.strip())
    assert "set(CMAKE_CXX_STANDARD 20)" in (src / "CMakeLists.txt").read_text()
    assert "set(CMAKE_CXX_STANDARD 20)" in (src / "horovod" / "torch" / "CMakeLists.txt").read_text()
    assert "(torch.version.cuda is not None) and (CUDA_HOME is not None)" in \
        (src / "cmake" / "Modules" / "FindPytorch.cmake").read_text()  # the GPU build keeps CUDA detection
    # as shipped: FindNCCL stops the build (the crash of issue 18.4)
    p = _find_nccl(src, nccl, tmp_path / "before")
    assert p.returncode != 0 and "Could NOT find NCCL" in p.stdout + p.stderr, p.stdout + p.stderr
    # the script's link, checked with the same FindNCCL
    p = _run(str(SCRIPT), "--check-nccl", "--python", sys.executable, env={"HOROVOD_NCCL_HOME": str(nccl)})
    assert p.returncode == 0, p.stdout + p.stderr
    assert os.readlink(nccl / "lib" / "libnccl.so") == "libnccl.so.2"
    assert f"NCCL library for Horovod: {nccl}/lib/libnccl.so" in p.stdout, p.stdout
    assert _find_nccl(src, nccl, tmp_path / "after").returncode == 0

"""The torch loader's worker processes die with the process that started them (issue 19.6).

A real rank process builds the torch train loader with 2 DataLoader workers (which come from
Python's forkserver) and takes one batch; then it is SIGKILLed, or it exits normally with the
epoch still running. Every process it left (the forkserver, the workers, the resource
tracker) must be gone within seconds, not live on parented to init.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]

_RANK = """
import sys, time
from hpcaug.config import Config
from hpcaug.data import build_train_loader
from hpcaug.ops.policy import NoPolicy

cfg = Config().replace(**{"data.dir": sys.argv[1], "data.backend": "torch", "data.batch_size": 2,
                          "data.image_size": 32, "data.workers": 2})
it = iter(build_train_loader(cfg, [NoPolicy()], 0, 1, "cpu"))
next(it)
print("READY", flush=True)
if sys.argv[2] == "wait":
    time.sleep(600)  # killed here, workers busy with the rest of the epoch
# "exit": the interpreter ends with the epoch's iterator still open
"""


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live process below `root`."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[0], []).append(int(entry))
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            st = _stat(child)
            if st is not None:
                out[child] = st[2]
                todo.append(child)
    return out


def _survivors(procs: dict[int, int]) -> list[str]:
    """The processes of `procs` still running (a zombie or a reused pid counts as gone)."""
    alive = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[1] != "Z":
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            alive.append(f"pid {pid} (parent {st[0]}): {cmd[:120]}")
    return alive


@pytest.mark.parametrize("end", ["sigkill", "exit"])
def test_loader_workers_die_with_their_rank(imagenet_data: Path, end: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    rank = subprocess.Popen([sys.executable, "-c", _RANK, str(imagenet_data), "wait" if end == "sigkill" else "exit"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=_REPO)
    procs: dict[int, int] = {}
    try:
        assert rank.stdout is not None
        assert rank.stdout.readline().strip() == "READY", "the rank process failed before its first batch"
        procs = _descendants(rank.pid)
        # the forkserver and 2 workers at least (plus multiprocessing's resource tracker)
        assert len(procs) >= 3, f"expected the forkserver and 2 workers below the rank, found {procs}"
        if end == "sigkill":
            rank.send_signal(signal.SIGKILL)
        assert rank.wait(timeout=120) == (-signal.SIGKILL if end == "sigkill" else 0)
        deadline = time.monotonic() + 30  # generous: the machine is shared and slow
        while _survivors(procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _survivors(procs)
        assert not left, f"processes of the {end} rank survived it:\n" + "\n".join(left)
    finally:
        if rank.poll() is None:
            rank.kill()
            rank.wait()
        for pid in _survivors(procs):  # never leave strays behind, even when the test fails
            os.kill(int(pid.split()[1]), signal.SIGKILL)

"""An error on one rank stops the whole job (issue 19.7): with data.on_corrupt=error a corrupt
JPEG in one rank's shard must end a 2-rank run (`python -m hpcaug.train` under horovodrun and
under torchrun) promptly, non-zero, naming the file, instead of leaving the other rank waiting
at its next collective."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcaug.data import _plan
from hpcaug.data.index import DatasetIndex

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
N = 16


def _with_corrupt_file(demo: Path, dest: Path, rank: int, step: int, world: int) -> str:
    """A copy of the demo dataset's index whose search_train entry read by `rank` at `step` of
    epoch 0 is a truncated JPEG; returns that file's path."""
    index = DatasetIndex.open(demo)
    split = index.split("search_train")
    (dest / "lists").mkdir(parents=True)
    meta = dict(index.meta, root=str(index.root))
    (dest / "dataset.json").write_text(json.dumps(meta))
    for name in ("classes.txt", "search_val.txt"):
        shutil.copy(demo / "lists" / name, dest / "lists" / name)
    order = _plan.epoch_order(len(split), 0, 0)
    row = int(_plan.train_step_indices(order, step, N, rank, world)[3])
    good = np.fromfile(split.abs_files()[row], dtype=np.uint8)
    bad = dest / "bad" / "truncated.JPEG"
    bad.parent.mkdir()
    good[: good.size // 2].tofile(bad)  # no end-of-image marker: the reader's check catches it
    files = list(split.files)
    files[row] = str(bad)  # an absolute path: os.path.join(root, it) is the path itself
    (dest / "lists" / "search_train.txt").write_text(
        "".join(f"{f} {int(lab)}\n" for f, lab in zip(files, split.labels, strict=True)))
    return str(bad)


@pytest.mark.parametrize("launcher,loader", [("horovodrun", "dali"), ("torchrun", "torch")])
def test_corrupt_file_on_one_rank_stops_the_job(tmp_path: Path, demo_data: Path, launcher: str, loader: str) -> None:
    """Rank 1 meets the file in step 3 of epoch 1, while rank 0 waits in the step's gradient
    allreduce: the job must end with an error that names the file (before the fix a torchrun
    job hung until killed, without printing the error: its failing rank waited in a barrier)."""
    data = tmp_path / "data"
    bad = _with_corrupt_file(demo_data, data, rank=1, step=2, world=2)
    backend = "horovod" if launcher == "horovodrun" else "torch"
    overrides = ["--set", f"data.dir={data}", f"data.backend={loader}", f"data.batch_size={N}", "data.workers=1",
                 "data.on_corrupt=error", "train.steps_per_epoch=4", "train.log_interval=1",
                 f"dist.backend={backend}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    exe = str(Path(sys.executable).with_name(launcher))
    cmd = [exe, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable] if launcher == "horovodrun" else \
        [exe, "--nproc_per_node=2"]
    # `timeout` stands in for the hang the fix removes: 124/137 = still running after 240 s
    p = subprocess.run(["timeout", "-k", "5", "240", *cmd, "-m", "hpcaug.train", "--config", str(DEMO),
                        "--out", str(tmp_path / "out"), "--policy", "uniform", "--epochs", "2", *overrides],
                       env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode not in (0, 124, 137), f"rc {p.returncode}: {out[-4000:]}"
    assert bad in out and "CorruptImageError" in out, out[-4000:]
    assert "rank 1 of 2 failed" in out, out[-4000:]  # which rank, and that the job stops because of it

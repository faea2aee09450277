"""hpcaug.report on an AdvAA run dir written by the real `run_advaa` and its hooks.

Only the network training is synthetic: a stand-in for `hpcaug.train.loop.train` drives the
real AdvAAHooks (on_epoch_start / on_step / on_epoch_end) with per-policy losses that grow
with the number of geometric ops a policy holds, and stops after `STOP_AFTER` of the
configured epochs (a run still going). advaa/epochs.jsonl and config.json are the hooks' and
run_advaa's own files.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from hpcaug.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
EPOCHS, STOP_AFTER = 12, 8
GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}


@dataclass
class _Rows:
    copy_ids: torch.Tensor  # what AdvAAHooks.on_step reads from a loader Batch


def _advaa_cfg(run_dir: Path) -> Config:
    return load_config(REPO / "configs" / "demo_advaa.yaml").replace(**{
        "run_dir": str(run_dir), "train.epochs": EPOCHS, "dist.backend": "single",
        "advaa.num_policies": 4, "augment.copies": 4, "advaa.lr": 0.05,
        "cluster.nodes": 1, "cluster.gpus_per_node": 2})


def _synthetic_train(cfg: Config, out_dir: Any, policies: Sequence[Any], *, epochs: int, hooks: Any = None,
                     **_: Any) -> Any:
    from hpcaug.train.loop import TrainResult

    m = len(policies)
    copy_ids = torch.arange(m).repeat(6)
    g = torch.Generator().manual_seed(0)
    history = []
    for e in range(min(epochs, STOP_AFTER)):
        pols = hooks.on_epoch_start(e)
        hard = torch.tensor([sum(op in GEOMETRIC for sp in p.sub_policies for op, _, _ in sp) for p in pols],
                            dtype=torch.float32)
        for _ in range(3):
            loss = 1.0 + 0.1 * hard[copy_ids] + 0.01 * torch.rand(copy_ids.numel(), generator=g)
            hooks.on_step(loss, _Rows(copy_ids))
        entry = {"epoch": e, "train_loss": 1.0, "val_top1": 0.5, "val_top5": 0.9, "lr": 0.1,
                 "images_per_s": 100.0, "epoch_time_s": 30.0}
        hooks.on_epoch_end(e, entry)
        history.append(entry)
    return TrainResult(history=history, choice_counts=torch.zeros(5, dtype=torch.int64),
                       checkpoint=Path(out_dir) / "checkpoint.pt")


@pytest.fixture(scope="module")
def advaa_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hpcaug.search import advaa
    from hpcaug.search.advaa import run_advaa

    run_dir = tmp_path_factory.mktemp("advaa") / "run"
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(advaa, "train", _synthetic_train)  # the loop run_advaa calls
        run_advaa(_advaa_cfg(run_dir), run_dir)
    finally:
        mp.undo()
    return run_dir


def test_advaa_report(advaa_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    from hpcaug.report import write_report
    from hpcaug.search.advaa import read_epoch_records

    md = write_report(advaa_run, tmp_path, top_k=4, window=2)
    for name in ("advaa_ops.png", "advaa_magnitudes.png", "advaa_losses.png"):
        with Image.open(tmp_path / name) as im:
            im.load()
            assert im.format == "PNG" and im.size[0] > 300
        assert f"]({name})" in md.read_text()
    text = md.read_text()
    assert f"epochs recorded: {STOP_AFTER} of {EPOCHS} (in progress or stopped)" in text
    records = read_epoch_records(advaa_run)
    assert len(records) == STOP_AFTER
    # op shares over the last 5 epochs, counted here independently from the records
    shares: Counter[str] = Counter()
    for rec in records[-5:]:
        c = Counter(op for pol in rec["policies"] for sub in pol for op, _ in sub)
        total = sum(c.values())
        for op, n in c.items():
            shares[op] += n / total / 5
    rows = [ln.split("|")[1:-1] for ln in text.splitlines()
            if ln.startswith("| ") and ln.split("|")[1].strip().isdigit()]
    assert len(rows) == 4
    best = shares.most_common(1)[0]
    assert float(rows[0][2].strip().rstrip("%")) == pytest.approx(100 * best[1], abs=0.051)
    assert rows[0][1].strip() in {op for op, v in shares.items() if abs(v - best[1]) < 1e-9}
    last = records[-1]
    assert ", ".join(f"{x:.4f}" for x in last["mean_loss"]) in text
    # 8 recorded epochs x 30 s at 1 node x 2 GPUs
    assert "4.0 min in all" in text and "0.13 GPU-hours at 2 GPUs" in text


def test_advaa_status(advaa_run: Path) -> None:
    from hpcaug.status import run_status

    text = run_status(advaa_run, now=0.0)
    assert f"advaa: {STOP_AFTER} of {EPOCHS} epochs recorded" in text
    assert f"ETA: {EPOCHS - STOP_AFTER} epochs x mean recorded epoch time 30.0 s" in text
    assert "none recorded" in text


def test_export_from_an_advaa_run(advaa_run: Path, tmp_path: Path) -> None:
    """The exported AdvAA policy = the union of the last epoch's M policies, each sub-policy equally likely."""
    from hpcaug.ops.policy import SubPolicyPolicy, load_policy
    from hpcaug.ops.tv_transform import export_policy
    from hpcaug.search.advaa import read_epoch_records

    out = export_policy(advaa_run, tmp_path / "advaa_policy.json")
    pol = load_policy(str(out))
    assert isinstance(pol, SubPolicyPolicy)
    last = read_epoch_records(advaa_run)[-1]["policies"]
    want = [tuple((op, 1.0, b) for op, b in sub) for p in last for sub in p]
    assert list(pol.sub_policies) == want and len(want) == 4 * 5

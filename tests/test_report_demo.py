"""The report, status and export on a real (tiny) demo search: `python -m hpcaug.submit --stage search
--config configs/demo.yaml --executor inline` on the demo_data fixture (real Fashion-MNIST images,
real loaders, real training), one round of two trajectories, then the final training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hpcaug.submit import main

    run = tmp_path_factory.mktemp("demo") / "run"
    rc = main(["--stage", "search", "--config", str(REPO / "configs" / "demo.yaml"), "--executor", "inline",
               "--set", f"data.dir={demo_data}", f"run_dir={run}", "data.backend=torch", "data.workers=1",
               "aws.rounds=1", "aws.trajectories_per_round=2", "aws.shared_epochs=1", "aws.finetune_epochs=1",
               "aws.final_epochs=1", "train.steps_per_epoch=1", "data.batch_size=16"])
    assert rc == 0
    return run


def test_report_of_a_real_demo_search(demo_run: Path) -> None:
    from PIL import Image

    from hpcaug.report import write_report
    from hpcaug.search.rundir import RunDir

    rd = RunDir(demo_run)
    md = write_report(demo_run)
    text = md.read_text()
    for name in ("heatmap.png", "marginal.png", "rewards.png", "entropy.png"):
        with Image.open(md.parent / name) as im:
            im.load()
            assert im.format == "PNG" and im.size[0] > 300
    assert "state: finished" in text and "rounds updated: 1 of 1" in text and "not yet updated" not in text
    u = json.loads(rd.update_path(0).read_text())
    row = next(ln for ln in text.splitlines() if ln.startswith("| 0 | 2 |"))
    assert float(row.split("|")[3]) == pytest.approx(sum(u["rewards"]) / 2, abs=1e-4)
    # every stage that ran shows up with its recorded wall time
    shared = json.loads(rd.shared_done.read_text())["wall_s"]
    assert any(ln.startswith("| shared | 1 |") and ln.endswith("| recorded |") for ln in text.splitlines())
    assert any(ln.startswith("| final | 1 |") for ln in text.splitlines()) and shared > 0


def test_status_and_export_of_a_real_demo_search(demo_run: Path, tmp_path: Path) -> None:
    from hpcaug.ops.policy import load_policy
    from hpcaug.ops.tv_transform import PolicyTransform, export_policy
    from hpcaug.status import run_status

    text = run_status(demo_run)
    assert "rounds: 1 of 1 updated" in text and "final: done" in text and "ETA: the search is done" in text
    out = export_policy(demo_run, tmp_path / "p.json")
    assert load_policy(str(out)) == load_policy(str(demo_run / "policy.json")) == PolicyTransform(demo_run).policy

"""hpcaug.report on an AWS run dir written by the real stage functions (hpcaug.search.aws).

`build_aws_run` runs run_shared, run_finetune and run_update for real; only the network
training inside them (`hpcaug.train.loop.train`) is replaced by a synthetic trainer that
samples the round's policy for real and scores the sampled operations (trajectories that used
more "good" first elements get higher rewards), so the PPO update has a signal to follow.
Every file in the run dir is written by the project's code, in its own format.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from hpcaug.config import Config, from_dict

GOOD = ("Rotate:9", "Equalize", "Solarize:6")  # first elements the synthetic reward favours
SAMPLES = 400  # images a synthetic fine-tune "trains" on (choices counted per trajectory)


def small_config(run_dir: Path, rounds: int = 4, per_round: int = 4, parametrisation: str = "joint") -> Config:
    return from_dict({
        "name": "report-test", "run_dir": str(run_dir), "dist": {"backend": "single"},
        "train": {"model": "tiny_resnet", "seed": 3},
        "aws": {"shared_epochs": 1, "finetune_epochs": 2, "reward_top_k": 1, "rounds": rounds,
                "trajectories_per_round": per_round, "quorum": 0.5, "policy_lr": 0.5,
                "policy_lr_warmup_rounds": 1, "parametrisation": parametrisation},
        "cluster": {"executor": "inline", "finetune_gpus": 1, "nodes": 2, "gpus_per_node": 4},
    })


def _synthetic_train(cfg: Config, out_dir: Any, policies: Sequence[Any], *, epochs: int, **_: Any) -> Any:
    """Stands in for loop.train: real sampling from the policy, a reward computed from what was sampled."""
    from hpcaug.ops.spaces import AWS_SPACE
    from hpcaug.train.loop import TrainResult

    g = torch.Generator().manual_seed(cfg.train.seed)
    s = policies[0].sample(SAMPLES, g)
    counts = torch.bincount(s.choice, minlength=policies[0].num_choices)
    good = torch.tensor([AWS_SPACE.element_index(n) for n in GOOD])
    frac = float(torch.isin(s.choice // AWS_SPACE.num_elements, good).double().mean())
    noise = float(torch.randn(epochs, generator=g).mul(0.01).abs().max())
    hist = [{"epoch": e, "train_loss": 1.0, "val_top1": 0.5 + frac + noise * (e + 1) / epochs, "val_top5": 0.9,
             "lr": 0.01, "images_per_s": 100.0, "epoch_time_s": 0.01} for e in range(epochs)]
    return TrainResult(history=hist, choice_counts=counts, checkpoint=Path(out_dir) / "checkpoint.pt")


def build_aws_run(run_dir: Path, monkeypatch: pytest.MonkeyPatch, rounds_to_run: int = 3, partial: int = 2,
                  rounds: int = 4, per_round: int = 4, lost: Sequence[int] = (),
                  parametrisation: str = "joint") -> Config:
    """Shared stage, `rounds_to_run` full rounds, then `partial` fine-tunes of the next round (no update).

    Trajectories in `lost` never run (a failed task): their round is updated without them.
    """
    import hpcaug.train.loop as loop
    from hpcaug.search import aws

    monkeypatch.setattr(loop, "train", _synthetic_train)
    cfg = small_config(run_dir, rounds, per_round, parametrisation)
    aws.run_shared(cfg, run_dir)
    for r in range(rounds_to_run):
        for t in aws.round_trajectories(cfg, r):
            if t not in lost:
                aws.run_finetune(cfg, run_dir, t)
        aws.run_update(cfg, run_dir, r)
    for t in list(aws.round_trajectories(cfg, rounds_to_run))[:partial]:
        aws.run_finetune(cfg, run_dir, t)
    return cfg


@pytest.fixture(scope="module")
def aws_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    mp = pytest.MonkeyPatch()
    try:
        run_dir = tmp_path_factory.mktemp("aws") / "run"
        cfg = build_aws_run(run_dir, mp)
    finally:
        mp.undo()
    return run_dir, cfg


def _png_ok(path: Path) -> tuple[int, int]:
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 2000, path
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        arr = torch.from_numpy(__import__("numpy").asarray(im.convert("L"), dtype="float32"))
        assert arr.std() > 5, f"{path.name} looks blank"
        return im.size


def test_report_files_and_images(aws_run: tuple[Path, Config], tmp_path: Path) -> None:
    from hpcaug.report import write_report

    run_dir, _ = aws_run
    md = write_report(run_dir, tmp_path / "rep")
    assert md == tmp_path / "rep" / "report.md"
    for name in ("heatmap.png", "marginal.png", "rewards.png", "entropy.png"):
        w, h = _png_ok(tmp_path / "rep" / name)
        assert w > 300 and h > 200
        assert f"]({name})" in md.read_text()
    assert (tmp_path / "rep" / "rounds.csv").is_file()


def test_summary_numbers_match_the_run_dir(aws_run: tuple[Path, Config], tmp_path: Path) -> None:
    from hpcaug.ops.policy import AWSPolicy
    from hpcaug.ops.spaces import AWS_SPACE
    from hpcaug.report import write_report
    from hpcaug.search.rundir import RunDir

    run_dir, cfg = aws_run
    rd = RunDir(run_dir)
    text = write_report(run_dir, tmp_path / "rep", top_k=5).read_text()
    assert rd.rounds_done() == 3
    assert "rounds updated: 3 of 4" in text
    assert "round 3: 2 of 4 fine-tune results, not yet updated" in text
    # top-5 operations: those of the theta the last update wrote, with their probabilities
    p = AWSPolicy(rd.theta(3)).probs()
    vals, idx = torch.topk(p, 5)
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and ln.split("|")[1].strip().isdigit()]
    for rank, (v, i) in enumerate(zip(vals.tolist(), idx.tolist(), strict=True), 1):
        e1, e2 = AWS_SPACE.operation(i)
        cells = [c.strip() for c in rows[rank - 1].split("|")[1:-1]]
        assert cells[:4] == [str(rank), str(i), e1.name, e2.name]
        assert float(cells[4]) == pytest.approx(v, abs=1e-5)
    # rewards, baselines and entropies per round as update.json / the results hold them
    for r in range(3):
        u = json.loads(rd.update_path(r).read_text())
        mean = sum(u["rewards"]) / len(u["rewards"])
        row = next(ln for ln in text.splitlines() if ln.startswith(f"| {r} | {len(u['rewards'])} |"))
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert float(cells[2]) == pytest.approx(mean, abs=1e-4)
        assert float(cells[6]) == pytest.approx(u["baseline_used"], abs=1e-4)
        assert float(cells[7]) == pytest.approx(u["entropy"], abs=1e-4)
    partial = [v["reward"] for v in rd.results(3).values()]
    row = next(ln for ln in text.splitlines() if ln.startswith("| 3 | 2 |"))
    assert float(row.split("|")[3]) == pytest.approx(sum(partial) / 2, abs=1e-4)
    assert "not updated yet" in row
    # the synthetic reward favours GOOD first elements: the search moved mass onto them
    from hpcaug.search.operations import aws_probabilities
    from hpcaug.search.runview import read_run

    run = read_run(run_dir)
    good = [AWS_SPACE.element_index(n) for n in ("Rotate:9", "Equalize", "Solarize:6")]
    m0 = aws_probabilities(run.thetas()[0][1]).sum(1)[good].sum()
    m3 = aws_probabilities(run.thetas()[-1][1]).sum(1)[good].sum()
    assert float(m3) > float(m0) == pytest.approx(3 / 36)


def test_stage_times_and_gpu_hours(aws_run: tuple[Path, Config]) -> None:
    from hpcaug.report import aws_stage_times
    from hpcaug.search.runview import read_run

    run_dir, _ = aws_run
    run = read_run(run_dir)
    times = {s.stage: s for s in aws_stage_times(run)}
    assert set(times) == {"shared", "finetune", "update"}
    walls = [v["wall_s"] for r in run.rounds for v in r.results.values()]
    assert times["finetune"].jobs == 14 and times["finetune"].wall_s == pytest.approx(sum(walls))
    assert times["finetune"].gpus_per_job == 1 and times["shared"].gpus_per_job == 8
    assert times["shared"].gpu_hours == pytest.approx(run.shared["wall_s"] * 8 / 3600)
    assert times["update"].source == "file timestamps" and times["update"].jobs == 3


def test_report_on_a_run_with_only_round_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search that just started (shared done, no result yet) still renders."""
    from hpcaug.report import write_report

    build_aws_run(tmp_path / "run", monkeypatch, rounds_to_run=0, partial=0)
    md = write_report(tmp_path / "run")
    assert md.parent == tmp_path / "run" / "report"
    text = md.read_text()
    assert "rounds updated: 0 of 4" in text and "in progress" in text
    _png_ok(md.parent / "heatmap.png")
    assert not (md.parent / "rewards.png").exists()  # no reward yet: no reward plot
    assert f"{1 / 1296:.5f}" in text  # uniform policy: every operation at 1/1296


def test_not_a_run_dir_says_what_to_pass(tmp_path: Path) -> None:
    from hpcaug.report import main, write_report

    with pytest.raises(ValueError, match="not an hpcaug run dir.*--stage search"):
        write_report(tmp_path)
    (tmp_path / "x").write_text("")
    assert main([str(tmp_path / "nope")]) == 2


def test_cli_writes_into_run_dir(aws_run: tuple[Path, Config], capsys: pytest.CaptureFixture[str]) -> None:
    from hpcaug.report import main

    run_dir, _ = aws_run
    assert main([str(run_dir)]) == 0
    assert Path(capsys.readouterr().out.strip()) == run_dir / "report" / "report.md"
    assert math.isfinite(float((run_dir / "report" / "rounds.csv").read_text().splitlines()[1].split(",")[2]))


def test_factorised_parametrisation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """theta of 36 + 36*36 entries (the authors' p(e1) p(e2|e1)): the same plots and numbers."""
    from hpcaug.ops.policy import AWSPolicy
    from hpcaug.report import write_report
    from hpcaug.search.operations import aws_probabilities, top_operations
    from hpcaug.search.rundir import RunDir

    build_aws_run(tmp_path / "run", monkeypatch, rounds_to_run=2, partial=0, parametrisation="factorised")
    theta = RunDir(tmp_path / "run").theta(2)
    assert theta.numel() == 36 + 36 * 36
    md = write_report(tmp_path / "run")
    _png_ok(md.parent / "heatmap.png")
    _png_ok(md.parent / "marginal.png")
    p = AWSPolicy(theta, "factorised").probs()
    assert aws_probabilities(theta, "factorised").flatten().allclose(p)
    top = top_operations(theta, "factorised", 3)
    assert [t.op_index for t in top] == torch.topk(p, 3).indices.tolist()
    assert "parametrisation `factorised`" in md.read_text()

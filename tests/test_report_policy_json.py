"""report.md's top operations, its heatmap and "What moved the policy" describe policy.json's theta
(what aws.result_policy chose), labelled with its rule, also when that is not the newest theta.

The run dirs are written by the real aws.open_run / aws.run_update on op_set results written
in the stage's own format (as tests/test_search_update.py does): no training, a few seconds."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpcaug.config import Config, load_config
from hpcaug.search import aws, ppo
from hpcaug.search.rundir import RunDir, write_json

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, rule: str, means: list[float]) -> tuple[Config, RunDir]:
    """len(means) updated rounds; round r's trajectories drew their own operations and score about means[r]."""
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        f"run_dir={tmp_path / rule}", "aws.trajectories_per_round=4", f"aws.rounds={len(means) + 1}",
        "aws.quorum=1.0", "aws.parametrisation=joint", "aws.policy_lr=0.5", "aws.ops_per_trajectory=2",
        f"aws.result_policy={rule}", "aws.result_window=2"])
    rd = aws.open_run(cfg)
    for r, m in enumerate(means):
        for i, traj in enumerate(aws.round_trajectories(cfg, r)):
            ops = [97 * traj % 1296, (97 * traj + 500) % 1296]
            counts = torch.bincount(torch.tensor(ops), minlength=ppo.NUM_OPERATIONS) * 1000
            reward = m + 0.05 * i  # the later trajectories of a round win: PPO moves mass onto their operations
            write_json(rd.result_path(r, traj), {"trajectory": traj, "round": r, "reward": reward, "operations": ops,
                                                 "choice_counts": counts.tolist(), "val_top1": [reward]})
        aws.run_update(cfg, None, r)
    return cfg, rd


def _top_rows(text: str, k: int) -> list[tuple[int, float]]:
    """(operation index, probability) of the top-operations table, in rank order."""
    section = text.split("## Top ", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and ln.split("|")[1].strip().isdigit()]
    return [(int(ln.split("|")[2]), float(ln.split("|")[5])) for ln in rows[:k]]


def _top(theta: torch.Tensor, k: int) -> list[tuple[int, float]]:
    from hpcaug.search.operations import top_operations

    return [(op.op_index, op.probability) for op in top_operations(theta, "joint", k)]


def _same(rows: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    """The table shows these operations with these probabilities (printed to 5 decimals)."""
    return [i for i, _ in rows] == [i for i, _ in want] and all(
        abs(p - q) < 1e-5 for (_, p), (_, q) in zip(rows, want, strict=True))


@pytest.mark.parametrize("rule", ["best_round", "mean_last"])
def test_report_describes_policy_json_not_the_newest_theta(tmp_path: Path, rule: str) -> None:
    from hpcaug.ops.policy import load_policy
    from hpcaug.report import write_report
    from hpcaug.search.evidence import element_evidence, searched_policy
    from hpcaug.search.operations import top_operations
    from hpcaug.search.ppo import element_marginals
    from hpcaug.search.runview import read_run

    cfg, rd = _run(tmp_path, rule, [0.3, 0.6, 0.4, 0.35])
    chosen = load_policy(str(rd.policy_path)).theta.double()
    newest = rd.theta(4).double()
    k = 5
    want = _top(chosen, k)
    assert not _same(want, _top(newest, k))  # the case the fix is about: another table
    if rule == "best_round":
        assert torch.allclose(chosen, rd.theta(1).double(), atol=1e-6)

    text = write_report(rd.root, tmp_path / "rep", top_k=k, slurm=False).read_text()
    assert _same(_top_rows(text, k), want)
    header = next(ln for ln in text.splitlines() if ln.startswith("## Top "))
    assert f"aws.result_policy: {rule}" in header
    assert ("theta of round 1" if rule == "best_round" else "mean of the thetas of rounds 3-4") in header
    # the newest theta is labelled apart, with its own top operation
    note = next(ln for ln in text.splitlines() if ln.startswith("The newest theta (round 4"))
    assert top_operations(newest, "joint", 1)[0].label in note

    run = read_run(rd.root)
    searched = searched_policy(run)
    assert searched is not None and searched.rule == rule and not searched.is_newest
    assert torch.allclose(searched.theta, chosen)  # what the heatmap draws
    # "What moved the policy": each element's share in policy.json
    ev = element_evidence(run)
    assert torch.allclose(torch.tensor([x.mass for x in ev], dtype=torch.float64), element_marginals(chosen, "joint"))
    assert "| element | share in policy.json |" in text


def test_with_result_policy_last_policy_json_is_the_newest_theta(tmp_path: Path) -> None:
    from hpcaug.report import write_report
    from hpcaug.search.evidence import searched_policy
    from hpcaug.search.runview import read_run

    _, rd = _run(tmp_path, "last", [0.3, 0.6])
    searched = searched_policy(read_run(rd.root))
    assert searched is not None and searched.is_newest and searched.label.startswith("policy.json = theta of round 2")
    text = write_report(rd.root, tmp_path / "rep", top_k=3, slurm=False).read_text()
    assert _same(_top_rows(text, 3), _top(rd.theta(2), 3))
    assert "The newest theta" not in text

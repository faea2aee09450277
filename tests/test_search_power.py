"""The search finds a planted harmful element (a small, fast benchmarks/search_power.py).

Rewards come from the planted model of hpcaug.search.power (count noise included: op counts
are drawn as the loaders draw them, reward noise sigma), the update is the search's own.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpcaug.config import Config, load_config
from hpcaug.search import power, ppo

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, **over: object) -> Config:
    # the search's own defaults (AWSConfig), not the demo's CPU-sized ones
    sets = [f"run_dir={tmp_path / 'run'}", "aws.trajectories_per_round=8", "aws.rounds=400",
            "aws.policy_lr_warmup_rounds=5", "aws.parametrisation=joint", "aws.policy_lr=0.1",
            "aws.ops_per_trajectory=16"] + [f"{k}={v}" for k, v in over.items()]
    return load_config(REPO / "configs" / "demo.yaml", sets)


def test_the_fast_path_is_the_update_stage(tmp_path: Path) -> None:
    """simulate() without a run dir computes what aws.run_update computes on a real one."""
    for design in ("op_set", "per_image"):
        cfg = _cfg(tmp_path / design, **{"aws.trajectory": design, "aws.result_policy": "mean_last"})
        fast = power.simulate(cfg, images=20_000, rounds=3, seed=1)
        real = power.simulate(cfg, images=20_000, rounds=3, seed=1, run_dir=tmp_path / design / "run")
        for a, b in zip(fast.thetas, real.thetas, strict=True):
            assert torch.allclose(a.double(), b.double(), atol=1e-6), design
        assert fast.mean_rewards == pytest.approx(real.mean_rewards)


def test_op_set_finds_the_planted_element_where_per_image_does_not(tmp_path: Path) -> None:
    """T = 8 fine-tunes of 10^5 images each, sigma 0.003: the default design halves Invert's
    mass within 40 rounds; the paper's per-image design has not moved it much by then."""
    kw = dict(planted="Invert", effect=0.5, sigma=0.003, images=100_000, rounds=40, seed=0)
    ours = power.simulate(_cfg(tmp_path), stop_when_halved=True, **kw)
    assert ours.rounds_to_halve() is not None, ours.masses[-5:]
    paper = power.simulate(_cfg(tmp_path, **{"aws.trajectory": "per_image"}), **kw)
    assert paper.rounds_to_halve() is None and paper.masses[-1] > 0.75 * paper.masses[0], paper.masses[-5:]


def test_no_element_drifts_without_an_effect(tmp_path: Path) -> None:
    """Null run (effect 0): after 100 rounds every element keeps 0.5-2 x its uniform share."""
    cfg = _cfg(tmp_path)
    res = power.simulate(cfg, effect=0.0, sigma=0.003, images=100_000, rounds=100, seed=3)
    m = ppo.element_marginals(res.thetas[-1], cfg.aws.parametrisation) * power.E
    assert 0.5 <= float(m.min()) and float(m.max()) <= 2.0, (float(m.min()), float(m.max()))


def test_evidence_names_the_planted_element(tmp_path: Path) -> None:
    """On a real run dir, the summary's evidence shows the planted element losing mass on low rewards."""
    from hpcaug.search.evidence import element_evidence, movers, movers_lines
    from hpcaug.search.runview import read_run

    cfg = _cfg(tmp_path, **{"aws.ops_per_trajectory": 4})
    power.simulate(cfg, planted="Invert", effect=0.5, sigma=0.003, images=20_000, rounds=20, seed=0,
                   run_dir=tmp_path / "run")
    run = read_run(tmp_path / "run")
    ev = {x.name: x for x in element_evidence(run)}
    inv = ev.pop("Invert")
    assert inv.trajectories > 0 and inv.reward_vs_round < min(x.reward_vs_round for x in ev.values() if x.trajectories)
    assert inv.ratio < 1.0
    _, down = movers(list(ev.values()) + [inv], 3)
    assert inv in down
    assert any("Invert" in line for line in movers_lines(run))

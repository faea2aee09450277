"""The searched policy (policy.json's theta) and what moved it: each element's mass in it vs at
the start, and the rewards behind it.

searched_policy(run) is the theta a report or summary describes: policy.json's, which
aws.result_policy chose (the newest theta for `last`, an earlier one for `best_round`, a mean for
`mean_last`), labelled with its rule; before the first update, the newest theta.pt.
For every element e of the AWS space:
- mass: the element's marginal (mean share of the first and the second place) under the
  searched policy, and its ratio to the start (uniform: 1/36);
- evidence: over every counted trajectory, the reward relative to its round's mean, weighted by
  how much of the trajectory's applied operations contained e. Under `op_set` a trajectory that
  drew e scores this much above (+) or below (-) its round; under `per_image` every trajectory
  applies every element in about the same share, so the evidence is near 0 (which is the point
  of the design comparison in docs/search.md).
Read by the CLI's summary and the report; computed from the run-dir model alone.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hpcaug.ops.policy import AWSPolicy, load_policy
from hpcaug.ops.spaces import AWS_SPACE
from hpcaug.search import ppo
from hpcaug.search.rundir import read_json
from hpcaug.search.runview import AWSRun

E = AWS_SPACE.num_elements


@dataclass(frozen=True)
class SearchedPolicy:
    """The theta the report, its heatmap and the summary describe, and where it came from."""

    theta: torch.Tensor  # float64
    rule: str  # aws.result_policy that chose it; "" = no policy.json yet (the newest theta)
    why: str  # the update's reason ('round 1 had the highest mean reward ...'), or ""
    label: str  # short: 'policy.json = theta of round 1 (aws.result_policy: best_round)'
    newest_round: int  # round of the newest theta.pt (what the next fine-tunes sample from)
    is_newest: bool  # theta equals the newest theta.pt


def _source(run: AWSRun) -> dict[str, Any]:
    """How policy.json was chosen: search_state.json's policy_source (written with policy.json),
    else the last update's policy_json; run dirs from before aws.result_policy: `last`."""
    state = read_json(run.rd.search_state_path) if run.rd.search_state_path.exists() else {}
    done = run.rounds_done
    last = (run.round(done - 1).update or {}) if done else {}
    return dict(state.get("policy_source") or last.get("policy_json") or {"rule": "last", "why": ""})


def _label(source: dict[str, Any]) -> str:
    rule = source["rule"]
    if "rounds" in source:
        a, b = source["rounds"]
        what = f"mean of the thetas of rounds {a}-{b}"
    elif "round" in source:
        what = f"theta of round {source['round']}"
    else:
        what = "the searched theta"
    return f"policy.json = {what} (aws.result_policy: {rule})"


def searched_policy(run: AWSRun) -> SearchedPolicy | None:
    """policy.json's theta with its rule, or the newest theta.pt before the first update; None
    when the run has no theta at all."""
    thetas = run.thetas()
    if not thetas:
        return None
    newest_round, newest = thetas[-1]
    newest = newest.double()
    if not run.rd.policy_path.exists():
        label = f"theta of round {newest_round}, after {newest_round} updates (no policy.json yet)"
        return SearchedPolicy(newest, "", "", label, newest_round, True)
    policy = load_policy(run.rd.policy_path)
    if not isinstance(policy, AWSPolicy):
        raise ValueError(f"{run.rd.policy_path} holds a {type(policy).__name__}, not the AWS policy a search writes")
    theta = policy.theta.double()
    source = _source(run)
    same = theta.shape == newest.shape and torch.allclose(theta, newest, atol=1e-6)
    return SearchedPolicy(theta, str(source["rule"]), str(source.get("why", "")), _label(source), newest_round, same)


@dataclass(frozen=True)
class ElementEvidence:
    name: str  # 'Rotate:9', 'Invert'
    mass: float  # marginal under the searched policy (searched_policy: policy.json's theta)
    start: float  # marginal under round 0's theta (uniform: 1/36)
    trajectories: int  # counted trajectories whose applied operations contained the element
    reward_vs_round: float  # their share-weighted reward minus their round's mean (nan if none)

    @property
    def ratio(self) -> float:
        return self.mass / self.start if self.start > 0 else float("nan")


def _element_shares(counts: Sequence[int]) -> torch.Tensor:
    """[36]: the share of a trajectory's applied operations that contain each element."""
    c = torch.as_tensor(counts, dtype=torch.float64).view(E, E)
    total = float(c.sum())
    if total <= 0:
        return torch.zeros(E, dtype=torch.float64)
    contains = c.sum(1) + c.sum(0) - c.diagonal()  # (e, e) counted once
    return contains / total


def element_evidence(run: AWSRun) -> list[ElementEvidence]:
    """One entry per element, in the space's order, its mass under the searched policy
    (searched_policy); [] before the first update."""
    thetas = run.thetas()
    searched = searched_policy(run)
    if len(thetas) < 2 or searched is None:
        return []
    start = ppo.element_marginals(thetas[0][1], run.parametrisation)
    now = ppo.element_marginals(searched.theta, run.parametrisation)
    weighted = torch.zeros(E, dtype=torch.float64)
    weight = torch.zeros(E, dtype=torch.float64)
    used = torch.zeros(E, dtype=torch.int64)
    for st in run.rounds:
        if st.update is None or not st.results:
            continue
        counted = [st.results[t] for t in st.update.get("trajectories", []) if t in st.results]
        if not counted:
            continue
        mean = sum(float(v["reward"]) for v in counted) / len(counted)
        for v in counted:
            share = _element_shares(v["choice_counts"])
            weighted += share * (float(v["reward"]) - mean)
            weight += share
            used += (share > 0).to(torch.int64)
    names = [e.name for e in AWS_SPACE.elements]
    return [ElementEvidence(names[i], float(now[i]), float(start[i]), int(used[i]),
                            float(weighted[i] / weight[i]) if weight[i] > 0 else float("nan")) for i in range(E)]


def movers(evidence: Sequence[ElementEvidence], k: int = 5) -> tuple[list[ElementEvidence], list[ElementEvidence]]:
    """(the k elements that gained the most mass, the k that lost the most), by ratio to the start."""
    ranked = sorted(evidence, key=lambda x: x.ratio)
    return list(reversed(ranked[-k:])), ranked[:k]


def movers_lines(run: AWSRun, k: int = 5) -> list[str]:
    """The summary's lines: gainers and losers with their ratio and the rewards behind them."""
    ev = element_evidence(run)
    if not ev:
        return []
    up, down = movers(ev, k)

    def line(x: ElementEvidence) -> str:
        n = x.trajectories
        rew = "no trajectory used it" if n == 0 else (
            f"{n} {'trajectory' if n == 1 else 'trajectories'} used it, reward {x.reward_vs_round:+.4f} vs "
            f"{'its' if n == 1 else 'their'} round's mean")
        return f"  {x.name:14s} {x.ratio:5.2f} x its start ({x.mass:.4f}); {rew}"

    return (["elements that gained the most mass in policy.json (its share / the share at the start; uniform "
             "= 1/36 each):"]
            + [line(x) for x in up] + ["elements that lost the most mass:"] + [line(x) for x in down])

"""See a search: plots and a markdown summary of an hpcaug run dir (AWS or AdvAA), partial or finished.

    python -m hpcaug.report RUN_DIR [--out DIR] [--top-k K] [--no-slurm]

`write_report(run_dir)` is what a search calls at its end; it only reads the run dir (through
hpcaug.search.runview, the one reader of the layout in docs/architecture.md section 5) and
writes `report.md` and PNGs into `RUN_DIR/report/` (or `--out`), each atomically, so it may
run while the search runs.

AWS: the thetas of the rounds (the policy each round sampled from), the fine-tune results
(reward, choice counts, wall_s), each round's update (rewards, baseline, entropy, PPO stats),
the shared and final stages' records (wall_s). AdvAA: one record per epoch (the M sampled
policies, their mean losses and rewards, controller entropy, training metrics).
Plots follow the papers' figures: AWS figure 6 (marginal of the first element over time),
AdvAA figure 6 (op and magnitude percentages over epochs). docs/report.md explains them.
The top operations, the heatmap and "What moved the policy" describe the searched policy,
policy.json's theta (aws.result_policy may have chosen an earlier or a mean theta: the report
names the rule and shows the newest theta's top operations apart); marginal.png and entropy.png
show every round's theta.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure  # Agg canvas, no pyplot state: safe inside a search process

from hpcaug._atomic import atomic_write_bytes
from hpcaug.ops.spaces import AWS_SPACE
from hpcaug.ops.table import NUM_BINS, OP_NAMES
from hpcaug.search.evidence import SearchedPolicy, element_evidence, movers, searched_policy
from hpcaug.search.jobs import stage_resources
from hpcaug.search.operations import aws_probabilities, element_names, top_operations
from hpcaug.search.queue import Accounting, account
from hpcaug.search.rundir import format_duration, format_ranges
from hpcaug.search.runview import AdvAARun, AWSRun, read_run

__all__ = ["write_report", "aws_stage_times", "StageTime", "main"]


# ------------------------------------------------------------------------------------------ timing
@dataclass
class StageTime:
    """Wall time of one stage and its GPU-hours (wall x the GPUs the config gives one job)."""

    stage: str
    jobs: int
    wall_s: float  # summed over jobs (task-seconds for array stages)
    gpus_per_job: int
    source: str  # "recorded" (the stage wrote wall_s) or "file timestamps"

    @property
    def gpu_hours(self) -> float:
        return self.wall_s * self.gpus_per_job / 3600.0


def _gpus(config: dict[str, Any], stage: str) -> int:
    """GPUs one job of `stage` holds under the run's config (jobs.stage_resources)."""
    c = config.get("cluster", {})
    nodes, per_node = stage_resources(stage, int(c.get("nodes", 1)), int(c.get("gpus_per_node", 0)),
                                      int(c.get("finetune_gpus", 0)))
    return nodes * per_node


def aws_stage_times(run: AWSRun, acct: Accounting | None = None) -> list[StageTime]:
    """Per-stage wall time and GPU-hours. With `acct` (sacct's view of the recorded jobs): every
    run of every job, a requeued job's earlier runs and failed or cancelled tasks included.
    Without: what the stages recorded (wall_s; a requeued stage's covers its last run only) and
    file timestamps for the update, which records none."""
    if acct is not None:
        return _sacct_stage_times(run, acct)
    out = []
    if run.shared is not None and "wall_s" in run.shared:
        out.append(StageTime("shared", 1, float(run.shared["wall_s"]), _gpus(run.config, "shared"), "recorded"))
    walls = [float(v["wall_s"]) for r in run.rounds for v in {**r.results, **r.late}.values() if "wall_s" in v]
    if walls:
        out.append(StageTime("finetune", len(walls), sum(walls), _gpus(run.config, "finetune"), "recorded"))
    upd = []
    for r in run.rounds:
        if r.update_mtime is not None and r.result_mtimes:
            upd.append(max(0.0, r.update_mtime - max(r.result_mtimes.values())))
    if upd:
        out.append(StageTime("update", len(upd), sum(upd), _gpus(run.config, "update"), "file timestamps"))
    if run.final is not None and "wall_s" in run.final:
        out.append(StageTime("final", 1, float(run.final["wall_s"]), _gpus(run.config, "final"), "recorded"))
    return out


def _sacct_stage_times(run: AWSRun, acct: Accounting) -> list[StageTime]:
    out = []
    for stage in ("shared", "finetune", "update", "final"):
        ids = [str(rec["job_id"]) for key, recs in run.jobs.items() if key.split("-")[0] == stage for rec in recs]
        runs = [s for j in ids for s in acct.runs_of(j) if s.elapsed_s > 0]  # a task cancelled while pending never ran
        if not runs:
            continue
        requeued = sum(s.state == "REQUEUED" for s in runs)
        failed = sum(s.failed for s in runs)
        notes = [f"{requeued} requeued" if requeued else "", f"{failed} failed or cancelled" if failed else ""]
        out.append(StageTime(stage, len(runs), sum(s.elapsed_s for s in runs), _gpus(run.config, stage),
                             "sacct, every run" + "".join(f", {n}" for n in notes if n)))
    return out


# ------------------------------------------------------------------------------------------ plotting
def _figure(w: float, h: float) -> Any:
    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _colors(n: int) -> list[Any]:
    maps = [colormaps["tab20"], colormaps["tab20b"], colormaps["tab20c"]]
    return [maps[(i // 20) % 3](i % 20) for i in range(n)]


def _ramp(n: int) -> list[Any]:
    """n colours from mild to strong (magnitude bins)."""
    return [colormaps["viridis"](i / max(1, n - 1)) for i in range(n)]


def plot_heatmap(run: AWSRun, path: Path) -> Path | None:
    """36 x 36 heatmap of p over operations of the searched policy (evidence.searched_policy:
    policy.json's theta, labelled with its aws.result_policy), element names on both axes."""
    searched = searched_policy(run)
    if searched is None:
        return None
    p = aws_probabilities(searched.theta, run.parametrisation).numpy()
    names = element_names()
    fig = _figure(11, 9.5)
    ax = fig.add_subplot()
    im = ax.imshow(p, cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("second element")
    ax.set_ylabel("first element")
    ax.set_title(f"p(operation) of {searched.label}\nuniform = {1 / p.size:.2e}, max = {p.max():.2e}")
    fig.colorbar(im, ax=ax, shrink=0.8, label="probability")
    return _save(fig, path)


def plot_marginal(run: AWSRun, path: Path) -> Path | None:
    """Stacked area of the first element's marginal over rounds (AWS figure 6)."""
    thetas = run.thetas()
    if not thetas:
        return None
    xs = [r for r, _ in thetas]
    marg = np.stack([aws_probabilities(t, run.parametrisation).sum(1).numpy() for _, t in thetas], 1)  # [36, R]
    names = element_names()
    fig = _figure(12, 6)
    ax = fig.add_subplot()
    if len(xs) == 1:  # one round: a bar, an area needs two points
        ax.bar([xs[0]] * len(names), marg[:, 0], bottom=np.cumsum(marg[:, 0]) - marg[:, 0],
               color=_colors(len(names)), label=names, width=0.6)
    else:
        ax.stackplot(xs, marg, labels=names, colors=_colors(len(names)), linewidth=0)
        ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel("round (theta after that many updates)")
    ax.set_ylabel("p(first element)")
    ax.set_title("Marginal of the first element over rounds (rows of the 36 x 36 matrix summed)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=2, fontsize=7, frameon=False)
    return _save(fig, path)


def plot_rewards(run: AWSRun, path: Path) -> Path | None:
    """Rewards per round (each trajectory, mean, +-1 std, min-max) and the EMA baseline."""
    rows = [(r.index, r.rewards, r.update) for r in run.rounds if r.rewards]
    if not rows:
        return None
    fig = _figure(9, 5)
    ax = fig.add_subplot()
    xs = np.array([r for r, _, _ in rows], dtype=float)
    mean = np.array([np.mean(v) for _, v, _ in rows])
    std = np.array([np.std(v) for _, v, _ in rows])
    lo = np.array([np.min(v) for _, v, _ in rows])
    hi = np.array([np.max(v) for _, v, _ in rows])
    ax.scatter([r for r, v, _ in rows for _ in v], [x for _, v, _ in rows for x in v], s=6, color="0.55",
               alpha=0.6, linewidths=0, label="one trajectory")
    ax.fill_between(xs, lo, hi, color="C0", alpha=0.12, label="min-max")
    ax.fill_between(xs, mean - std, mean + std, color="C0", alpha=0.28, label="mean +- std")
    ax.plot(xs, mean, "o-", color="C0", ms=3, label="mean reward")
    bx = [r for r, _, u in rows if u is not None and "baseline_used" in u]
    if bx:
        ax.plot(bx, [u["baseline_used"] for _, _, u in rows if u is not None and "baseline_used" in u], "s--",
                color="C3", ms=3, label="baseline (subtracted in the round)")
        ax.plot(bx, [u["baseline"] for _, _, u in rows if u is not None and "baseline_used" in u], ":",
                color="C3", alpha=0.6, label="baseline after the update")
    partial = [r for r, _, u in rows if u is None]
    if partial:
        ax.axvspan(min(partial) - 0.5, max(partial) + 0.5, color="0.9", zorder=0, label="not yet updated")
    ax.set_xlabel("round")
    ax.set_ylabel("reward (val top-1 of the fine-tunes)")
    ax.set_title("Rewards per round and the moving-average baseline")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_entropy(run: AWSRun, path: Path) -> Path | None:
    """Entropy of p_theta of every round, with the uniform maximum log(1296)."""
    thetas = run.thetas()
    if not thetas:
        return None
    ent = []
    for _, t in thetas:
        p = aws_probabilities(t, run.parametrisation).flatten()
        ent.append(float(-(p * p.clamp_min(1e-300).log()).sum()))
    fig = _figure(8, 4)
    ax = fig.add_subplot()
    ax.plot([r for r, _ in thetas], ent, "o-", ms=3, label="entropy of p_theta (nats)")
    ax.axhline(math.log(AWS_SPACE.num_operations), color="0.5", ls="--", label="uniform (log 1296)")
    ax.set_xlabel("round (theta after that many updates)")
    ax.set_ylabel("nats")
    ax.set_title("Policy entropy")
    ax.legend(fontsize=8)
    return _save(fig, path)


def advaa_frequencies(records: Sequence[dict[str, Any]]) -> tuple[list[int], Any, Any]:
    """(epochs, op share [16, E], magnitude share [10, E]) over every (op, magnitude) the M policies chose."""
    idx = {n: i for i, n in enumerate(OP_NAMES)}
    ops = np.zeros((len(OP_NAMES), len(records)))
    mags = np.zeros((NUM_BINS, len(records)))
    for j, rec in enumerate(records):
        for pol in rec["policies"]:
            for sub in pol:
                for name, b in sub:
                    ops[idx[name], j] += 1
                    mags[int(b), j] += 1
    ops /= np.maximum(ops.sum(0, keepdims=True), 1)
    mags /= np.maximum(mags.sum(0, keepdims=True), 1)
    return [int(r["epoch"]) for r in records], ops, mags


def _smooth(x: Any, window: int) -> Any:
    """Mean over the last `window` epochs (AdvAA figure 6 averages every five)."""
    if window <= 1:
        return x
    c = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
    k = np.arange(x.shape[1])
    lo = np.maximum(0, k + 1 - window)
    return (c[:, k + 1] - c[:, lo]) / (k + 1 - lo)


def plot_advaa(run: AdvAARun, out: Path, window: int) -> list[Path]:
    """AdvAA figure 6: op and magnitude percentages over epochs; plus per-policy losses and entropy."""
    if not run.records:
        return []
    epochs, ops, mags = advaa_frequencies(run.records)
    w = window if len(epochs) >= 2 * window else 1
    paths = []
    for name, data, labels, title in (
            ("advaa_ops.png", ops, list(OP_NAMES), "Operations"),
            ("advaa_magnitudes.png", mags, [str(b) for b in range(NUM_BINS)],
             "Magnitudes (0 = mildest, 9 = strongest)")):
        fig = _figure(11, 5.5)
        ax = fig.add_subplot()
        d = 100 * _smooth(data, w)
        if len(epochs) == 1:
            ax.bar([epochs[0]] * len(labels), d[:, 0], bottom=np.cumsum(d[:, 0]) - d[:, 0],
                   color=_colors(len(labels)), label=labels, width=0.6)
        else:
            cols = _colors(len(labels)) if len(labels) > 10 else _ramp(len(labels))
            ax.stackplot(epochs, d, labels=labels, colors=cols, linewidth=0)
            ax.set_xlim(epochs[0], epochs[-1])
        ax.set_ylim(0, 100)
        ax.set_xlabel("epoch")
        ax.set_ylabel("percentage (%)")
        ax.set_title(f"{title} in the sampled policies" + (f" (mean over {w} epochs)" if w > 1 else ""))
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        paths.append(_save(fig, out / name))
    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    losses = np.array([r["mean_loss"] for r in run.records])  # [E, M]
    ax.fill_between(epochs, losses.min(1), losses.max(1), alpha=0.25, color="C1", label="min-max over the M policies")
    ax.plot(epochs, losses.mean(1), "o-", ms=3, color="C1", label="mean training loss (the reward signal)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["entropy"] for r in run.records], "--", color="C2", label="controller entropy")
    ax2.set_ylabel("entropy (nats per policy)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8)
    ax.set_title("Per-policy training losses and controller entropy")
    paths.append(_save(fig, out / "advaa_losses.png"))
    return paths


# ------------------------------------------------------------------------------------------ summary
def _fmt_gh(h: float) -> str:
    return f"{h:.2f}" if h >= 0.01 or h == 0 else f"{h:.1e}"


def _aws_summary(run: AWSRun, images: list[Path], top_k: int, acct: Accounting | None) -> str:
    lines = [f"# Search report: {run.root.name} (AWS)", "", *_aws_state(run), ""]
    lines += _aws_top(run, top_k) + _aws_movers(run) + _aws_rewards(run) + _aws_times(run, acct)
    if images:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images] + [""]
    return "\n".join(lines)


def _aws_state(run: AWSRun) -> list[str]:
    t, done = run.trajectories_per_round, run.rounds_done
    state = "finished" if run.final is not None else ("search finished" if done >= run.planned_rounds > 0
                                                      else "in progress (partial run)")
    lines = [f"- config: `{run.name}`, parametrisation `{run.parametrisation}`, {t} trajectories per round",
             f"- state: {state}",
             f"- shared stage: {'done' if run.shared is not None else 'not done'}",
             f"- rounds updated: {done} of {run.planned_rounds}",
             f"- final training: {'done' if run.final is not None else 'not done'}"]
    last = run.round(done - 1).update if done else None
    source = (last or {}).get("policy_json")
    if source:
        lines.append(f"- policy.json: `aws.result_policy: {source['rule']}`, {source['why']}")
    lines.append(f"- trajectory design: `{run.design}` (docs/search.md, \"Trajectory designs\")")
    cur = run.current
    if cur is not None:
        lines.append(f"- round {cur.index}: {len(cur.results)} of {t} fine-tune results, not yet updated")
    for r in run.rounds:
        if r.uncounted:
            lines.append(f"- round {r.index}: LATE results of trajectories {format_ranges(list(r.uncounted))}: they "
                         f"finished after the round's update and were not counted (kept in "
                         f"{run.rd.late_dir(r.index).relative_to(run.root)}/)")
    return lines


def _aws_top(run: AWSRun, top_k: int) -> list[str]:
    """Top operations and first elements of the searched policy (policy.json's theta)."""
    searched = searched_policy(run)
    if searched is None:
        return []
    theta = searched.theta
    n = AWS_SPACE.num_operations
    lines = [f"## Top {top_k} operations of the searched policy ({searched.label})", "",
             *_newest_note(run, searched), f"Uniform probability: 1/{n} = {1 / n:.5f}.", "",
             "| rank | operation | first element | second element | probability | x uniform |",
             "|---:|---:|---|---|---:|---:|"]
    for i, op in enumerate(top_operations(theta, run.parametrisation, top_k), 1):
        lines.append(f"| {i} | {op.op_index} | {op.first} | {op.second} | {op.probability:.5f} "
                     f"| {op.probability * n:.2f} |")
    marg = aws_probabilities(theta, run.parametrisation).sum(1)
    names = element_names()
    order = torch.argsort(marg, descending=True)[:5].tolist()
    top5 = ", ".join(f"{names[i]} {float(marg[i]):.4f}" for i in order)
    return lines + ["", f"First-element marginal, top 5: {top5}", ""]


def _newest_note(run: AWSRun, searched: SearchedPolicy) -> list[str]:
    """When policy.json is not the newest theta: say so and show the newest one's top operations."""
    if searched.is_newest:
        return []
    r = searched.newest_round
    _, newest = run.thetas()[-1]
    top = "; ".join(f"{op.label} {op.probability:.5f}" for op in top_operations(newest, run.parametrisation, 3))
    return [f"The newest theta (round {r}, after {r} updates: what the next fine-tunes sample from) is not "
            f"policy.json ({searched.why or searched.label}); its top 3 operations: {top}. marginal.png and "
            "entropy.png show every round's theta.", ""]


def _aws_movers(run: AWSRun, k: int = 6) -> list[str]:
    """The elements that gained and lost the most mass, with the rewards behind them."""
    ev = element_evidence(run)
    if not ev:
        return []
    up, down = movers(ev, k)
    lines = ["## What moved the policy", "",
             "Each element's marginal (mean share of the first and second place) in the searched policy "
             "(policy.json) vs at the start (uniform 1/36), and the rewards of the trajectories that used it, "
             "relative to their round's mean (weighted by how much of each trajectory's operations contained "
             "the element).", "",
             "| element | share in policy.json | x start | trajectories that used it | their reward vs round mean |",
             "|---|---:|---:|---:|---:|"]
    for x in up + [None] + down:
        if x is None:
            lines.append("| ... | | | | |")
            continue
        rew = "-" if x.trajectories == 0 else f"{x.reward_vs_round:+.4f}"
        lines.append(f"| {x.name} | {x.mass:.4f} | {x.ratio:.2f} | {x.trajectories} | {rew} |")
    return lines + [""]


def _aws_rewards(run: AWSRun) -> list[str]:
    rows = [r for r in run.rounds if r.rewards]
    if not rows:
        return []
    lines = ["## Rewards per round", "",
             "| round | rewards | mean | std | min | max | baseline used | entropy after | KL | PPO epochs |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    shown = rows if len(rows) <= 30 else rows[:5] + rows[-25:]
    for i, r in enumerate(shown):
        if len(rows) > 30 and i == 5:
            lines.append(f"| ... | {len(rows) - 30} rounds left out (all in rounds.csv) | | | | | | | | |")
        v = np.array(r.rewards)
        u = r.update or {}
        lines.append(f"| {r.index} | {len(v)} | {v.mean():.4f} | {v.std():.4f} | {v.min():.4f} | {v.max():.4f} | "
                     + (f"{u['baseline_used']:.4f} | {u['entropy']:.4f} | {u['kl']:.5f} | {u['ppo_epochs']} |"
                        if u else "- | - | - | - (not updated yet) |"))
    return lines + [""]


def _aws_times(run: AWSRun, acct: Accounting | None) -> list[str]:
    times = aws_stage_times(run, acct)
    lines = ["## Wall time and GPU-hours", ""]
    if times:
        lines += ["| stage | jobs | wall time (sum over jobs) | GPUs per job | GPU-hours | source |",
                  "|---|---:|---:|---:|---:|---|"]
        for s in times:
            lines.append(f"| {s.stage} | {s.jobs} | {format_duration(s.wall_s)} | {s.gpus_per_job} | "
                         f"{_fmt_gh(s.gpu_hours)} | {s.source} |")
        lines += ["", f"Total: {_fmt_gh(sum(s.gpu_hours for s in times))} GPU-hours."]
    durs = run.round_durations()
    if durs:
        mean = sum(d for _, d in durs) / len(durs)
        lines += ["", f"Mean round time: {format_duration(mean)} over {len(durs)} rounds (from file timestamps: "
                  "previous update.json, or shared/done.json for round 0, to this round's update.json)."]
    src = ("From sacct: every run of every job the submitter recorded (jobs/), so a requeued job's earlier "
           "runs and failed or cancelled tasks count too." if acct is not None else
           "From the run dir (SLURM not asked): shared, finetune and final record their own wall_s, which "
           "for a requeued job covers its last run only; the update records none, so its time is taken "
           "from file timestamps (its update.json minus the round's last result file).")
    return lines + ["", "GPU-hours = wall time x the GPUs the run's config gives one job of the stage "
                    "(cluster.nodes x cluster.gpus_per_node for shared/final, cluster.finetune_gpus for a "
                    f"fine-tune, 0 for the CPU-only update): what was allocated, not measured utilisation. {src}", ""]


def _advaa_summary(run: AdvAARun, images: list[Path], top_k: int) -> str:
    name = run.name
    lines = [f"# Search report: {run.root.name} (Adversarial AutoAugment)", "",
             f"- config: `{name}`",
             f"- epochs recorded: {len(run.records)} of {run.planned_epochs}"
             + (" (in progress or stopped)" if len(run.records) < run.planned_epochs else ""), ""]
    if run.records:
        last = run.records[-1]
        _, ops, mags = advaa_frequencies(run.records[-min(5, len(run.records)):])
        share = ops.mean(1)
        order = [j for j in np.argsort(-share, kind="stable")[:top_k] if share[j] > 0]
        n = min(5, len(run.records))
        lines += [f"## Top {len(order)} operations over the last {n} epochs", "", "| rank | op | share |",
                  "|---:|---|---:|"]
        lines += [f"| {i} | {OP_NAMES[j]} | {100 * share[j]:.1f}% |" for i, j in enumerate(order, 1)]
        lines += ["", "Magnitude shares over the same epochs: "
                  + ", ".join(f"{b}: {100 * m:.1f}%" for b, m in enumerate(mags.mean(1))), ""]
        lines += [f"## Last epoch ({last['epoch']})", "",
                  f"- mean training loss per policy: {', '.join(f'{x:.4f}' for x in last['mean_loss'])}",
                  f"- normalised rewards: {', '.join(f'{x:+.3f}' for x in last['reward'])}",
                  f"- controller entropy: {last['entropy']:.4f}", "", "Policies (sub-policies of (op, magnitude)):", ""]
        for m, pol in enumerate(last["policies"]):
            lines.append(f"{m}. " + "; ".join(" -> ".join(f"{o} {b}" for o, b in sub) for sub in pol))
        lines.append("")
        walls = [float(r.get("train", {}).get("epoch_time_s", 0.0)) for r in run.records]
        if any(walls):
            g = _gpus(run.config, "advaa")
            tot = sum(walls)
            lines += ["## Wall time and GPU-hours", "",
                      f"Training epochs took {format_duration(tot)} in all (recorded per epoch as epoch_time_s; "
                      f"validation not included), {tot * g / 3600:.2f} GPU-hours at {g} GPUs "
                      "(cluster.nodes x cluster.gpus_per_node).", ""]
    if images:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images] + [""]
    return "\n".join(lines)


def _rounds_csv(run: AWSRun) -> str:
    out = ["round,rewards,mean,std,min,max,baseline_used,baseline,entropy,kl,ppo_epochs"]
    for r in run.rounds:
        v = np.array(r.rewards) if r.rewards else np.array([np.nan])
        u = r.update or {}
        vals = [r.index, len(r.rewards), v.mean(), v.std(), v.min(), v.max(), u.get("baseline_used", ""),
                u.get("baseline", ""), u.get("entropy", ""), u.get("kl", ""), u.get("ppo_epochs", "")]
        out.append(",".join(str(x) for x in vals))
    return "\n".join(out) + "\n"


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 top_k: int = 10, window: int = 5, slurm: bool | None = None) -> Path:
    """Write report.md and the PNG plots of a run dir into `out` (default RUN_DIR/report); -> report.md.

    Works on partial runs (only what exists is plotted). window: epochs averaged in the AdvAA plots.
    slurm: None = take GPU-hours from sacct when jobs were recorded and it answers, False = never.
    """
    run = read_run(run_dir)
    dest = Path(out) if out is not None else run.rd.report_dir
    dest.mkdir(parents=True, exist_ok=True)
    images: list[Path] = []
    if isinstance(run, AWSRun):
        for fn, name in ((plot_heatmap, "heatmap.png"), (plot_marginal, "marginal.png"),
                         (plot_rewards, "rewards.png"), (plot_entropy, "entropy.png")):
            p = fn(run, dest / name)
            if p is not None:
                images.append(p)
        atomic_write_bytes(dest / "rounds.csv", _rounds_csv(run).encode())
        text = _aws_summary(run, images, top_k, _accounting(run, slurm))
    else:
        images = plot_advaa(run, dest, window)
        text = _advaa_summary(run, images, top_k)
    text += f"\n_Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `python -m hpcaug.report`._\n"
    atomic_write_bytes(dest / "report.md", text.encode())
    return dest / "report.md"


def _accounting(run: AWSRun, slurm: bool | None) -> Accounting | None:
    """sacct's view of the recorded jobs, or None (no jobs recorded, --no-slurm, or SLURM not reachable:
    the report then says its times come from the run dir)."""
    if slurm is False or not run.jobs:
        return None
    try:
        return account(run.jobs)
    except RuntimeError as e:
        print(f"report: SLURM not reachable ({e}): wall times and GPU-hours from the run dir", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hpcaug.report RUN_DIR [--out DIR]`: plots and report.md of a (running) search."""
    ap = argparse.ArgumentParser(prog="python -m hpcaug.report", description=main.__doc__)
    ap.add_argument("run_dir", help="the run dir of an AWS search or an AdvAA run (e.g. runs/demo)")
    ap.add_argument("--out", default=None, help="output directory (default RUN_DIR/report)")
    ap.add_argument("--top-k", type=int, default=10, help="operations listed in report.md")
    ap.add_argument("--window", type=int, default=5, help="AdvAA plots: epochs averaged (paper: 5)")
    ap.add_argument("--no-slurm", action="store_true", help="do not ask sacct (wall times from the run dir)")
    args = ap.parse_args(argv)
    try:
        path = write_report(args.run_dir, args.out, top_k=args.top_k, window=args.window,
                            slurm=False if args.no_slurm else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

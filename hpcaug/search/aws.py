"""AWS stages as plain functions `run_x(cfg, run_dir, ...)`: the CLI, submitit jobs and tests call these.

- run_shared:   train the shared weights with the uniform policy (aws.shared_epochs; the
                training itself is `train_shared`, which the proxy benchmarks call too)
- run_finetune: one trajectory: shared checkpoint -> aws.finetune_epochs with what p_theta of
                its round gives it -> reward + op counts (the fine-tune itself is `finetune`;
                its lr: aws.finetune_schedule)
- run_update:   gather a round's results, PPO-clip step on theta against the baseline
                (aws.baseline: ema or round_mean), policy.json (aws.result_policy)
- run_final:    train from scratch with the searched policy (train.stages.run_final)

Every stage is idempotent: it returns the stored result when its output already exists, so a
rerun (requeue, resume, duplicate submission) never duplicates rewards or moves theta twice.
The training stack (hpcaug.train) is imported inside the functions that train, so that
validation, the PPO step and the submitter load without it; hpcaug.ops.policy (the policies,
torch only) is imported at the top.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hpcaug.config import Config, check_aws_search
from hpcaug.ops.policy import AWSOperationSet, AWSPolicy
from hpcaug.search import ppo, rundir
from hpcaug.search.rundir import RunDir, format_ranges, read_json, read_pt, write_json, write_pt

if TYPE_CHECKING:
    from hpcaug.train.loop import TrainResult

log = logging.getLogger("hpcaug.search")


def round_of(cfg: Config, traj: int) -> int:
    """Trajectory id -> its round (id // aws.trajectories_per_round)."""
    return traj // cfg.aws.trajectories_per_round


def round_trajectories(cfg: Config, r: int) -> range:
    t = cfg.aws.trajectories_per_round
    return range(r * t, (r + 1) * t)


def quorum_size(cfg: Config) -> int:
    return rundir.quorum_size(cfg.aws.quorum, cfg.aws.trajectories_per_round)


def open_run(cfg: Config, run_dir: str | os.PathLike[str] | None = None, *,
             record_config: bool = True) -> RunDir:
    """The run dir of cfg (created, or checked against the config it was started with); refuses a
    config an AWS search cannot run (config.check_aws_search) before anything is written.
    record_config: a resume rewrites config.json with cfg (the submitter); a job passes False,
    since it may start after a later resume and carries the config of its own submission."""
    check_aws_search(cfg)
    rd = RunDir(run_dir or cfg.run_path)
    rd.init(cfg, ppo.num_params(cfg.aws.parametrisation), record_config=record_config)
    return rd


def aws_policy(theta: torch.Tensor, cfg: Config) -> AWSPolicy:
    """The ops module's AWSPolicy for theta (the policy the loaders sample from)."""
    return AWSPolicy(theta, parametrisation=cfg.aws.parametrisation)


def _dist(cfg: Config) -> Any:
    from hpcaug.train.dist import init_dist

    return init_dist(cfg.dist)


# ---------------------------------------------------------------- shared
def train_shared(cfg: Config, out_dir: Path, policy: Any, *, dist: Any = None) -> TrainResult:
    """The shared weights: aws.shared_epochs from scratch with `policy` (a search's: uniform). Under
    aws.finetune_schedule continue these are the first E1 epochs of one schedule of E1 + E2 epochs,
    so the lr has not yet decayed when the fine-tunes take over; under constant the schedule ends here."""
    from hpcaug.train.loop import train

    a = cfg.aws
    span = (0, a.shared_epochs + a.finetune_epochs) if a.finetune_schedule == "continue" else None
    return train(cfg, out_dir, [policy] * cfg.augment.copies, epochs=a.shared_epochs, schedule_span=span, dist=dist)


def run_shared(cfg: Config, run_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Train the shared weights with the uniform policy; resumes from its own checkpoint."""
    rd = open_run(cfg, run_dir, record_config=False)
    if rd.shared_done.exists():
        log.info("shared: already done (%s)", rd.shared_done)
        return read_json(rd.shared_done)
    dist = _dist(cfg)
    t0 = time.time()
    uniform = aws_policy(torch.zeros(ppo.num_params(cfg.aws.parametrisation)), cfg)
    res = train_shared(cfg, rd.shared_dir, uniform, dist=dist)
    ck = Path(res.checkpoint).resolve()
    rel = ck.relative_to(rd.root.resolve()) if ck.is_relative_to(rd.root.resolve()) else ck
    out = {"checkpoint": str(rel), "epochs": cfg.aws.shared_epochs, "history": res.history, "wall_s": time.time() - t0}
    if dist.is_root:
        write_json(rd.shared_history, res.history)
        write_json(rd.shared_done, out)
    dist.barrier()
    return out


def shared_checkpoint(rd: RunDir) -> Path:
    if not rd.shared_done.exists():
        raise FileNotFoundError(f"the shared stage of {rd.root} has not finished ({rd.shared_done} missing): "
                                "run `--stage shared` first")
    ck = Path(read_json(rd.shared_done)["checkpoint"])
    return ck if ck.is_absolute() else rd.root / ck


# ---------------------------------------------------------------- finetune
def trajectory_operations(cfg: Config, theta: torch.Tensor, traj: int) -> list[int] | None:
    """The K operations trajectory `traj` applies (aws.trajectory: op_set), drawn from p_theta of
    its round with a generator seeded by the trajectory id, so a rerun draws the same set; None
    for per_image (every image draws from p_theta)."""
    if cfg.aws.trajectory != "op_set":
        return None
    g = torch.Generator().manual_seed((cfg.data.seed + 1 + traj) * 2654435761 % 2**63)  # apart from the loader's seed
    return ppo.draw_operations(theta, cfg.aws.parametrisation, cfg.aws.ops_per_trajectory, g)


def reward_of(history: list[dict[str, Any]], top_k: int, epochs: str = "best") -> float:
    """Mean of `top_k` validation top-1 accuracies of a fine-tune (aws.reward_top_k): its best
    ones, or (epochs="last", aws.reward_epochs) those of its last validated epochs."""
    accs = [float(h["val_top1"]) for h in history if "val_top1" in h]
    if not accs:
        raise ValueError("the fine-tune produced no validation accuracy (empty history)")
    chosen = accs[-top_k:] if epochs == "last" else sorted(accs, reverse=True)[:top_k]
    return sum(chosen) / len(chosen)


def finetune(cfg: Config, out_dir: Path, policy: Any, init_from: str | Path | None, *,
             seed_offset: int, dist: Any = None) -> tuple[TrainResult, float]:
    """The AWS proxy (one fine-tune): `init_from` (train_shared's weights) trained aws.finetune_epochs
    more epochs with `policy`, seeds train.seed / data.seed + seed_offset; the lr is the constant
    aws.finetune_lr, or (aws.finetune_schedule: continue) the last E2 epochs of the shared stage's
    schedule. Returns (the TrainResult, its reward: reward_of over aws.reward_top_k / reward_epochs)."""
    from hpcaug.train.loop import train

    a = cfg.aws
    tcfg = cfg.replace(**{"train.seed": cfg.train.seed + seed_offset, "data.seed": cfg.data.seed + seed_offset})
    if a.finetune_schedule == "continue":
        lr_args: dict[str, Any] = {"schedule_span": (a.shared_epochs, a.shared_epochs + a.finetune_epochs)}
    else:
        lr_args = {"lr": a.finetune_lr, "schedule": "constant"}
    res = train(tcfg, out_dir, [policy] * cfg.augment.copies, epochs=a.finetune_epochs, init_from=init_from,
                dist=dist, **lr_args)
    return res, reward_of(res.history, a.reward_top_k, a.reward_epochs)


def run_finetune(cfg: Config, run_dir: str | os.PathLike[str] | None, traj: int) -> dict[str, Any]:
    """One trajectory of the search: fine-tune the shared weights with what its round's p_theta
    gives it (aws.trajectory: op_set = K operations drawn once; per_image = p_theta itself).

    Writes only rounds/<r>/results/<traj>.json (atomically), or rounds/<r>/late/<traj>.json when
    the round's update ran while it trained (RunDir.write_result: kept, shown, not counted); the
    training dir's checkpoint is deleted afterwards (hundreds of trajectories x a ResNet-50
    checkpoint would fill the disk).
    """
    rd = RunDir(run_dir or cfg.run_path)
    rd.check_exists()
    r = round_of(cfg, traj)
    if rd.has_result(r, traj):
        log.info("finetune %d (round %d): already done", traj, r)
        return read_json(rd.result_path(r, traj))
    if rd.update_done(r):
        nxt = rd.rounds_done()
        hint = (f"all {cfg.aws.rounds} rounds (0-{cfg.aws.rounds - 1}) are updated: raise aws.rounds to search "
                "further" if nxt >= cfg.aws.rounds else
                f"the next round is {nxt}: `--stage finetune --round {nxt}`, or resume with `--stage search`")
        raise RuntimeError(f"round {r} is already updated; trajectory {traj} would not count: {hint}")
    theta = rd.theta(r)  # read when the task starts: the theta of its round
    ck = shared_checkpoint(rd)
    dist = _dist(cfg)
    operations = trajectory_operations(cfg, theta, traj)
    policy = aws_policy(theta, cfg) if operations is None else AWSOperationSet(operations)
    t0 = time.time()
    res, reward = finetune(cfg, rd.finetune_dir(r, traj), policy, ck, seed_offset=1 + traj, dist=dist)
    counts = torch.as_tensor(res.choice_counts).to(torch.int64).flatten()
    if counts.numel() != ppo.NUM_OPERATIONS:
        raise RuntimeError(f"train() returned {counts.numel()} choice counts, expected {ppo.NUM_OPERATIONS}")
    result = {
        "trajectory": traj, "round": r, "reward": reward,
        "val_top1": [float(h["val_top1"]) for h in res.history if "val_top1" in h], "history": res.history,
        "trajectory_design": cfg.aws.trajectory, "operations": operations,
        "choice_counts": counts.tolist(), "num_samples": int(counts.sum()),
        "host": socket.gethostname(), "slurm_job": os.environ.get("SLURM_JOB_ID", ""),
        "wall_s": time.time() - t0,
    }
    if dist.is_root:
        if not rd.write_result(r, traj, result):
            log.warning("finetune %d: round %d was updated while it trained: result kept as late (%s), not "
                        "counted", traj, r, rd.late_path(r, traj))
        ckp = Path(res.checkpoint)
        if ckp.exists() and rd.finetune_dir(r, traj) in ckp.parents:
            ckp.unlink()
    dist.barrier()
    return result


# ---------------------------------------------------------------- update
def gather(cfg: Config, rd: RunDir, r: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Round r's finished trajectories: (ids, weights [n, 1296], rewards [n]); only ids of round r.
    A row of weights is the trajectory's action for PPO (ppo.action_weights of aws.trajectory)."""
    res = {t: v for t, v in rd.results(r).items() if t in round_trajectories(cfg, r)}
    ids = sorted(res)
    rows = [ppo.action_weights(cfg.aws.trajectory, res[t].get("operations"), torch.tensor(res[t]["choice_counts"]))
            for t in ids]
    weights = torch.stack(rows) if rows else torch.zeros(0, ppo.NUM_OPERATIONS, dtype=torch.float64)
    rewards = torch.tensor([float(res[t]["reward"]) for t in ids], dtype=torch.float64)
    return ids, weights, rewards


def run_update(cfg: Config, run_dir: str | os.PathLike[str] | None, r: int) -> dict[str, Any]:
    """PPO update of round r: writes theta and PPO state of round r+1, policy.json, then update.json."""
    rd = RunDir(run_dir or cfg.run_path)
    rd.check_exists()
    with rd.update_lock(r):
        if rd.update_done(r):
            log.info("update %d: already done", r)
            return read_json(rd.update_path(r))
        theta = rd.theta(r)
        ids, weights, rewards = gather(cfg, rd, r)
        need, t = quorum_size(cfg), cfg.aws.trajectories_per_round
        if len(ids) < need:
            missing = [i for i in round_trajectories(cfg, r) if i not in ids]
            raise RuntimeError(
                f"update {r}: only {len(ids)} of {t} trajectories of round {r} have results; the quorum "
                f"(aws.quorum={cfg.aws.quorum}) needs {need}. Missing: {format_ranges(missing)}. Resubmit them with "
                f"`python -m hpcaug.submit --stage finetune --round {r} --config ...`, then `--stage update "
                f"--round {r}` (or `--stage search` to resume everything). Logs: {rd.logs_dir}")
        state_path = rd.ppo_state_path(r)
        state = ppo.PPOState.from_dict(read_pt(state_path)) if state_path.exists() else ppo.PPOState()
        a = cfg.aws
        settings = ppo_settings(cfg)
        lr = ppo.policy_lr(r, a.policy_lr, a.policy_lr_warmup_rounds)
        out = ppo.ppo_update(theta, weights, rewards, state, lr=lr, settings=settings,
                             parametrisation=a.parametrisation)
        write_pt(rd.ppo_state_path(r + 1), out.state.to_dict())
        write_pt(rd.theta_path(r + 1), {"theta": out.theta, "round": r + 1, "parametrisation": a.parametrisation})
        source = write_policy(cfg, rd, out.theta, rounds_done=r + 1, mean_reward=out.stats["mean_reward"])
        summary = {"round": r, "trajectories": ids, "rewards": rewards.tolist(), "missing":
                   [i for i in round_trajectories(cfg, r) if i not in ids], "trajectory_design": a.trajectory,
                   "policy_json": source, **out.stats}
        write_json(rd.update_path(r), summary)  # last: marks the round done
    log.info("update %d: %d rewards, mean %.4f, baseline %.4f, entropy %.3f, %d PPO epochs, KL %.5f",
             r, len(ids), out.stats["mean_reward"], out.stats["baseline"], out.stats["entropy"],
             out.stats["ppo_epochs"], out.stats["kl"])
    return summary


def ppo_settings(cfg: Config) -> ppo.PPOSettings:
    a = cfg.aws
    return ppo.PPOSettings(clip=a.ppo_clip, epochs=a.ppo_epochs, kl_stop=a.ppo_kl_stop,
                           betas=(a.adam_betas[0], a.adam_betas[1]), baseline_momentum=a.baseline_momentum,
                           baseline=a.baseline)


def write_policy(cfg: Config, rd: RunDir, theta: torch.Tensor, rounds_done: int, mean_reward: float) -> dict[str, Any]:
    """policy.json: the searched policy chosen by aws.result_policy (ppo.select_result) from the
    thetas of rounds 0..rounds_done (`theta` is the newest, not yet on disk, and `mean_reward` the
    newest round's, whose update.json is not written yet). Returns where it came from and why."""
    thetas = [rd.theta(i) for i in range(rounds_done)] + [theta]
    means = [float(read_json(rd.update_path(i))["mean_reward"]) for i in range(rounds_done - 1)] + [mean_reward]
    chosen, source = ppo.select_result(thetas, means, cfg.aws.result_policy, cfg.aws.result_window)
    write_json(rd.policy_path, aws_policy(chosen, cfg).to_dict())
    write_json(rd.search_state_path, {"rounds_done": rounds_done, "policy": "policy.json",
                                      "policy_source": source})
    return source


# ---------------------------------------------------------------- final
def run_final(cfg: Config, run_dir: str | os.PathLike[str] | None = None, policy: str | None = None) -> dict[str, Any]:
    """Train from scratch with the searched policy (or `policy`), aws.final_epochs epochs."""
    from hpcaug.train.stages import run_final as train_final

    rd = RunDir(run_dir or cfg.run_path)
    rd.check_exists()
    if rd.final_done.exists():
        log.info("final: already done (%s)", rd.final_done)
        return read_json(rd.final_done)
    spec = policy or str(rd.policy_path)
    if policy is None and not rd.policy_path.exists():
        raise FileNotFoundError(f"{rd.policy_path} missing: no update has run yet (run the search, or pass --policy)")
    dist = _dist(cfg)
    t0 = time.time()
    res = train_final(cfg, rd.root, spec, epochs=cfg.aws.final_epochs, dist=dist)
    out = {"policy": spec, "history": res.history, "checkpoint": str(res.checkpoint), "wall_s": time.time() - t0}
    if dist.is_root:
        write_json(rd.final_done, out)
    dist.barrier()
    return out

"""`python -m hpcaug.submit`: run or submit the AWS stages (and AdvAA) through submitit.

    python -m hpcaug.submit --stage search   --config configs/imagenet_resnet50_aws.yaml
    python -m hpcaug.submit --stage finetune --config C --array 0-499%20
    python -m hpcaug.submit --stage finetune --config C --round 3        # resubmit round 3's missing tasks
    python -m hpcaug.submit --stage update   --config C --round 3
    python -m hpcaug.submit --stage final    --config C [--policy P.json]
    python -m hpcaug.submit --stage status   --config C
    python -m hpcaug.submit --status RUN_DIR                             # the same, from the run dir alone

Everything is validated (config, data dir, policies, array range, SLURM reachable) before a job
is submitted. See docs/search.md.

hpcaug.search, hpcaug.status and hpcaug.report import torch (~2 s): they are imported inside the
functions that run a command, so `--help` and a usage error answer in a fraction of a second.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcaug.config import Config, load_config
from hpcaug.policy_names import is_policy_file, policy_arg

if TYPE_CHECKING:  # the search modules import torch: see the module docstring
    from hpcaug.search.jobs import Step
    from hpcaug.search.rundir import RunDir

STAGES = ("shared", "finetune", "update", "final", "search", "advaa", "status")
log = logging.getLogger("hpcaug.search")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hpcaug.submit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=STAGES)
    p.add_argument("--config", help="a YAML config (configs/*.yaml)")
    p.add_argument("--status", metavar="RUN_DIR", help="show where a run stands (stages, rounds, tasks, ETA) and exit")
    p.add_argument("--array", help="finetune: trajectory ids in SLURM syntax, e.g. 0-499 or 0-499%%20 "
                                   "(round = id // aws.trajectories_per_round)")
    p.add_argument("--round", type=int, help="finetune: the round whose missing trajectories to run; "
                                             "update: the round to update (default: the next one)")
    p.add_argument("--executor", choices=("slurm", "local", "inline"), help="default: cluster.executor")
    p.add_argument("--policy", type=policy_arg, help="final: a policy (a name such as randaugment-n2-m9, "
                                                      "docs/config.md, or a .json) instead of the run's policy.json")
    p.add_argument("--set", nargs="+", default=[], action="extend", metavar="section.key=value",
                   help="config overrides, e.g. --set aws.rounds=2 train.steps_per_epoch=4")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and exit instead of following the chain")
    return p


# ---------------------------------------------------------------- validation
def validate(cfg: Config, stage: str, ids: Sequence[int] | None, round_: int | None, policy: str | None) -> None:
    """Fail before anything is submitted: data dir, policies, array range, round, cluster.
    (Every config value was range-checked when the config loaded: hpcaug/config.py.)"""
    from hpcaug.search.jobs import check_array  # torch: see the module docstring

    if round_ is not None and stage not in ("finetune", "update"):
        raise ValueError(f"--round is for --stage finetune or update, not {stage}")
    if stage == "advaa":
        from hpcaug.search.advaa import validate_advaa_config  # the training stack: only for --stage advaa

        validate_advaa_config(cfg)  # else the job itself would refuse, after its submission
    if stage in ("shared", "finetune", "final", "search", "advaa"):
        check_data(cfg)
    if is_policy_file(cfg.augment.policy) and stage in ("search", "final", "advaa"):
        check_policy(cfg.augment.policy, "augment.policy")
    if policy is not None:
        check_policy(policy, "--policy")
    if ids is not None:
        check_array(cfg, ids)
    if round_ is not None and not 0 <= round_ < cfg.aws.rounds:
        raise ValueError(f"--round {round_} is outside 0..{cfg.aws.rounds - 1} (aws.rounds={cfg.aws.rounds})")
    if cfg.cluster.executor == "slurm" and stage != "status":
        check_slurm()


def check_data(cfg: Config) -> None:
    d = Path(cfg.data.dir)
    if not (d / "dataset.json").is_file():
        raise ValueError(f"data.dir {str(d)!r} has no dataset.json: prepare it first (data_prep/, e.g. "
                         "`python -m data_prep.fashion_mnist --out data/fashion_mnist` for the demo) or set data.dir")
    for split in {cfg.data.train_list, cfg.data.val_list}:
        if not (d / "lists" / f"{split}.txt").is_file():
            raise ValueError(f"data.dir {str(d)!r} has no lists/{split}.txt (data.train_list/val_list): "
                             "re-run data_prep or fix the list names")


def check_policy(spec: str, where: str) -> None:
    if is_policy_file(spec) and not Path(spec).is_file():
        raise ValueError(f"{where}: policy file {spec!r} not found")
    from hpcaug.ops.policy import load_policy  # torch: see the module docstring

    try:
        load_policy(spec)
    except (ValueError, KeyError) as e:
        raise ValueError(f"{where}: policy {spec!r} is invalid: {e}") from e


def check_slurm() -> None:
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise ValueError("executor 'slurm' needs sbatch and squeue on PATH; use --executor local or inline "
                         "to run without a cluster")
    proc = subprocess.run(["squeue", "-h", "-o", "%i", "-j", "1"], capture_output=True, text=True)
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
        raise ValueError(f"SLURM is not reachable ({proc.stderr.strip() or 'squeue failed'}); check SLURM_CONF, "
                         "or use --executor local|inline")


# ---------------------------------------------------------------- printing
def _progress_printer(rd: RunDir) -> Callable[..., None]:
    """A callback that prints each new event of the run dir (shared done, fine-tunes of a round,
    an update, final done) once, read through hpcaug.search.runview."""
    from hpcaug.search.operations import top_operations  # torch: see the module docstring
    from hpcaug.search.runview import AWSRun, read_run

    t0 = time.time()
    seen: set[str] = set()

    def show(*_: Any) -> None:
        try:
            run = read_run(rd.root)
        except ValueError:  # nothing written yet
            return
        if not isinstance(run, AWSRun):
            return
        events = []
        if run.shared is not None:
            events.append(("shared", "shared weights trained"))
        for st in run.rounds:  # rounds counted from 0, as --round R and rounds/<r>/
            r, n = st.index, len(st.results)
            nxt = run.round(r + 1).theta if st.update is not None else None
            if st.update is not None and nxt is not None:
                u, top = st.update, top_operations(nxt, run.parametrisation, 1)[0]
                events.append((f"u{r}", f"round {r} updated ({r + 1} of {run.planned_rounds} rounds): "
                                        f"{len(u['rewards'])} rewards, mean {u['mean_reward']:.4f} (best "
                                        f"{max(u['rewards']):.4f}), baseline {u['baseline']:.4f}, entropy "
                                        f"{u['entropy']:.3f}, top op {top.label} p={top.probability:.5f}"))
            elif n and st.update is None:
                events.append((f"r{r}-{n}", f"round {r}: {n}/{run.trajectories_per_round} fine-tunes done"))
            events += [(f"late{t}", f"round {r}: trajectory {t}'s result came after the round's update: kept in "
                                    f"{run.rd.late_path(r, t)}, not counted") for t in st.late]
        if run.final is not None:
            events.append(("final", "final training done"))
        for key, msg in events:
            if key not in seen:
                seen.add(key)
                print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    return show


def print_summary(rd: RunDir, k: int = 10) -> None:
    """The searched policy (policy.json: its top-k operations and why it is that theta), what moved
    it (elements that gained / lost mass and the rewards behind them), the final accuracy."""
    from hpcaug.search.evidence import movers_lines, searched_policy  # torch: see the module docstring
    from hpcaug.search.operations import top_operations
    from hpcaug.search.runview import AWSRun, read_run

    run = read_run(rd.root)
    n = run.rounds_done if isinstance(run, AWSRun) else 0
    if not isinstance(run, AWSRun) or not n or not rd.policy_path.exists():
        print("no update has run yet: no searched policy")
        return
    searched = searched_policy(run)  # policy.json's theta and the rule that chose it
    assert searched is not None
    print(f"\nSearched policy after {n} round(s) (policy.json: {searched.rule}, {searched.why or f'after {n} round(s)'}"
          f"), top {k} operations of 1296 (uniform = {1 / 1296:.5f}):")
    for op in top_operations(searched.theta, run.parametrisation, k):
        print(f"  {op.probability:.5f}  {op.label}")
    for line in movers_lines(run):
        print(line)
    hist = (run.final or {}).get("history") or []
    if hist:
        print(f"final training: {len(hist)} epochs, val top-1 {hist[-1].get('val_top1', float('nan')):.4f}")
    print(f"results: {rd.root}/ (policy.json, report/report.md, rounds/<r>/update.json, rounds/<r>/results/, "
          "shared/, final/, logs/)")


# ---------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    try:
        return _main(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: nothing was run or submitted
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a stage failed (e.g. an update without its quorum)
        logging.getLogger("hpcaug.search").debug("stage failed", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    if args.status:  # needs only the run dir: hpcaug.status reads it (and sacct when reachable)
        from hpcaug.status import run_status  # torch: see the module docstring

        print(run_status(args.status))
        return 0
    if not args.stage or not args.config:
        raise ValueError("--stage and --config are required (or --status RUN_DIR)")
    cfg = load_config(args.config, args.set)
    from hpcaug.search import aws, jobs  # torch: see the module docstring
    from hpcaug.search.rundir import RunDir
    from hpcaug.status import run_status

    if args.executor:
        cfg = cfg.replace(**{"cluster.executor": args.executor})
    ids, throttle = (None, 0)
    if args.array:
        if args.stage != "finetune":
            raise ValueError("--array is for --stage finetune")
        ids, throttle = jobs.parse_array(args.array)
    if args.policy and args.stage != "final":
        raise ValueError("--policy is for --stage final")
    validate(cfg, args.stage, ids, args.round, args.policy)

    if args.stage == "advaa":
        step = jobs.Step("advaa")
        return _execute(cfg, None, [step], args, throttle)
    if args.stage == "status":
        rd = RunDir(cfg.run_path)
        rd.check_exists()
        print(run_status(rd.root))
        print_summary(rd)
        return 0

    rd = aws.open_run(cfg)
    steps = _plan(cfg, rd, args, ids)
    if not steps:
        print(f"nothing to do: stage {args.stage} is already done in {rd.root}")
        if args.stage == "search":
            print_summary(rd)
        return 0
    print(f"{args.stage}: {len(steps)} step(s) to run with executor {cfg.cluster.executor}, run dir {rd.root}")
    for s in steps:
        print(f"  - {s.describe()}")
    rc = _execute(cfg, rd, steps, args, throttle)
    waited = not (args.no_wait and cfg.cluster.executor == "slurm")  # else the jobs have only been queued
    if args.stage == "search" and rc == 0 and waited:
        print_summary(rd)
        from hpcaug.report import write_report  # matplotlib: only once a search has finished

        print(f"report: {write_report(rd.root)}")
    elif args.stage == "finetune" and steps and steps[-1].kind == "finetune" and rc == 0:
        last = steps[-1].round
        if not rd.update_done(last):
            print(f"round {last}'s update is not part of this submission: run `--stage update --round {last}`")
    return rc


def _plan(cfg: Config, rd: RunDir, args: argparse.Namespace, ids: list[int] | None) -> list[Step]:
    """The steps `--stage` still has to run in this run dir (none when it is done)."""
    from hpcaug.search import aws, jobs  # torch: see the module docstring

    if args.stage == "search":
        return jobs.plan_search(cfg, rd)
    if args.stage == "shared":
        return [] if rd.shared_done.exists() else [jobs.Step("shared")]
    if args.stage == "final":
        return [] if rd.final_done.exists() else [jobs.Step("final", policy=args.policy)]
    r = rd.rounds_done() if args.round is None else args.round  # finetune, update: the next round by default
    if ids is None and r >= cfg.aws.rounds:  # (--round and --array were checked by validate)
        raise ValueError(f"--stage {args.stage}: all {cfg.aws.rounds} rounds are updated, the next would be round "
                         f"{r}, past aws.rounds={cfg.aws.rounds}: raise aws.rounds (--set aws.rounds=N) to search "
                         "further")
    if args.stage == "update":
        return [] if rd.update_done(r) else [jobs.Step("update", r)]
    if ids is None:  # finetune
        ids = list(aws.round_trajectories(cfg, r))
    elif args.round is not None:
        ids = [i for i in ids if aws.round_of(cfg, i) == args.round]
    return jobs.plan_finetune(cfg, rd, ids)


def _execute(cfg: Config, rd: RunDir | None, steps: list[Step], args: argparse.Namespace, throttle: int) -> int:
    from hpcaug.search import jobs  # torch: see the module docstring
    from hpcaug.search.rundir import RunDir

    if rd is None:  # advaa: its own directory under the run path
        rd = RunDir(cfg.run_path)
        rd.logs_dir.mkdir(parents=True, exist_ok=True)
    show = _progress_printer(rd)
    ex = cfg.cluster.executor
    if ex == "inline":
        jobs.run_inline(cfg, rd, steps, progress=show)
    elif ex == "local":
        jobs.run_local(cfg, rd, steps, progress=show)
    else:
        submitted = jobs.submit_slurm(cfg, rd, steps, throttle)
        if args.no_wait:
            print(f"submitted {len(submitted)} job(s); follow with `python -m hpcaug.submit --stage status "
                  f"--config {args.config}` or squeue")
            return 0
        ok = jobs.follow(cfg, rd, submitted, progress=show)
        if not ok:
            print(f"error: the chain ended before {steps[-1].describe()} finished; see {rd.logs_dir} and "
                  f"`python -m hpcaug.submit --stage status --config {args.config}`; rerun the same command to "
                  "resume", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

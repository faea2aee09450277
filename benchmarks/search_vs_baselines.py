"""Does the AWS search pay on real data? A searched policy vs none / uniform / RandAugment / AdvAA.

Regime: configs/fmnist_quality.yaml (small_resnet overfitting 1,000 Fashion-MNIST images, no base
augmentation: the policy decides the accuracy). Steps:
1. a real AWS search, inline (hpcaug.search.jobs.run_inline over plan_search: shared stage,
   aws.rounds x aws.trajectories_per_round fine-tunes of aws.finetune_epochs, PPO updates),
   with the regime's aws.* settings (op_set, K = 2 operations per fine-tune, ...);
2. final trainings from scratch (train.epochs) with (a) no augmentation, (b) the uniform AWS
   policy, (c) RandAugment n=2 m=9, (d) the searched policy.json, (e) AdvAA (hpcaug.search.advaa,
   joint training, M = --advaa-policies copies per image), over --seeds; top-1 on the
   10,000-image test set, mean +- std; for each ground truth, also a reference row
   (gt_not_harmful, gt_mix50_not_harmful: uniform over the operations without one of its harmful
   elements, goal (a) at its limit);
3. the issue-17 goals: (a) for each ground truth of benchmarks/element_ground_truth.py (each
   element alone; with --mix, at a raised share of the uniform policy), the searched policy holds
   at most half the uniform share of the operations that contain an element it found harmful
   (with each verdict's mean marginal and the rank correlation of the element marginals with each
   element's top-1 in that ground truth);
   (b) searched beats uniform and RandAugment by more than one std, and is within one std of
   the best baseline.

    .venv/bin/python benchmarks/element_ground_truth.py      # first: the harmful elements (~1-1.5 h)
    .venv/bin/python benchmarks/element_ground_truth.py --mix 0.5   # and/or in the mix (~1-1.5 h)
    .venv/bin/python benchmarks/search_vs_baselines.py       # ~1-1.5 h on 2 cores
    .venv/bin/python benchmarks/search_vs_baselines.py --policy runs/demo/policy.json   # a policy searched before

Search and training dirs are keyed by their settings and reused when the same settings run again.
Last line: RESULT search_vs_baselines <searched mean top-1> top1 vs best_baseline <best mean> top1 ratio=<r>
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _quality import (
    REPO,
    ground_truth_label,
    ground_truth_reference,
    ground_truths,
    harmful_elements,
    mean_std,
    regime,
    searched_training_name,
    settings_key,
    spearman,
    test_top1,
    train_and_test,
    training_dir,
)

from hpcaug.config import Config
from hpcaug.ops.policy import AWSPolicy, load_policy
from hpcaug.ops.spaces import AWS_SPACE
from hpcaug.search import power, ppo
from hpcaug.search.aws import open_run
from hpcaug.search.evidence import movers_lines
from hpcaug.search.jobs import plan_search, run_inline
from hpcaug.search.runview import AWSRun, read_run
from hpcaug.train.dist import init_dist


def aws_search(cfg: Config, out: Path) -> Path:
    """A real AWS search with the regime's settings, run in this process; returns its run dir."""
    run = out / f"search_{settings_key(cfg, 'data', 'train', 'aws')}"
    scfg = cfg.replace(**{"run_dir": str(run)})
    rd = open_run(scfg, run)
    run_inline(scfg, rd, plan_search(scfg, rd, with_final=False))
    return run


def harmful_mass(pol: AWSPolicy, harmful: list[str]) -> tuple[float, float]:
    """(the mass of the operations containing a harmful element under the searched policy, under uniform)."""
    if not harmful:
        return 0.0, 0.0
    mask = power.containing(harmful)
    return float(pol.probs()[mask].sum()), float(AWSPolicy.uniform().probs()[mask].sum())


def agreement_lines(pol: AWSPolicy, ground_truth: Path) -> list[str]:
    """How the searched policy's element marginals agree with the ground truth: each verdict's
    share of the policy against uniform, and the rank correlation of the marginals with each
    element's top-1 in that ground truth (over the elements it trained)."""
    gt = json.loads(ground_truth.read_text())
    marg = ppo.element_marginals(pol.theta, pol.parametrisation) * AWS_SPACE.num_elements
    names = [e.name for e in AWS_SPACE.elements]
    trained = [i for i, n in enumerate(names) if n in gt["top1"]]
    lines = []
    for verdict in ("harmful", "neutral", "helpful"):
        idx = [i for i in trained if gt["verdict"][names[i]] == verdict]
        if idx:
            lines.append(f"  {verdict:8s} {len(idx):2d} elements: {float(marg[idx].mean()):.2f} x uniform on average "
                         f"(min {float(marg[idx].min()):.2f}, max {float(marg[idx].max()):.2f})")
    top1 = torch.tensor([statistics.fmean(gt["top1"][names[i]]) for i in trained])
    rho = spearman(top1, marg[trained].float())
    lines.append(f"  rank correlation (Spearman) of the element marginals with their top-1 here: {rho:+.2f} "
                 f"over {len(trained)} elements")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="", help="a searched policy.json; empty = run the AWS search inline")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--advaa-policies", type=int, default=4, help="AdvAA M (0 = skip AdvAA)")
    ap.add_argument("--ground-truth", nargs="*", default=[], metavar="RESULT_JSON",
                    help="element_ground_truth.py result.json file(s) (default: every one of this regime under "
                         "runs/element_ground_truth/)")
    ap.add_argument("--set", nargs="*", default=[], metavar="section.key=value", help="overrides of the regime")
    ap.add_argument("--out", default=str(REPO / "runs" / "search_vs_baselines"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = regime(args.set)
    out = Path(args.out)
    dist = init_dist(cfg.dist)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    run = None if args.policy else aws_search(cfg, out)
    policy_path = Path(args.policy) if run is None else run / "policy.json"
    log(f"searched policy: {policy_path}")
    gts = [Path(p) for p in args.ground_truth] if args.ground_truth else ground_truths(cfg)
    policies = {"none": load_policy("none"), "uniform": load_policy("uniform"),
                "randaugment": load_policy("randaugment-n2-m9"), "aws_searched": load_policy(str(policy_path))}
    keys = {"aws_searched": searched_training_name(policy_path)}  # training dir names, where not the row's
    for gt in gts:
        ref, keys[ref], policies[ref] = ground_truth_reference(gt)
    acc: dict[str, list[float]] = {}
    for name, pol in policies.items():
        acc[name] = [train_and_test(cfg, pol, keys.get(name, name), s, dist) for s in args.seeds]
        log(f"{name:14s} {' '.join(f'{a:.4f}' for a in acc[name])}")
    if args.advaa_policies > 0:
        acc["advaa"] = advaa_runs(cfg, args.advaa_policies, args.seeds, dist)
        log(f"{'advaa':14s} {' '.join(f'{a:.4f}' for a in acc['advaa'])}")
    report(cfg, args, acc, policy_path, gts, run, time.time() - t0)


def advaa_runs(cfg: Config, m: int, seeds: list[int], dist: Any) -> list[float]:
    """AdvAA joint training in the same regime: M copies of each image, the controller's policies."""
    from hpcaug.search.advaa import run_advaa

    acfg = cfg.replace(**{"augment.copies": m, "advaa.num_policies": m})
    out = []
    for s in seeds:
        scfg = acfg.replace(**{"train.seed": s, "data.seed": s})
        res = run_advaa(scfg, training_dir(cfg, f"advaa_m{m}", s), dist=dist)
        out.append(test_top1(scfg, res.train.checkpoint, dist))
    return out


def report(cfg: Config, args: argparse.Namespace, acc: dict[str, list[float]], policy_path: Path, gts: list[Path],
           run: Path | None, seconds: float) -> None:
    a = cfg.aws
    print(f"\nregime: {cfg.train.model}, {cfg.data.train_list} of {Path(cfg.data.dir).name}, "
          f"{cfg.train.epochs} epochs, "
          f"no base augmentation; seeds {args.seeds}; top-1 on the 10,000-image test set; {seconds:.0f} s")
    if run is not None:
        print(f"search: {a.trajectory} K={a.ops_per_trajectory}, {a.parametrisation}, {a.rounds} rounds x "
              f"{a.trajectories_per_round} fine-tunes of {a.finetune_epochs} epochs, policy lr {a.policy_lr}, "
              f"baseline {a.baseline}, result {a.result_policy}; run dir {run}")
        view = read_run(run)
        if isinstance(view, AWSRun):
            print("\n".join(movers_lines(view)))
    print("\n| policy | test top-1 mean +- std | per seed |\n|---|---|---|")
    stats = {k: mean_std(v) for k, v in acc.items()}
    for name, xs in acc.items():
        print(f"| {name} | {stats[name][0]:.4f} +- {stats[name][1]:.4f} | {', '.join(f'{x:.4f}' for x in xs)} |")
    searched = load_policy(str(policy_path))
    assert isinstance(searched, AWSPolicy), "goal (a) needs an AWS policy.json"
    print()
    if not gts:
        print("goal (a): no ground truth under runs/element_ground_truth/: run benchmarks/element_ground_truth.py "
              "first")
    for gt in gts:
        harmful = harmful_elements(gt) or []
        mass, uni = harmful_mass(searched, harmful)
        print(f"goal (a), ground truth {ground_truth_label(gt)} ({gt}): harmful elements: "
              f"{', '.join(harmful) or 'none'}; "
              f"their operations hold {mass:.4f} of the searched policy vs {uni:.4f} under uniform "
              f"({mass / uni if uni else 0:.2f} x); at most half: {mass <= uni / 2}")
        print("\n".join(agreement_lines(searched, gt)))
        ref = ground_truth_reference(gt)[0]  # a reference, not a baseline: it is made from the ground truth
        print(f"reference: {ref} (goal (a) at 0 x uniform) {stats[ref][0]:.4f}; uniform {stats['uniform'][0]:.4f}")
    ours, ours_sd = stats["aws_searched"]
    base = {k: v for k, v in stats.items() if k != "aws_searched" and not k.startswith("gt_")}
    best = max(base, key=lambda k: base[k][0])
    for name in ("uniform", "randaugment"):
        margin = ours - base[name][0]
        print(f"goal (b): searched - {name:11s} = {margin:+.4f}; more than one std (of either): "
              f"{margin > max(ours_sd, base[name][1])}")
    gap = base[best][0] - ours
    print(f"goal (b): best baseline {best} {base[best][0]:.4f}; searched within one std of it: "
          f"{gap <= max(ours_sd, base[best][1])} (gap {gap:+.4f})")
    print(f"RESULT search_vs_baselines {ours:.4f} top1 vs best_baseline {base[best][0]:.4f} top1 "
          f"ratio={ours / base[best][0]:.3f}")


if __name__ == "__main__":
    main()

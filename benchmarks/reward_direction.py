"""Does the AWS reward point where final accuracy does? The fine-tune proxy vs training from scratch.

A search can only find what its reward prefers. In the quality regime (configs/fmnist_quality.yaml)
each policy below is scored twice:
- **reward**: the AWS proxy exactly as a search trajectory computes it (hpcaug.search.aws.finetune:
  the shared weights fine-tuned aws.finetune_epochs with the policy, at the constant
  aws.finetune_lr or through the end of the shared stage's schedule (aws.finetune_schedule);
  reward = mean of the best or last (aws.reward_epochs) aws.reward_top_k validation top-1 on
  search_val), one fine-tune per seed. Shared weights: the uniform policy for aws.shared_epochs
  (aws.train_shared, run_shared's recipe), or none with --shared noaug (the paper's "train without
  augmentation" proxy, table 5);
- **from scratch**: test top-1 after train.epochs from scratch, in the training tree that
  search_vs_baselines.py and element_ground_truth.py share (finished trainings are reused).

Policies: none, uniform, RandAugment n2 m9, gt_not_harmful (uniform over the operations without
an element element_ground_truth.py found harmful, when its result exists) and --policy (a searched
policy.json, e.g. runs/search_vs_baselines/search_<key>/policy.json).

    .venv/bin/python benchmarks/reward_direction.py                  # ~10 min on 2 cores (reuses trainings)
    .venv/bin/python benchmarks/reward_direction.py --set aws.finetune_epochs=10 aws.finetune_lr=0.4
    .venv/bin/python benchmarks/reward_direction.py --shared noaug --policy runs/demo/policy.json
    .venv/bin/python benchmarks/reward_direction.py --seeds 0 1 --set aws.finetune_schedule=continue \
        aws.finetune_epochs=30 aws.reward_epochs=last     # the final training's second half as the proxy

Last line: RESULT reward_direction <reward(uniform) - reward(none)> reward vs from_scratch
<top1(uniform) - top1(none)> top1 ratio=<reward gap / top-1 gap> (a negative ratio: the reward
prefers the other end of the augmentation strength than training from scratch does).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from _quality import (
    default_ground_truth,
    ground_truth_reference,
    mean_std,
    regime,
    searched_training_name,
    spearman,
    train_and_test,
    training_dir,
)

from hpcaug.ops.policy import AWSPolicy, NoPolicy, Policy, load_policy
from hpcaug.search.aws import finetune, train_shared
from hpcaug.train.dist import init_dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="", help="a searched policy.json to score as well")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--shared", choices=["uniform", "noaug"], default="uniform",
                    help="the shared weights' policy (uniform: the AWS design)")
    ap.add_argument("--ground-truth", default="", help="element_ground_truth.py's result.json (default: the "
                                                       "one of this regime under runs/element_ground_truth/)")
    ap.add_argument("--set", nargs="*", default=[], metavar="section.key=value", help="overrides of the regime")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = regime(args.set)
    dist = init_dist(cfg.dist)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    policies: dict[str, Policy] = {"none": NoPolicy(), "uniform": load_policy("uniform"),
                                   "randaugment": load_policy("randaugment-n2-m9")}
    names = {k: k for k in policies}  # training dir names: the ones search_vs_baselines.py trains in
    gt = Path(args.ground_truth) if args.ground_truth else default_ground_truth(cfg)
    if gt.is_file():
        ref, names[ref], policies[ref] = ground_truth_reference(gt)
    if args.policy:
        policies["searched"] = load_policy(args.policy)
        names["searched"] = searched_training_name(Path(args.policy))

    a = cfg.aws
    shared_policy = AWSPolicy.uniform(a.parametrisation) if args.shared == "uniform" else NoPolicy()
    # continue: the shared stage is the first E1 epochs of an E1 + E2 schedule (another checkpoint)
    whole = a.shared_epochs + a.finetune_epochs  # the schedule's length under continue
    cont = f"_of{whole}" if a.finetune_schedule == "continue" else ""
    shared = train_shared(cfg, training_dir(cfg, f"shared_{args.shared}_e{a.shared_epochs}{cont}", 0),
                          shared_policy, dist=dist).checkpoint
    log(f"shared weights ({args.shared}, {a.shared_epochs} epochs{f' of {whole}' if cont else ''}): {shared}")
    lr_key = f"cont{whole}" if cont else f"lr{a.finetune_lr:g}"
    ft_key = f"ft_{args.shared}_e{a.shared_epochs}_{a.finetune_epochs}ep_{lr_key}_top{a.reward_top_k}"
    reward: dict[str, list[float]] = {}
    top1: dict[str, list[float]] = {}
    for name, pol in policies.items():
        reward[name] = [finetune(cfg, training_dir(cfg, f"{ft_key}/{names[name]}", s), pol, shared,
                                 seed_offset=1000 + s, dist=dist)[1] for s in args.seeds]
        top1[name] = [train_and_test(cfg, pol, names[name], s, dist) for s in args.seeds]
        log(f"{name:14s} reward {' '.join(f'{x:.4f}' for x in reward[name])}   "
            f"from scratch {' '.join(f'{x:.4f}' for x in top1[name])}")

    ft_lr = (f"the last {a.finetune_epochs} of the same {whole}-epoch "
             f"{cfg.train.schedule} schedule" if cont else
             f"{a.finetune_epochs} epochs at lr {a.finetune_lr:g} (per 256)")
    print(f"\nregime: {cfg.train.model}, {cfg.data.train_list} of {Path(cfg.data.dir).name}; reward: shared "
          f"{args.shared} {a.shared_epochs} epochs + fine-tune {ft_lr}, {a.reward_epochs} {a.reward_top_k} val "
          f"epochs on {cfg.data.val_list}; from scratch: {cfg.train.epochs} epochs, test top-1; seeds {args.seeds}; "
          f"{time.time() - t0:.0f} s\n")
    print("| policy | AWS reward mean +- std | from-scratch top-1 mean +- std |\n|---|---|---|")
    rm = {k: mean_std(v) for k, v in reward.items()}
    tm = {k: mean_std(v) for k, v in top1.items()}
    for name in policies:
        print(f"| {name} | {rm[name][0]:.4f} +- {rm[name][1]:.4f} | {tm[name][0]:.4f} +- {tm[name][1]:.4f} |")
    rho = spearman(torch.tensor([rm[k][0] for k in policies]), torch.tensor([tm[k][0] for k in policies]))
    best_r, best_t = max(rm, key=lambda k: rm[k][0]), max(tm, key=lambda k: tm[k][0])
    print(f"\nthe reward's best policy: {best_r}; from scratch: {best_t}; rank correlation (Spearman) of the "
          f"two over {len(policies)} policies: {rho:+.2f}")
    dr = rm["uniform"][0] - rm["none"][0]
    dt = tm["uniform"][0] - tm["none"][0]
    print(f"RESULT reward_direction {dr:+.4f} reward vs from_scratch {dt:+.4f} top1 ratio={dr / dt:.3f}")


if __name__ == "__main__":
    main()

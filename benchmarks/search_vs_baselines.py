"""Final test accuracy of a searched AWS policy vs baselines and AdvAA, on Fashion-MNIST.

Each policy trains `train.model` from scratch with `hpcaug.train.train` (the loop of the final
stage) on the full train list, over several seeds, and is scored by top-1 on the 10,000-image
test list (`val`):

  (a) none   (b) uniform (the AWS shared stage's policy)   (c) RandAugment (n=2, m=9)
  (d) AWS-searched: `--policy runs/demo/policy.json`, or (default) a real AWS search run inline
      here (shared stage, PPO rounds of fine-tunes, `hpcaug.search.jobs.run_inline`) with the
      demo config's proxy settings
  (e) AdvAA: `hpcaug.search.advaa.run_advaa` (joint training of the network and the
      controller; M = advaa.num_policies copies per image, so M times the rows per step)

Same model, batch, lr, steps and epochs for all; the tables print mean +- std over `--seeds`.
The defaults are tiny (tiny_resnet 32x32, batch 32, 4 x 24 steps: ~10 min on 2 cores) and
noisy; the measured setting (benchmarks/README.md) is the reduced-data one of AutoAugment:
final training and search both on the 4,000-image `search_train` list, ~70 min on 2 cores:

    .venv/bin/python benchmarks/search_vs_baselines.py --train-list search_train --steps 0 --epochs 15 \
        --lr 0.4 --rounds 12 --trajectories 12 --shared-epochs 5 --parametrisation factorised \
        --finetune-lr 0.1 --advaa-policies 2
    .venv/bin/python benchmarks/search_vs_baselines.py --policy runs/demo/policy.json   # a policy searched before

Last line: RESULT search_vs_baselines <searched mean top-1> top1 vs best_baseline <best mean> top1 ratio=<r>
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpcaug.config import Config, load_config  # noqa: E402
from hpcaug.data import build_val_loader  # noqa: E402
from hpcaug.ops.policy import load_policy  # noqa: E402
from hpcaug.train import build_model, evaluate, load_checkpoint, train  # noqa: E402
from hpcaug.train.dist import init_dist  # noqa: E402


def common(args: argparse.Namespace) -> dict[str, Any]:
    return {"data.dir": str(Path(args.data).resolve()), "data.batch_size": args.batch_size,
            "data.workers": args.workers, "train.log_interval": 10 ** 6, "train.model": args.model,
            **({"train.lr": args.lr} if args.lr > 0 else {})}


def test_top1(cfg: Config, ckpt: Path, dist: Any, split: str) -> float:
    loader = build_val_loader(cfg, dist.rank, dist.size, dist.device, split=split)
    try:
        model = build_model(cfg.train.model, loader.num_classes)
        model.load_state_dict(load_checkpoint(ckpt)["model"])
        return evaluate(model, loader, dist)["val_top1"]
    finally:
        loader.close()


def aws_search(args: argparse.Namespace, out: Path) -> Path:
    """A real AWS search (configs/demo.yaml's stages) run in this process; returns policy.json."""
    from hpcaug.search.aws import open_run
    from hpcaug.search.jobs import plan_search, run_inline

    # keyed by the search settings: a finished search is reused, never one with other settings
    run = out / (f"aws_search_r{args.rounds}_t{args.trajectories}_e{args.shared_epochs}_{args.parametrisation}"
                 f"_ftlr{args.finetune_lr:g}_plr{args.policy_lr:g}")
    cfg = load_config(REPO / "configs" / "demo.yaml").replace(**{
        **common(args), "run_dir": str(run), "aws.rounds": args.rounds,
        "aws.trajectories_per_round": args.trajectories, "aws.shared_epochs": args.shared_epochs,
        "aws.parametrisation": args.parametrisation, "aws.finetune_lr": args.finetune_lr,
        "aws.policy_lr": args.policy_lr, "train.steps_per_epoch": args.steps})
    rd = open_run(cfg, run)
    run_inline(cfg, rd, plan_search(cfg, rd, with_final=False))
    return rd.policy_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO / "data" / "fashion_mnist"))
    ap.add_argument("--out", default=str(REPO / "runs" / "search_vs_baselines"))
    ap.add_argument("--policy", default="", help="a searched policy.json; empty = run the AWS search inline")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=4, help="final training epochs (every policy, AdvAA too)")
    ap.add_argument("--steps", type=int, default=24, help="train.steps_per_epoch")
    ap.add_argument("--model", default="tiny_resnet", help="train.model (search, final trainings and AdvAA)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.0,
                    help="train.lr (per 256 images): final trainings and the inline search's shared stage; 0 = demo.yaml's")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--train-list", default="train")
    ap.add_argument("--test-split", default="val", help="the list scored (val = the Fashion-MNIST test set)")
    ap.add_argument("--rounds", type=int, default=3, help="inline AWS search: PPO rounds")
    ap.add_argument("--trajectories", type=int, default=4, help="inline AWS search: fine-tunes per round")
    ap.add_argument("--shared-epochs", type=int, default=3, help="inline AWS search: shared stage epochs")
    ap.add_argument("--parametrisation", default="joint", choices=["joint", "factorised"], help="inline AWS search")
    ap.add_argument("--finetune-lr", type=float, default=0.04, help="inline AWS search: aws.finetune_lr (per 256)")
    ap.add_argument("--policy-lr", type=float, default=0.1, help="inline AWS search: aws.policy_lr")
    ap.add_argument("--advaa-policies", type=int, default=4, help="AdvAA M (0 = skip AdvAA)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("hpcaug").setLevel(logging.INFO if args.verbose else logging.WARNING)
    t0 = time.time()
    # every training dir is keyed by its settings (a finished one is reused, never a different one)
    lr_key = f"_lr{args.lr:g}" if args.lr > 0 else ""
    model_key = "" if args.model == "tiny_resnet" else f"_{args.model}"
    out = Path(args.out) / f"bs{args.batch_size}_steps{args.steps}_{args.train_list}{lr_key}{model_key}"

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    policy_path = Path(args.policy) if args.policy else aws_search(args, out)
    log(f"searched policy: {policy_path}")

    cfg = load_config(REPO / "configs" / "demo.yaml").replace(**{
        **common(args), "data.train_list": args.train_list, "train.steps_per_epoch": args.steps,
        "train.epochs": args.epochs})
    dist = init_dist(cfg.dist)
    policies = {"none": load_policy("none"), "uniform": load_policy("uniform"),
                "randaugment": load_policy("randaugment-n2-m9"),
                "aws_searched": load_policy(str(policy_path))}
    acc: dict[str, list[float]] = {}
    for name, pol in policies.items():
        for s in args.seeds:
            scfg = cfg.replace(**{"train.seed": s, "data.seed": s})
            res = train(scfg, out / "final" / f"e{args.epochs}_s{s}" / name, [pol], epochs=args.epochs, dist=dist)
            acc.setdefault(name, []).append(test_top1(scfg, res.checkpoint, dist, args.test_split))
        log(f"{name:14s} {['%.4f' % a for a in acc[name]]}")
    if args.advaa_policies > 0:
        from hpcaug.search.advaa import run_advaa

        m = args.advaa_policies
        acfg = load_config(REPO / "configs" / "demo_advaa.yaml").replace(**{
            **common(args), "data.train_list": args.train_list, "train.steps_per_epoch": args.steps,
            "train.epochs": args.epochs, "augment.copies": m, "advaa.num_policies": m,
            "train.lr": cfg.train.lr, "train.warmup_epochs": cfg.train.warmup_epochs,
            "train.label_smoothing": cfg.train.label_smoothing})
        for s in args.seeds:
            scfg = acfg.replace(**{"train.seed": s, "data.seed": s})
            res = run_advaa(scfg, out / "advaa" / f"e{args.epochs}_m{m}_s{s}", dist=dist)
            acc.setdefault("advaa", []).append(test_top1(scfg, res.train.checkpoint, dist, args.test_split))
        log(f"{'advaa':14s} {['%.4f' % a for a in acc['advaa']]}")

    def ms(xs: list[float]) -> tuple[float, float]:
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    print()
    steps = f"{args.steps} steps" if args.steps else "full epochs"
    shown = policy_path.resolve().relative_to(REPO) if policy_path.resolve().is_relative_to(REPO) else policy_path
    print(f"settings: {args.model} 32x32, batch {args.batch_size}, lr {cfg.train.lr:g}/256, {args.epochs} x {steps} on "
          f"'{args.train_list}', seeds {args.seeds}, top-1 on '{args.test_split}'; searched policy {shown}; "
          f"{time.time() - t0:.0f} s")
    print()
    print("| policy | test top-1 mean +- std | per seed |")
    print("|---|---|---|")
    for name, xs in acc.items():
        m, sd = ms(xs)
        print(f"| {name} | {m:.4f} +- {sd:.4f} | {', '.join('%.4f' % x for x in xs)} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"args": vars(args), "policy": str(policy_path), "top1": acc}, indent=2))
    ours, ours_sd = ms(acc["aws_searched"])
    base = {k: ms(v) for k, v in acc.items() if k != "aws_searched"}
    best = max(base, key=lambda k: base[k][0])
    print()
    # the goal: searched above uniform and RandAugment by more than one std (of either)
    for name in dict.fromkeys(["uniform", "randaugment", best]):  # best may be one of them
        margin = ours - base[name][0]
        print(f"searched - {name:12s} = {margin:+.4f}; more than one std of both: "
              f"{margin > max(ours_sd, base[name][1])}{'  (best baseline)' if name == best else ''}")
    print(f"RESULT search_vs_baselines {ours:.4f} top1 vs best_baseline {base[best][0]:.4f} top1 "
          f"ratio={ours / base[best][0]:.3f}")


if __name__ == "__main__":
    main()

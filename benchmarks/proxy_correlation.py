"""Does the AWS proxy rank policies like full training does? (AWS paper, section 4.4, table 5)

K fixed policies spread from weak to strong (no augmentation, the uniform AWS policy, and AWS
policies concentrated on one operation = two elements of chosen severity) are scored

- **ground truth**: trained from scratch with the policy (`hpcaug.train.train`, the loop of
  every stage), top-1 on a separate split (default: the 10,000-image Fashion-MNIST test list),
  averaged over `--seeds`;
- by the four proxies of table 5, all on the `search_val` split (the AWS reward):
  `shared_uniform+ft` (ours: shared weights trained with the uniform policy, then fine-tuned
  with the policy, as `aws.run_finetune` does), `shared_noaug+ft` (shared weights trained
  without augmentation, then fine-tuned), `random_init+ft` (fine-tuned from random weights),
  `shared_uniform+aug_val` (the shared weights evaluated on the policy-augmented val split,
  no fine-tune; Fast AutoAugment's proxy).

Pearson and Spearman (scipy) of each proxy against the ground truth are printed beside the
paper's Pearson r (ResNet-18, CIFAR-10). CPU defaults are tiny (tiny_resnet, 32x32, batch 32,
32 steps per epoch) and therefore noisy: read the numbers with that in mind.

    .venv/bin/python benchmarks/proxy_correlation.py                  # defaults, ~10-16 min on 2 cores
    .venv/bin/python benchmarks/proxy_correlation.py --k 11 --epochs 8 --seeds 0 1 2 3 --steps 64

Training dirs go under --out (default runs/proxy_correlation/<settings>/; a finished training
is reused when the same settings run again; delete the dir to start over).
Last line: RESULT proxy_correlation <r> pearson vs aws_paper 0.85 pearson ratio=<r/0.85>
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpcaug.config import Config, load_config  # noqa: E402
from hpcaug.data import build_train_loader, build_val_loader  # noqa: E402
from hpcaug.ops.policy import AWSPolicy, NoPolicy, aws_theta_size  # noqa: E402
from hpcaug.ops.spaces import AWS_SPACE  # noqa: E402
from hpcaug.search.aws import finetune, train_shared  # noqa: E402
from hpcaug.train import train  # noqa: E402
from hpcaug.train.checkpoint import load_checkpoint  # noqa: E402
from hpcaug.train.dist import init_dist  # noqa: E402
from hpcaug.train.loop import evaluate  # noqa: E402
from hpcaug.train.models import build_model  # noqa: E402

PAPER_PEARSON = {"shared_uniform+ft": 0.85, "shared_noaug+ft": 0.55, "random_init+ft": 0.36,
                 "shared_uniform+aug_val": 0.045}
PROXIES = tuple(PAPER_PEARSON)

# Single AWS operations (element pairs), ordered so that the first K stay spread in severity.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("Invert", "Equalize"),          # strong photometric: the image inverted (val images are not)
    ("Rotate:3", "TranslateX:3"),    # mild geometric
    ("ShearX:9", "Rotate:9"),        # strong geometric
    ("Brightness:3", "Sharpness:3"),  # mild photometric
    ("TranslateX:9", "TranslateY:9"),  # strong translation
    ("Posterize:9", "Contrast:9"),   # strong photometric
    ("Equalize", "AutoContrast"),    # free ops
    ("ShearY:6", "Solarize:6"),
    ("Invert", "Solarize:3"),        # milder than it looks: Solarize turns the inverted background back
)


def concentrated_policy(e1: str, e2: str, logit: float = 12.0) -> AWSPolicy:
    """AWSPolicy with (almost) all mass on the operation (e1, e2): theta = +logit there, -logit elsewhere."""
    k = AWS_SPACE.element_index(e1) * AWS_SPACE.num_elements + AWS_SPACE.element_index(e2)
    theta = torch.full((aws_theta_size("joint"),), -logit)
    theta[k] = logit
    return AWSPolicy(theta)


def policy_set(k: int) -> list[tuple[str, Any]]:
    pols: list[tuple[str, Any]] = [("none", NoPolicy()), ("uniform", AWSPolicy.uniform())]
    pols += [(f"{a}+{b}", concentrated_policy(a, b)) for a, b in OPERATIONS]
    if not 2 <= k <= len(pols):
        raise SystemExit(f"--k must be in 2..{len(pols)}")
    return pols[:k]


def base_config(args: argparse.Namespace) -> Config:
    cfg = load_config(REPO / "configs" / "demo.yaml")
    return cfg.replace(**{
        "data.dir": str(Path(args.data).resolve()), "data.batch_size": args.batch_size,
        "data.workers": args.workers, "train.steps_per_epoch": args.steps, "train.log_interval": 10 ** 6,
        "train.epochs": args.epochs, "aws.finetune_epochs": args.finetune_epochs,
        "aws.shared_epochs": args.shared_epochs,
        **({"aws.finetune_lr": args.finetune_lr} if args.finetune_lr else {}),
    })


def load_model(cfg: Config, ckpt: Path, num_classes: int) -> torch.nn.Module:
    model = build_model(cfg.train.model, num_classes)
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    return model


def eval_on(cfg: Config, model: torch.nn.Module, dist: Any, split: str) -> float:
    loader = build_val_loader(cfg, dist.rank, dist.size, dist.device, split=split)
    try:
        return evaluate(model, loader, dist)["val_top1"]
    finally:
        loader.close()


def eval_augmented(cfg: Config, model: torch.nn.Module, dist: Any, policy: Any) -> float:
    """Top-1 on the val split with `policy` applied (the train loader over the val list, no random
    crop or flip: only the policy differs from the plain val preprocessing)."""
    ecfg = cfg.replace(**{"data.crop_scale": (1.0, 1.0), "data.flip": False, "train.steps_per_epoch": 0,
                          "data.batch_size": 50})
    loader = build_train_loader(ecfg, [policy], dist.rank, dist.size, dist.device, split=cfg.data.val_list)
    try:
        loader.set_epoch(0)
        return evaluate(model, loader, dist)["val_top1"]
    finally:
        loader.close()


def correlations(x: list[float], y: list[float]) -> tuple[float, float]:
    from scipy.stats import pearsonr, spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan"), float("nan")
    return float(pearsonr(x, y)[0]), float(spearmanr(x, y)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO / "data" / "fashion_mnist"))
    ap.add_argument("--out", default=str(REPO / "runs" / "proxy_correlation"))
    ap.add_argument("--k", type=int, default=8, help="number of policies (2..11)")
    ap.add_argument("--epochs", type=int, default=6, help="ground-truth training epochs from scratch")
    ap.add_argument("--shared-epochs", type=int, default=3, help="E1 of the shared stages (uniform / no aug)")
    ap.add_argument("--finetune-epochs", type=int, default=1, help="E2 of the fine-tune proxies")
    ap.add_argument("--finetune-lr", type=float, default=0.0, help="0 = aws.finetune_lr of configs/demo.yaml")
    ap.add_argument("--steps", type=int, default=32, help="train.steps_per_epoch")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="ground-truth seeds (mean over them)")
    ap.add_argument("--gt-split", default="val", help="list the ground truth is measured on (val = test set)")
    ap.add_argument("--verbose", action="store_true", help="the training loop's per-epoch log lines")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("hpcaug").setLevel(logging.INFO if args.verbose else logging.WARNING)
    if not (Path(args.data) / "dataset.json").is_file():
        raise SystemExit(f"{args.data}: no dataset.json; run "
                         f".venv/bin/python -m data_prep.fashion_mnist --out {args.data}")

    t0 = time.time()
    # every training dir is keyed by its settings (a finished one is reused, never a different one)
    out = Path(args.out) / f"bs{args.batch_size}_steps{args.steps}_lr{args.finetune_lr:g}"
    cfg = base_config(args)
    dist = init_dist(cfg.dist)
    pols = policy_set(args.k)
    ncls = build_val_loader(cfg, split=cfg.data.val_list).num_classes

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    # ---- ground truth: from scratch with the policy
    gt: dict[str, float] = {}
    gt_seeds: dict[str, list[float]] = {}
    for name, pol in pols:
        accs = []
        for s in args.seeds:
            scfg = cfg.replace(**{"train.seed": s, "data.seed": s})
            res = train(scfg, out / "gt" / f"e{args.epochs}_s{s}" / name, [pol], epochs=args.epochs, dist=dist)
            accs.append(eval_on(scfg, load_model(scfg, res.checkpoint, ncls), dist, args.gt_split))
        gt[name], gt_seeds[name] = sum(accs) / len(accs), accs
        log(f"ground truth {name:28s} top1 {gt[name]:.4f}  seeds {[f'{a:.4f}' for a in accs]}")

    # ---- shared stages (E1): uniform policy (AWS) and no augmentation
    shared_u = train_shared(cfg, out / f"shared_uniform_e{args.shared_epochs}", AWSPolicy.uniform(),
                            dist=dist).checkpoint
    shared_n = train_shared(cfg, out / f"shared_noaug_e{args.shared_epochs}", NoPolicy(), dist=dist).checkpoint
    log("shared stages done")
    shared_model = load_model(cfg, shared_u, ncls)

    # ---- proxies
    rand_cfg = cfg.replace(**{"train.warmup_epochs": 0.0})  # same constant lr as the fine-tunes
    ft = f"ft_e{args.finetune_epochs}_lr{cfg.aws.finetune_lr:g}"
    scores: dict[str, dict[str, float]] = {p: {} for p in PROXIES}
    for name, pol in pols:
        for proxy, init, c in (("shared_uniform+ft", shared_u, cfg), ("shared_noaug+ft", shared_n, cfg),
                               ("random_init+ft", None, rand_cfg)):
            _, scores[proxy][name] = finetune(c, out / proxy / f"e1_{args.shared_epochs}_{ft}" / name, pol, init,
                                              seed_offset=1, dist=dist)
        scores["shared_uniform+aug_val"][name] = eval_augmented(cfg, shared_model, dist, pol)
        log(f"proxies {name:28s} " + "  ".join(f"{p} {scores[p][name]:.4f}" for p in PROXIES))

    # ---- report
    names = [n for n, _ in pols]
    print()
    print(f"settings: K={len(pols)} policies, tiny_resnet 32x32, batch {args.batch_size}, {args.steps} steps/epoch, "
          f"ground truth {args.epochs} epochs x seeds {args.seeds} on '{args.gt_split}', "
          f"shared E1={args.shared_epochs}, "
          f"fine-tune E2={args.finetune_epochs} at lr {cfg.aws.finetune_lr:g} (constant), proxies on "
          f"'{cfg.data.val_list}'; {time.time() - t0:.0f} s")
    print()
    print("| policy | ground truth top-1 | " + " | ".join(PROXIES) + " |")
    print("|---|---|" + "---|" * len(PROXIES))
    for n in names:
        print(f"| {n} | {gt[n]:.4f} | " + " | ".join(f"{scores[p][n]:.4f}" for p in PROXIES) + " |")
    print()
    print("| proxy | Pearson r (ours) | Spearman rho (ours) | Pearson r (AWS paper, table 5) |")
    print("|---|---|---|---|")
    y = [gt[n] for n in names]
    result: dict[str, Any] = {}
    for p in PROXIES:
        r, rho = correlations([scores[p][n] for n in names], y)
        result[p] = {"pearson": r, "spearman": rho}
        print(f"| {p} | {r:.3f} | {rho:.3f} | {PAPER_PEARSON[p]} |")
    order = sorted(PROXIES, key=lambda p: -result[p]["pearson"] if result[p]["pearson"] == result[p]["pearson"] else 1)
    print()
    print(f"ordering by Pearson (ours): {' > '.join(order)}; paper: {' > '.join(PROXIES)}; "
          f"same ordering: {order == list(PROXIES)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"args": vars(args), "ground_truth": gt, "ground_truth_seeds": gt_seeds,
                                                 "proxies": scores, "correlations": result}, indent=2))
    ours = result["shared_uniform+ft"]["pearson"]
    print(f"RESULT proxy_correlation {ours:.3f} pearson vs aws_paper 0.85 pearson ratio={ours / 0.85:.3f}")


if __name__ == "__main__":
    main()

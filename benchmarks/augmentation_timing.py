"""Does augmentation work mainly late in training here? The AWS paper's premise (its figure 2).

The AWS proxy fine-tunes trained weights with a candidate policy because, the paper measured
(ResNet-18, CIFAR-10, 300 epochs), augmenting only the *last* k epochs helps more than the first
k. This benchmark repeats that test in the quality regime (configs/fmnist_quality.yaml):
train.epochs from scratch with the uniform AWS policy on the first k epochs only, or on the last
k only, and no augmentation on the rest (one cosine schedule; the policy switches between epochs
through the loop's hooks), for each --k, over --seeds; top-1 on the 10,000-image test set.
k = 0 (none) and k = train.epochs (uniform) are the trainings search_vs_baselines.py made
(shared tree, reused).

    .venv/bin/python benchmarks/augmentation_timing.py            # k = 30, 3 seeds: ~10 min on 2 cores
    .venv/bin/python benchmarks/augmentation_timing.py --k 15 30 45

Last line: RESULT augmentation_timing <top-1, uniform on the last k> top1 vs first_k <top-1,
uniform on the first k> top1 ratio=<last/first> (the largest k given; ratio > 1: the premise holds).
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _quality import mean_std, regime, train_and_test

from hpcaug.ops.policy import AWSPolicy, NoPolicy
from hpcaug.train.dist import init_dist
from hpcaug.train.loop import TrainHooks


class AugmentWindow(TrainHooks):
    """The uniform AWS policy on epochs [start, stop), none elsewhere: a pure function of the
    epoch, so a resumed run gets the same policies."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def on_epoch_start(self, epoch: int) -> Sequence[Any]:
        return [AWSPolicy.uniform()] if self.start <= epoch < self.stop else [NoPolicy()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[30], help="augmented epochs (first k / last k)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], metavar="section.key=value", help="overrides of the regime")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = regime(args.set)
    n = cfg.train.epochs
    bad = [k for k in args.k if not 0 < k < n]
    if bad:
        ap.error(f"--k must lie in 1..{n - 1} (train.epochs = {n}), got {bad}")
    if cfg.augment.copies != 1:
        ap.error("augment.copies must be 1 here")
    dist = init_dist(cfg.dist)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    acc: dict[str, list[float]] = {
        "none": [train_and_test(cfg, NoPolicy(), "none", s, dist) for s in args.seeds],
        "uniform": [train_and_test(cfg, AWSPolicy.uniform(), "uniform", s, dist) for s in args.seeds]}
    log(f"none {acc['none']}  uniform {acc['uniform']}")
    for k in args.k:
        for name, start, stop in ((f"uniform_first{k}", 0, k), (f"uniform_last{k}", n - k, n)):
            # built with the uniform policy (the loader's op counts span the AWS operations), then
            # the hook picks each epoch's policy
            acc[name] = [train_and_test(cfg, AWSPolicy.uniform(), name, s, dist, hooks=AugmentWindow(start, stop))
                         for s in args.seeds]
            log(f"{name:18s} {' '.join(f'{a:.4f}' for a in acc[name])}")

    print(f"\nregime: {cfg.train.model}, {cfg.data.train_list} of {Path(cfg.data.dir).name}, {n} epochs (one "
          f"cosine schedule), uniform AWS policy on some epochs, none on the others; seeds {args.seeds}; top-1 on "
          f"the 10,000-image test set; {time.time() - t0:.0f} s\n")
    print("| augmented epochs | test top-1 mean +- std | per seed |\n|---|---|---|")
    rows = [("none (0)", "none")] + [(f"{w} {k}", f"uniform_{w}{k}") for k in args.k for w in ("first", "last")]
    rows.append((f"all {n} (uniform)", "uniform"))
    for label, key in rows:
        m, sd = mean_std(acc[key])
        print(f"| {label} | {m:.4f} +- {sd:.4f} | {', '.join(f'{a:.4f}' for a in acc[key])} |")
    k = max(args.k)
    last, first = mean_std(acc[f"uniform_last{k}"])[0], mean_std(acc[f"uniform_first{k}"])[0]
    print(f"RESULT augmentation_timing {last:.4f} top1 vs first_k {first:.4f} top1 ratio={last / first:.3f}")


if __name__ == "__main__":
    main()

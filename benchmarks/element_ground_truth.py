"""Which AWS elements harm training in the quality regime? Each of the 36 elements, from scratch,
alone or at a raised share of the uniform policy.

For every element of the AWS space (hpcaug.ops.spaces.AWS_SPACE: 11 ops x bins 3/6/9, AutoContrast,
Equalize, Invert) a policy trains small_resnet from scratch in the regime of
configs/fmnist_quality.yaml (1,000 Fashion-MNIST images, no base augmentation, 60 epochs), scored
by top-1 on the 10,000-image test set. Two ground truths:

- alone (default): the element applied to every training image (random sign for signed ops),
  against no augmentation over --ref-seeds seeds (their spread sets the noise level);
- --mix SHARE (e.g. 0.5): the uniform AWS policy re-weighted so that the operations containing
  the element hold SHARE of its mass (uniform: 0.055), against the uniform policy over
  --ref-seeds seeds. This asks what goal (a) is about: does more of the element *in a policy*
  lower the accuracy? An element can harm alone at a dose of 100 % and help in the mix.

An element is **harmful** when its top-1 is below the reference's mean by more than
max(2 x the reference seeds' std, 0.005), **helpful** when above by as much. The list is
written to <out>/<settings key>[_mix<pct>]/result.json, which benchmarks/search_vs_baselines.py
reads to check that a search moved the mass off the harmful elements (issue 17, goal a).

    .venv/bin/python benchmarks/element_ground_truth.py            # 36 + 4 trainings, ~1-1.5 h on 2 cores
    .venv/bin/python benchmarks/element_ground_truth.py --mix 0.5  # 36 + 3 trainings, ~1-1.5 h
    .venv/bin/python benchmarks/element_ground_truth.py --seeds 0 1   # two seeds per element
    .venv/bin/python benchmarks/element_ground_truth.py --elements Invert Solarize:3   # some elements only

With --elements, the verdicts cover those elements only (result.json lists which were trained).

Last line: RESULT element_ground_truth <best element's top-1> top1 vs <reference> <top-1> top1 ratio=<r>
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from _quality import element_in_mix, ground_truth_dir, mean_std, regime, train_and_test

from hpcaug.ops.policy import AWSPolicy, NoPolicy, Policy, SubPolicyPolicy
from hpcaug.ops.spaces import AWS_SPACE
from hpcaug.train.dist import init_dist


def element_policy(index: int) -> Policy:
    """Element `index` of the AWS space applied to every image (one step, probability 1)."""
    e = AWS_SPACE.elements[index]
    return SubPolicyPolicy([[(e.spec.name, 1.0, e.bin)]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds per element")
    ap.add_argument("--ref-seeds", "--none-seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="seeds of the reference (no augmentation; with --mix, the uniform policy)")
    ap.add_argument("--mix", type=float, default=0.0, metavar="SHARE",
                    help="0: each element alone on every image; in (0, 1): the element's operations hold "
                         "this share of the uniform policy")
    ap.add_argument("--elements", nargs="+", default=[], metavar="NAME",
                    help="train only these elements (names as in the AWS space, e.g. Invert ShearX:9)")
    ap.add_argument("--set", nargs="*", default=[], metavar="section.key=value", help="overrides of the regime")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not 0.0 <= args.mix < 1.0:
        ap.error(f"--mix must be 0 (alone) or a share in (0, 1), got {args.mix}")
    cfg = regime(args.set)
    out = ground_truth_dir(cfg, args.mix)
    names = [e.name for e in AWS_SPACE.elements]
    unknown = sorted(set(args.elements) - set(names))
    if unknown:
        ap.error(f"--elements: no such element(s) {unknown}; the AWS space has {names}")
    dist = init_dist(cfg.dist)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    mix = round(args.mix * 100)
    ref = "uniform" if args.mix else "none"
    refs: list[tuple[str, Policy, list[int]]] = [("uniform", AWSPolicy.uniform(), args.ref_seeds)] if args.mix else [
        ("none", NoPolicy(), args.ref_seeds), ("uniform", AWSPolicy.uniform(), args.seeds)]
    acc: dict[str, list[float]] = {}
    for name, pol, seeds in refs:
        acc[name] = [train_and_test(cfg, pol, name, s, dist) for s in seeds]
        log(f"{name:14s} {' '.join(f'{a:.4f}' for a in acc[name])}")
    elements = [n for n in names if not args.elements or n in args.elements]
    for name in elements:
        pol = element_in_mix(name, args.mix) if args.mix else element_policy(names.index(name))
        key = f"{name}_mix{mix}" if args.mix else name
        acc[name] = [train_and_test(cfg, pol, key, s, dist) for s in args.seeds]
        log(f"{name:14s} {' '.join(f'{a:.4f}' for a in acc[name])}")

    ref_m, ref_sd = mean_std(acc[ref])
    margin = max(2 * ref_sd, 0.005)
    verdict = {}
    for name in elements:
        m = mean_std(acc[name])[0]
        verdict[name] = "harmful" if m < ref_m - margin else ("helpful" if m > ref_m + margin else "neutral")
    harmful = [n for n in elements if verdict[n] == "harmful"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({
        "config": json.loads(cfg.to_json()), "mix": args.mix, "seeds": args.seeds, "reference": ref,
        "ref_seeds": args.ref_seeds, "top1": acc, "elements": elements, "ref_mean": ref_m, "ref_std": ref_sd,
        "margin": margin, "verdict": verdict, "harmful": harmful}, indent=2))

    dose = f"its operations at {args.mix:.0%} of the uniform policy" if args.mix else "alone, every image"
    print(f"\nregime: {cfg.train.model}, {cfg.data.train_list} of {Path(cfg.data.dir).name}, "
          f"{cfg.train.epochs} epochs, "
          f"no base augmentation; top-1 on the 10,000-image test set; {time.time() - t0:.0f} s")
    print(f"reference {ref}: {ref_m:.4f} +- {ref_sd:.4f} over seeds {args.ref_seeds}; "
          + ("" if args.mix else f"uniform AWS policy: {mean_std(acc['uniform'])[0]:.4f}; ") + f"margin {margin:.4f}\n")
    print(f"| element ({dose}) | test top-1 | vs {ref} | verdict |")
    print("|---|---:|---:|---|")
    for name in sorted(elements, key=lambda n: mean_std(acc[n])[0]):
        m = mean_std(acc[name])[0]
        print(f"| {name} | {m:.4f} | {m - ref_m:+.4f} | {verdict[name]} |")
    print(f"\nharmful ({len(harmful)}): {', '.join(harmful) or 'none'}; written to {out / 'result.json'}")
    best = max(elements, key=lambda n: mean_std(acc[n])[0])
    b = mean_std(acc[best])[0]
    label = "uniform" if args.mix else "no_augmentation"
    print(f"RESULT element_ground_truth {b:.4f} top1 vs {label} {ref_m:.4f} top1 ratio={b / ref_m:.3f}")


if __name__ == "__main__":
    main()

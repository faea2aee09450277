"""`python -m hpcaug.train`: run the training loop on a config, under any launcher.

    python -m hpcaug.train --config configs/demo.yaml --out runs/demo/train            # one process
    horovodrun -np 2 -H localhost:2 --gloo python -m hpcaug.train --config C --out D    # Horovod (gloo)
    srun --ntasks-per-node=8 python -m hpcaug.train --config C --out D                  # SLURM (see docs/training.md)

It builds the configured policy (augment.policy, or --policy) M = augment.copies times and
calls `hpcaug.train.stages.run_train`; a second run with the same --out resumes. For the `final` stage
of a search use `python -m hpcaug.submit --stage final` (same loop).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from hpcaug.config import load_config
from hpcaug.policy_names import policy_arg
from hpcaug.train.dist import init_dist
from hpcaug.train.stages import run_train


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpcaug.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="YAML config (configs/*.yaml)")
    ap.add_argument("--out", required=True, help="output dir: checkpoint.pt, metrics.jsonl, tb/")
    ap.add_argument("--policy", default=None, type=policy_arg,
                    help="a policy name (randaugment-n2-m9, ...: docs/config.md) or a policy .json file "
                         "(default: augment.policy)")
    ap.add_argument("--epochs", type=int, default=None, help="default: train.epochs")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. train.lr=0.2")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    dist = init_dist(cfg.dist)
    result = run_train(cfg, args.out, args.policy, epochs=args.epochs, dist=dist)
    if dist.is_root and result.history:
        print(json.dumps({"final": result.history[-1], "steps": result.steps}), flush=True)
    dist.shutdown()  # not on an error: shutting down waits for the other ranks, which may be stuck
    return 0


if __name__ == "__main__":
    sys.exit(main())

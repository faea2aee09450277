"""Training throughput: the real loader (DALI; CPU here) vs the same model on in-memory tensors.

Both runs go through the same `hpcaug.train.train` loop in this process (same model, batch,
copies, optimizer, AMP settings); only the train loader differs. Validation uses a tiny
in-memory set in both runs and is not timed. The reported number is images/s (rows of the
N x M batch) of the last epoch of each run, best of --repeats alternating runs, so pipeline start-up and
the first steps are not counted.

    python benchmarks/train.py                                 # demo data (prepared on the fly), tiny_resnet, CPU
    python benchmarks/train.py --data data/imagenet --model resnet50 --device cuda --image-size 224 \
        --batch-size 128 --steps 100                           # on a GPU node

Last line: RESULT train_loader_overhead <ours> img/s vs synthetic <theirs> img/s ratio=<r>
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # data_prep is a top-level folder of the repository

from hpcaug.config import Config  # noqa: E402
from hpcaug.ops import load_policy  # noqa: E402
from hpcaug.policy_names import policy_arg  # noqa: E402
from hpcaug.train import TrainHooks, train  # noqa: E402
from hpcaug.train.dist import SingleDist  # noqa: E402
from hpcaug.train.synthetic import SyntheticLoader  # noqa: E402


class _CPUClock(TrainHooks):
    """CPU seconds of this process (all its threads: DALI's included) during the last epoch.

    Wall-clock img/s on a shared machine follows the other users' load; images per CPU-second
    does not, so it is printed too."""

    def __init__(self, last_epoch: int) -> None:
        self.last, self.t0, self.rate = last_epoch, 0.0, 0.0

    def on_epoch_start(self, epoch: int) -> None:
        if epoch == self.last:
            self.t0 = time.process_time()
        return None

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        if epoch == self.last:
            self.rate = metrics["train_samples"] / max(1e-9, time.process_time() - self.t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="a prepared dataset dir (default: demo Fashion-MNIST in a temp dir)")
    ap.add_argument("--backend", default="dali", choices=("dali", "torch"))
    ap.add_argument("--model", default="tiny_resnet")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64, help="N images per step")
    ap.add_argument("--copies", type=int, default=1, help="M copies per image (enlarged batch)")
    ap.add_argument("--policy", default="uniform", type=policy_arg, help="a policy name or .json (docs/config.md)")
    ap.add_argument("--steps", type=int, default=20, help="steps per epoch; 2 epochs, the last one is timed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="alternating real/synthetic runs; best of each")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("hpcaug").setLevel(logging.WARNING)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU")
    tmp = tempfile.TemporaryDirectory()
    data = args.data
    if data is None:
        from data_prep.fashion_mnist import prepare

        data = str(prepare(Path(tmp.name) / "fashion_mnist", size=args.image_size, seed=0, train_per_class=200,
                           val_per_class=10, search_train_per_class=10, search_val_per_class=5))
    cfg = Config().replace(**{
        "data.dir": data, "data.backend": args.backend, "data.batch_size": args.batch_size,
        "data.workers": args.workers, "data.image_size": args.image_size,
        "data.val_resize": max(args.image_size, round(args.image_size * 256 / 224)) if args.image_size >= 224
        else args.image_size, "train.model": args.model, "train.steps_per_epoch": args.steps,
        "train.log_interval": 10 ** 9, "train.warmup_epochs": 0, "augment.copies": args.copies,
        "augment.policy": args.policy})
    dist = SingleDist(device=torch.device(args.device))
    policy = load_policy(args.policy)
    from hpcaug.data.index import DatasetIndex

    ncls = DatasetIndex.open(data).num_classes
    val = SyntheticLoader(8, 1, image_size=args.image_size, num_classes=ncls, device=args.device)

    # alternate real / synthetic runs and keep the best of each: on a shared machine the load
    # changes from minute to minute and would otherwise favour whichever ran in a quiet moment
    a = b = ca = cb = 0.0
    for rep in range(args.repeats):
        clock_a, clock_b = _CPUClock(1), _CPUClock(1)
        ours = train(cfg, Path(tmp.name) / f"real{rep}", [policy] * args.copies, epochs=2, dist=dist,
                     val_loader=val, hooks=clock_a)
        synth = SyntheticLoader(args.batch_size, args.steps, copies=args.copies, image_size=args.image_size,
                                num_classes=ncls, num_choices=policy.num_choices, device=args.device, fixed=True)
        theirs = train(cfg, Path(tmp.name) / f"synthetic{rep}", [policy] * args.copies, epochs=2, dist=dist,
                       train_loader=synth, val_loader=val, hooks=clock_b)
        a, b = max(a, ours.history[-1]["images_per_s"]), max(b, theirs.history[-1]["images_per_s"])
        ca, cb = max(ca, clock_a.rate), max(cb, clock_b.rate)
        print(f"repeat {rep}: real loader {ours.history[-1]['images_per_s']:.1f} img/s "
              f"({clock_a.rate:.1f} img/CPU-s), synthetic {theirs.history[-1]['images_per_s']:.1f} img/s "
              f"({clock_b.rate:.1f} img/CPU-s)", flush=True)
    if args.device == "cpu":
        print(f"per CPU-second of this process: real loader {ca:.1f} img vs synthetic {cb:.1f} img "
              f"ratio={ca / max(cb, 1e-9):.3f}")
    print(f"model {args.model} device {args.device} backend {args.backend} N={args.batch_size} M={args.copies} "
          f"size {args.image_size} steps {args.steps} threads {torch.get_num_threads()}")
    print(f"RESULT train_loader_overhead {a:.1f} img/s vs synthetic {b:.1f} img/s ratio={a / b:.3f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()

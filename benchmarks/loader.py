"""Train-loader throughput: hpcaug's DALI pipeline vs torchvision ImageFolder + DataLoader.

Both read the same ImageNet-sized JPEGs (re-encoded crops/resizes of foolbox's real ImageNet
photos, written to a temp tree), with the same work per image: decode, RandomResizedCrop to
224, horizontal flip, one per-image augmentation (ours: an AWS operation = 2 elements drawn
from the uniform policy; torchvision: AutoAugment's ImageNet policy = a 2-op sub-policy),
normalise to float NCHW; the same batch size and the same number of worker threads
(DALI threads = DataLoader worker processes = --workers). Rounds alternate between the two
(the machine may be shared) and each side's best round counts.

    python benchmarks/loader.py [--images 384] [--workers 2] [--batch 64] [--rounds 3] [--read-ahead 2]

Last line: `RESULT loader_dali_cpu <ours> img/s vs torchvision_dataloader <theirs> img/s ratio=<r>`.
On a GPU machine add --device cuda (ours decodes with nvJPEG, `mixed`); the torchvision side
stays on the CPU workers as in a stock training script.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def foolbox_photos() -> list[Path]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("foolbox's sample photos are needed: pip install --no-deps foolbox==3.3.4 (scripts/setup.sh)")
    return sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("imagenet_*.jpg"))


def make_tree(root: Path, n_images: int, classes: int = 8) -> tuple[Path, Path]:
    """(tree, prepared): an ImageFolder tree of `n_images` ImageNet-like JPEGs (longer side 500,
    quality 90: data_prep.jpeg_tree) and the prepared-dataset dir data_prep.imagenet lists it in."""
    from PIL import Image

    from data_prep.imagenet import prepare
    from data_prep.jpeg_tree import write_jpeg_tree

    photos = []
    for f in foolbox_photos():
        with Image.open(f) as im:
            photos.append(im.convert("RGB"))
    tree = root / "tree"
    write_jpeg_tree(tree, photos, n_images, classes=classes)
    return tree, prepare(tree, root / "prepared", search_classes=classes, search_train=classes,
                         search_val=classes, scan_mode="none", quiet=True)


def ours(prepared: Path, args: argparse.Namespace) -> tuple[Callable[[], int], Callable[[], None]]:
    from hpcaug.config import Config
    from hpcaug.data import build_train_loader
    from hpcaug.ops.policy import AWSPolicy

    cfg = Config().replace(**{"data.dir": str(prepared), "data.backend": "dali", "data.batch_size": args.batch,
                              "data.workers": args.workers, "data.image_size": 224, "data.color_jitter": 0.0,
                              "data.read_ahead": args.read_ahead})
    loader = build_train_loader(cfg, [AWSPolicy.uniform()], 0, 1, args.device)

    def epoch() -> int:
        n = 0
        for b in loader:
            n += b.images.shape[0]
        if args.device == "cuda":
            torch.cuda.synchronize()
        return n

    return epoch, loader.close


def theirs(root: Path, args: argparse.Namespace) -> tuple[Callable[[], int], Callable[[], None]]:
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision import transforms as T

    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                    T.AutoAugment(T.AutoAugmentPolicy.IMAGENET), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder(str(root / "train"), transform=tf)
    dl = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                    persistent_workers=True, pin_memory=args.device == "cuda")

    def epoch() -> int:
        n = 0
        for x, _ in dl:
            n += x.to(args.device).shape[0]
        return n

    return epoch, lambda: None


def cpu_seconds() -> float:
    """CPU time (user + sys) of this process and its live children (DataLoader workers)."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def timed(epoch: Callable[[], int]) -> tuple[float, float]:
    """(images per second, CPU milliseconds per image) of one epoch."""
    c, t = cpu_seconds(), time.perf_counter()
    n = epoch()
    return n / (time.perf_counter() - t), 1000 * (cpu_seconds() - c) / n


def main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=384, help="JPEGs in the temp tree (one epoch)")
    ap.add_argument("--workers", type=int, default=2, help="DALI threads = DataLoader workers")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="timed epochs per side (alternating), best counts")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--read-ahead", type=int, default=2, help="data.read_ahead of our loader (0 = read on the "
                    "training thread)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(1)  # the main process only collects batches on both sides
    with tempfile.TemporaryDirectory(prefix="hpcaug-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        tree, prepared = make_tree(root, args.images)
        print(f"wrote {args.images} JPEGs in {time.perf_counter() - t:.1f}s; batch {args.batch}, "
              f"{args.workers} workers, device {args.device}", flush=True)
        # torchvision first: its workers fork before any DALI pipeline exists in this process
        sides: dict[str, Any] = {"torchvision_dataloader": theirs(tree, args)}
        sides["loader_dali_cpu"] = ours(prepared, args)
        for name, (epoch, _) in sides.items():  # warm-up: pipeline build, worker start, page cache
            t = time.perf_counter()
            epoch()
            print(f"warm-up {name}: {time.perf_counter() - t:.1f}s", flush=True)
        best = {name: 0.0 for name in sides}
        cpu = {name: float("inf") for name in sides}
        for r in range(args.rounds):
            for name, (epoch, _) in sides.items():
                ips, ms = timed(epoch)
                best[name], cpu[name] = max(best[name], ips), min(cpu[name], ms)
                print(f"round {r}: {name} {ips:.0f} img/s, {ms:.1f} CPU-ms/img", flush=True)
        print("CPU cost (less sensitive to a shared machine): "
              + ", ".join(f"{name} {cpu[name]:.1f} ms/img" for name in sides), flush=True)
        for _, close in sides.values():
            close()
    a, b = best["loader_dali_cpu"], best["torchvision_dataloader"]
    tag = "loader_dali_cpu" if args.device == "cpu" else "loader_dali_gpu"
    print(f"RESULT {tag} {a:.0f} img/s vs torchvision_dataloader {b:.0f} img/s ratio={a / b:.2f}")


if __name__ == "__main__":
    main()

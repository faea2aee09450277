"""Throughput of per-sample augmentation on 224x224 uint8 images (CPU).

ours:   hpcaug's torch backend applying per-sample AWS operations sampled from the uniform AWS
        policy (2 elements per image), one batched call per batch;
theirs: torchvision.transforms.v2.AutoAugment (ImageNet policy) and RandAugment applied image
        by image in a Python loop, the way a torchvision Dataset does it;
also:   hpcaug's DALI backend on the CPU (standalone pipeline, uniform AWS programs).
Same images (foolbox's real ImageNet photos resized to 224, tiled to the batch), same process,
same torch thread count (1 by default: DataLoader workers run with one thread, and on a
busy 2-core machine torch's intra-op threads stall). Ends with one RESULT line.
--per-op: instead, the cost of each op alone (every image of the batch gets that op at bin 9
or, for ops without magnitude, the op itself), process CPU ms per image, torch and DALI.

    python benchmarks/ops.py [--batch 128] [--seconds 4] [--threads 1] [--per-op] [--device cpu]
"""
from __future__ import annotations

import argparse
import importlib.util
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from hpcaug.ops import OPS, UniformAWS, apply_program


def load_images(n: int, size: int = 224) -> torch.Tensor:
    """n real photos (foolbox's 20 ImageNet JPEGs, plus mirrors) as uint8 [n, 3, size, size]."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    spec = importlib.util.find_spec("foolbox")
    files = sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("imagenet_*.jpg")) if spec else []
    if not files:
        print("foolbox not installed: using random images")
        return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    base = torch.stack([TF.resize(decode_jpeg(read_file(str(f)), mode=ImageReadMode.RGB), [size, size], antialias=True)
                        for f in files])
    base = torch.cat([base, base.flip(-1)])
    return base.repeat((n + len(base) - 1) // len(base), 1, 1, 1)[:n].contiguous()


def rate(step: Callable[[], int], seconds: float, warmup: int = 1) -> tuple[float, float]:
    """(images/s, process CPU ms per image) of `step` (returns images done), run until `seconds`
    have passed (at least 2 calls). CPU time counts every thread of the process (DALI's too) and
    is less disturbed than wall time when the machine is shared."""
    for _ in range(warmup):
        step()
    done, calls, t0, c0 = 0, 0, time.perf_counter(), time.process_time()
    while calls < 2 or time.perf_counter() - t0 < seconds:
        done += step()
        calls += 1
    return done / (time.perf_counter() - t0), 1000 * (time.process_time() - c0) / done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=4.0, help="time per measured method")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both sides (default 1, as in a DataLoader worker; 0 = torch's default)")
    ap.add_argument("--no-dali", action="store_true")
    ap.add_argument("--per-op", action="store_true", help="cost of each op alone (torch, DALI)")
    ap.add_argument("--device", default="cpu", help="--per-op: device of the torch backend's images (cpu, cuda)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.per_op:
        per_op(args)
        return
    from torchvision.transforms import v2

    x = load_images(args.batch)
    n = len(x)
    gen = torch.Generator().manual_seed(0)
    policy = UniformAWS()
    print(f"batch {n} x {tuple(x.shape[1:])} uint8, torch {torch.__version__}, threads {torch.get_num_threads()}")

    def ours() -> int:
        s = policy.sample(n, gen)
        apply_program(x, s.op_ids, s.params)
        return n

    def loop(t: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], int]:
        def step() -> int:
            for i in range(n):
                t(x[i])
            return n
        return step

    torch.manual_seed(0)
    results = {"ops_torch_cpu": rate(ours, args.seconds)}
    results["torchvision_autoaugment_loop"] = rate(loop(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)), args.seconds)
    results["torchvision_randaugment_loop"] = rate(loop(v2.RandAugment()), args.seconds)
    if not args.no_dali and importlib.util.find_spec("nvidia.dali"):
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from hpcaug.ops import dali_backend as db

        def dali() -> int:
            s = policy.sample(n, gen)
            db.run_program(x, s.op_ids, s.params, device="cpu", num_threads=max(1, torch.get_num_threads()))
            return n

        results["ops_dali_cpu"] = rate(dali, args.seconds)
    for k, (v, ms) in results.items():
        print(f"{k:32s} {v:9.1f} img/s  {ms:6.3f} CPU-ms/img")
    (ours_r, ours_ms), (theirs, theirs_ms) = results["ops_torch_cpu"], results["torchvision_autoaugment_loop"]
    print(f"ratio vs torchvision RandAugment loop: {ours_r / results['torchvision_randaugment_loop'][0]:.2f}")
    print(f"CPU-time ratio vs torchvision AutoAugment loop: {theirs_ms / ours_ms:.2f}")
    print(f"RESULT ops_torch_cpu {ours_r:.1f} img/s vs torchvision_autoaugment_loop {theirs:.1f} img/s "
          f"ratio={ours_r / theirs:.2f}")


def per_op(args: argparse.Namespace) -> None:
    """Each op alone on the whole batch: torch (on --device) and DALI CPU, CPU ms per image."""
    x = load_images(args.batch).to(args.device)
    n = len(x)
    dali = None
    if not args.no_dali and importlib.util.find_spec("nvidia.dali"):
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from hpcaug.ops import dali_backend as dali
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    print(f"batch {n} x {tuple(x.shape[1:])} uint8 on {x.device}, threads {torch.get_num_threads()}; "
          f"CPU ms per image (process time), img/s")
    for spec in OPS:
        ids = torch.full((n, 1), spec.id)
        params = torch.zeros(n, 1, 3)
        params[:, 0, 0] = spec.param(9) if spec.has_magnitude else 0.0
        params[:, 0, 1:] = torch.rand(n, 2, generator=torch.Generator().manual_seed(spec.id))

        def ours(ids: torch.Tensor = ids, params: torch.Tensor = params) -> int:  # this op's program
            apply_program(x, ids, params)
            sync()
            return n

        r, ms = rate(ours, args.seconds)
        line = f"{spec.name:14s} torch {ms:6.3f} ms {r:9.0f} img/s"
        if dali is not None:
            xc = x.cpu()

            def theirs(xc: torch.Tensor = xc, ids: torch.Tensor = ids, params: torch.Tensor = params) -> int:
                dali.run_program(xc, ids, params, device="cpu", num_threads=max(1, torch.get_num_threads()))
                return n

            line += f"   DALI cpu {rate(theirs, args.seconds)[1]:6.3f} ms"
        print(line)


if __name__ == "__main__":
    main()

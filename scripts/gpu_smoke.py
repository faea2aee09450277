"""The GPU smoke check (issue 18, docs/performance.md): every GPU path this machine can run, with numbers.

    scripts/gpu_smoke.sh [--device auto|cuda|cpu] [--only STEP,...] [--photos DIR] [--json FILE]

Each step runs the project's own code (train_synthetic, train, the loaders, the ops backend,
the start-up memory check, init_dist); a step that fails is reported and the others still run.

  train   ResNet-50, AMP + channels_last, on in-memory data: img/s per precision (float16 with
          GradScaler; bfloat16 where the GPU has it) and host synchronisations per step after
          warm-up (torch.cuda.set_sync_debug_mode)
  loader  the same training fed by the torch loader (data.backend: torch) from JPEGs of an
          ImageNet-like tree (made from photos, listed by data_prep.imagenet), uniform AWS
          policy: img/s, ratio to the in-memory run, host syncs per step
  ops     the torch ops backend: img/s of per-sample AWS programs on uint8 224x224 images, and
          max |device - cpu| per op (torch_backend.device_parity)
  resume  a run SIGKILLed mid-epoch (in a child process) and resumed here: the same steps and
          the weights of an uninterrupted run, within tolerance
  memory  peak memory of training at 256 and 1,024 rows per GPU, and what the start-up check
          (hpcaug.train.memory) says about train.micro_batches
  dali    (DALI installed) the DALI train loader, `mixed` (nvJPEG) decode on CUDA: img/s
  ranks   (2+ GPUs; gloo in CPU mode) 2 ranks under torchrun (DDP) and, with Horovod on 2+
          GPUs, under horovodrun: the ranks end with the same weights

Without CUDA (or with --device cpu) every step runs on the CPU, scaled down (tiny model, tiny
batches, few steps); tests/test_gpu_smoke.py runs it that way. The last line is
`SMOKE OK <device> key=value ...`, or `SMOKE FAILED <device> failed=...` with exit status 1.
Needs torch, torchvision, numpy, PIL, PyYAML and the repository on PYTHONPATH, nothing else.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # data_prep is a top-level folder of the repository

STEPS = ("train", "loader", "ops", "resume", "memory", "dali", "ranks")
# Goals per H100-class GPU (issue 18; docs/performance.md)
GOAL_TRAIN_IMG_S, GOAL_LOADER_RATIO, GOAL_OPS_IMG_S = 3000.0, 0.95, 50000.0
# Resumed vs uninterrupted weights, per tensor ||a - b|| / ||a||: on the CPU the arithmetic
# repeats exactly; on a GPU the kernels do not (atomics, cuDNN algorithms chosen per process)
# and AMP rounds, so the bound is loose but far below a broken resume (lost momentum, skipped
# or repeated steps: 0.25 to 0.4 on the CPU run below).
RESUME_TOL = {"cpu": 1e-5, "cuda": 2e-2}
H100_BYTES = 80 * 10 ** 9  # an 80 GB GPU, for the micro_batches advice beside this GPU's
TREE_CLASSES = 8  # classes of the JPEG tree (data_prep.jpeg_tree)


class CheckFailed(RuntimeError):
    """A smoke check found a wrong result (not a crash)."""


@dataclass(frozen=True)
class Scale:
    """How big each step is: the GPU sizes of issue 18, or a CPU run of a few seconds per step."""

    model: str
    image_size: int
    batch: int  # rows per step of the throughput runs
    num_classes: int
    train_steps: int  # in-memory run: steps; the first `warm` are not timed
    warm: int
    loader_steps: int  # timed loader steps (after 2 x workers + 3 warm-up steps: the prefetch queue)
    jpeg_side: int  # longer side of the JPEGs (ImageNet: ~500)
    jpegs: int  # distinct JPEG files; the list repeats them (hard links) up to the steps' need
    ops_images: int
    ops_iters: int
    small_model: str  # resume and ranks runs
    small_size: int
    small_batch: int
    memory_rows: tuple[int, int]


GPU = Scale("resnet50", 224, 256, 1000, 40, 10, 24, 500, 512, 256, 50, "resnet18", 64, 64, (256, 1024))
CPU = Scale("tiny_resnet", 32, 8, 10, 6, 2, 4, 128, 16, 16, 3, "tiny_resnet", 16, 8, (8, 32))


# ----------------------------------------------------------------------------------- helpers
def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyncCounter:
    """Host synchronisations between start() and stop(): torch.cuda.set_sync_debug_mode("warn")
    turns each into a warning, recorded here with the Python line that caused it. On the CPU
    nothing synchronises with a device (the count is 0); the bookkeeping runs all the same."""

    def __init__(self, device: Any) -> None:
        self.cuda = device.type == "cuda"
        self._cm: warnings.catch_warnings | None = None
        self._log: list[warnings.WarningMessage] = []

    def start(self) -> None:
        import torch

        self._cm = warnings.catch_warnings(record=True)
        self._log = self._cm.__enter__()
        warnings.simplefilter("always")
        if self.cuda:
            torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> list[str]:
        """Stop counting (idempotent); -> one 'file:line' per synchronisation."""
        import torch

        if self._cm is None:
            return []
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
        self._cm.__exit__(None, None, None)
        self._cm = None
        return [f"{Path(w.filename).name}:{w.lineno}" for w in self._log if "synchroniz" in str(w.message).lower()]


def _sites(sites: list[str]) -> str:
    """'loop.py:12 x3, step.py:40' (the lines that synchronised, most frequent first)."""
    counts: dict[str, int] = {}
    for s in sites:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def _probe_class() -> type:
    from hpcaug.train import TrainHooks

    class Probe(TrainHooks):
        """Rides along a training run: in epoch `epoch`, times steps warm+1..total (device
        synchronised at both ends) and counts the host syncs of steps warm+1..total-1 (the last
        step's log line and the validation after it read the device on purpose)."""

        def __init__(self, device: Any, warm: int, total: int, epoch: int = 0) -> None:
            assert total >= warm + 2, "the probe needs two steps after the warm-up"
            self.device, self.warm, self.total, self.epoch = device, warm, total, epoch
            self.n, self.t0, self.t1, self.rows = 0, 0.0, 0.0, 0
            self.counter, self.sites, self.active = SyncCounter(device), [], epoch == 0

        def on_epoch_start(self, epoch: int) -> None:
            self.active = epoch == self.epoch

        def on_step(self, per_sample_loss: Any, batch: Any) -> None:
            if not self.active:
                return
            self.n += 1
            if self.n == self.warm:
                _sync(self.device)
                self.t0 = time.perf_counter()
                self.counter.start()
            elif self.n > self.warm:
                self.rows += int(per_sample_loss.numel())
            if self.n == self.total - 1:
                self.sites = self.counter.stop()
            if self.n == self.total:
                _sync(self.device)
                self.t1 = time.perf_counter()

        def close(self) -> None:
            self.counter.stop()

        @property
        def rate(self) -> float:
            if self.n < self.total:
                raise CheckFailed(f"the run took {self.n} steps, fewer than the {self.total} asked for")
            return self.rows / max(1e-9, self.t1 - self.t0)

        @property
        def syncs_per_step(self) -> float:
            return len(self.sites) / (self.total - 1 - self.warm)

    return Probe


def _tensor_rel_diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, str]:
    """Worst ||a - b|| / ||a|| over the floating-point tensors of two state dicts, and its name."""
    worst, name = 0.0, ""
    for k, v in a.items():
        if not v.is_floating_point():
            continue
        x, y = v.double(), b[k].double()
        rel = float((x - y).norm() / x.norm().clamp_min(1e-12))
        if rel > worst or not name:
            worst, name = rel, k
    return worst, name


# ------------------------------------------------------------------------------ the smoke run
class Smoke:
    """One smoke run: the device, its scale, scratch space, the photos, and what was measured."""

    def __init__(self, args: argparse.Namespace, device: Any, work: Path) -> None:
        self.args, self.device, self.work = args, device, work
        self.cuda = device.type == "cuda"
        self.scale = GPU if self.cuda else CPU
        self.results: dict[str, Any] = {}
        self.failed: list[str] = []
        self.skipped: dict[str, str] = {}
        self.env: dict[str, Any] = {}
        self._photos: list[Any] | None = None
        self._photo_note = ""
        self._dataset: Path | None = None
        self.step = ""

    def say(self, text: str) -> None:
        print(f"[{self.step}] {text}", flush=True)

    def config(self, **over: Any) -> Any:
        from hpcaug.config import Config

        sc = self.scale
        base = {"train.model": sc.model, "data.image_size": sc.image_size, "data.batch_size": sc.batch,
                "train.log_interval": 10 ** 9, "train.warmup_epochs": 0, "augment.copies": 1}
        base.update(over)
        return Config().replace(**base)

    def precisions(self) -> list[str]:
        """float16 (the config default), and bfloat16 where the GPU computes it natively."""
        import torch

        if not self.cuda:
            return ["float32"]  # CPU runs compute in float32 whatever train.amp says
        return ["float16"] + (["bfloat16"] if torch.cuda.is_bf16_supported(including_emulation=False) else [])

    # ---- inputs ----
    def photos(self) -> list[Any]:
        """RGB PIL images: --photos DIR, else foolbox's ImageNet photos, else matplotlib's sample
        photo, else procedural images (said so in the output)."""
        if self._photos is None:
            from PIL import Image

            files, self._photo_note = _photo_files(self.args.photos)
            if files:
                self._photos = []
                for f in files:
                    with Image.open(f) as im:
                        self._photos.append(im.convert("RGB"))
            else:
                self._photos = _procedural_photos(4)
            self.say(f"photos: {self._photo_note}")
        return self._photos

    def image_batch(self, n: int, size: int) -> Any:
        """uint8 [n, 3, size, size]: the photos resized (and mirrored), tiled to n."""
        import numpy as np
        import torch
        from PIL import Image

        base = []
        for im in self.photos():
            arr = np.asarray(im.resize((size, size), Image.BICUBIC))
            base += [arr, arr[:, ::-1]]
        t = torch.from_numpy(np.stack(base)).permute(0, 3, 1, 2)
        return t.repeat((n + len(t) - 1) // len(t), 1, 1, 1)[:n].contiguous()

    def dataset(self, entries: int) -> Path:
        """A prepared dataset (data_prep.imagenet) over an ImageNet-like JPEG tree with at least
        `entries` train files: `scale.jpegs` distinct JPEGs (crops of the photos, ImageNet's
        sizes), repeated as hard links."""
        if self._dataset is not None and len(_lines(self._dataset / "lists" / "train.txt")) >= entries:
            return self._dataset
        from data_prep.imagenet import prepare
        from data_prep.jpeg_tree import write_jpeg_tree

        root = self.work / f"jpeg_tree_{entries}"
        made = write_jpeg_tree(root, self.photos(), entries, classes=TREE_CLASSES, side=self.scale.jpeg_side,
                               distinct=self.scale.jpegs)
        out = prepare(root, self.work / f"prepared_{entries}", search_classes=TREE_CLASSES,
                      search_train=TREE_CLASSES, search_val=TREE_CLASSES, scan_mode="none", quiet=True)
        self.say(f"dataset: {entries} train files ({made} distinct JPEGs, longer side {self.scale.jpeg_side}) "
                 f"listed by data_prep.imagenet")
        self._dataset = out
        return out

    # ---- measurements shared by steps ----
    def synthetic_run(self, dtype: str) -> tuple[float, float, list[str]]:
        """(img/s, host syncs per step, their lines) of the in-memory run at `dtype`."""
        from hpcaug.train.synthetic import train_synthetic

        sc = self.scale
        probe = _probe_class()(self.device, sc.warm, sc.train_steps)
        cfg = self.config(**({"train.amp_dtype": dtype} if dtype != "float32" else {}))
        try:
            train_synthetic(cfg, self.work / f"train_{dtype}", steps=sc.train_steps, num_classes=sc.num_classes,
                            device=self.device, hooks=probe)
        finally:
            probe.close()
        self.results[f"train_{dtype}_img_s"] = round(probe.rate, 1)
        self.results[f"syncs_{dtype}"] = round(probe.syncs_per_step, 2)
        return probe.rate, probe.syncs_per_step, probe.sites


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def _photo_files(arg: str | None) -> tuple[list[Path], str]:
    exts = (".jpg", ".jpeg", ".png")
    if arg:
        d = Path(arg)
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in exts) if d.is_dir() else []
        if not files:
            raise CheckFailed(f"--photos {arg!r} holds no .jpg/.jpeg/.png files; give a folder of photos or leave "
                              "--photos out")
        return files, f"{len(files)} from --photos {arg}"
    spec = importlib.util.find_spec("foolbox")
    if spec is not None and spec.submodule_search_locations:
        files = sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("imagenet_*.jpg"))
        if files:
            return files, f"foolbox's {len(files)} ImageNet photos"
    spec = importlib.util.find_spec("matplotlib")  # found, not imported: only its sample photo is read
    if spec is not None and spec.origin:
        f = Path(spec.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if f.is_file():
            return [f], "matplotlib's sample photo (grace_hopper.jpg; --photos DIR gives more variety)"
    return [], "no photos found (no --photos, foolbox or matplotlib): procedural images"


def _procedural_photos(n: int) -> list[Any]:
    """Smooth colour fields with texture and edges, 512x512: JPEG-like content when no photo exists."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512] / 512.0
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(1, 6, 3)
        chans = [np.sin(a * xx * np.pi + rng.uniform(0, 6)) * np.cos(b * yy * np.pi) + c * 0.1 * xx for _ in range(3)]
        img = (np.stack(chans, -1) * 60 + 128 + rng.normal(0, 12, (512, 512, 3))).clip(0, 255).astype(np.uint8)
        img[rng.integers(0, 400):, rng.integers(0, 400):] //= 2  # an edge
        out.append(Image.fromarray(img))
    return out


# ---------------------------------------------------------------------------------- the steps
def _goal(s: Smoke, value: float, goal: float, unit: str) -> str:
    """' (goal >= 3,000 img/s per ...: met)' on CUDA; '' on the CPU (the goals are per GPU)."""
    if not s.cuda:
        return ""
    return f" (goal >= {goal:,g}{' ' + unit if unit else ''}: {'met' if value >= goal else 'MISSED'})"


def step_train(s: Smoke) -> None:
    sc = s.scale
    for dtype in s.precisions():
        rate, per_step, sites = s.synthetic_run(dtype)
        what = f"{sc.model} {dtype}" + (" AMP channels_last" if s.cuda else "")
        goal = _goal(s, rate, GOAL_TRAIN_IMG_S, "img/s per H100-class GPU")
        s.say(f"{what}, {sc.batch} rows x {sc.image_size}px, in-memory data: {rate:,.1f} img/s{goal}")
        s.say(f"host syncs per step ({dtype}): {per_step:.2f} at {_sites(sites)}"
              + ("" if s.cuda else " (CPU: no device to wait for; the counting runs all the same)"))
        # float16 steps wait once for GradScaler's inf check; bfloat16 needs no scaler: no sync
        allowed = 1.0 if dtype == "float16" else 0.0
        if per_step > allowed:
            raise CheckFailed(f"{per_step:.2f} host syncs per {dtype} step, expected <= {allowed:g}: {_sites(sites)}")


def step_loader(s: Smoke) -> None:
    from hpcaug.data.index import DatasetIndex
    from hpcaug.ops import load_policy
    from hpcaug.train import train
    from hpcaug.train.dist import SingleDist
    from hpcaug.train.synthetic import SyntheticLoader

    sc = s.scale
    dtype = s.precisions()[0]
    ref = s.results.get(f"train_{dtype}_img_s") or s.synthetic_run(dtype)[0]
    ref_syncs = s.results[f"syncs_{dtype}"]
    workers = max(1, min(16, (os.cpu_count() or 2) - 1)) if s.cuda else 1
    # Timed in the 2nd epoch: its DataLoader starts with an empty queue on a warm GPU (in the 1st,
    # the queue fills while cuDNN picks its kernels, and the first timed steps would come from
    # it); the first wave of steps (one per worker, all started together) is not timed.
    warm = workers + 2
    total = warm + sc.loader_steps
    data = s.dataset(total * sc.batch)
    cfg = s.config(**{"data.dir": str(data), "data.backend": "torch", "data.workers": workers,
                      "train.steps_per_epoch": total, "augment.policy": "uniform"})
    val = SyntheticLoader(sc.batch, 1, image_size=sc.image_size, num_classes=DatasetIndex.open(data).num_classes,
                          device=s.device, fixed=True)
    probe = _probe_class()(s.device, warm, total, epoch=1)
    try:
        train(cfg, s.work / "loader_run", [load_policy("uniform")], epochs=2,
              dist=SingleDist(device=s.device), hooks=probe, val_loader=val)
    finally:
        probe.close()
    ratio = probe.rate / ref
    s.results.update(loader_img_s=round(probe.rate, 1), loader_ratio=round(ratio, 3),
                     syncs_loader=round(probe.syncs_per_step, 2))
    goal = _goal(s, ratio, GOAL_LOADER_RATIO, "")
    s.say(f"torch loader, {workers} worker(s), uniform AWS policy, {sc.batch} rows: {probe.rate:,.1f} img/s; "
          f"loader/in-memory = {probe.rate:,.1f}/{ref:,.1f} = {ratio:.3f}{goal}")
    s.say(f"host syncs per step (torch loader, {dtype}): {probe.syncs_per_step:.2f} at {_sites(probe.sites)}")
    if probe.syncs_per_step > ref_syncs:
        raise CheckFailed(f"the torch loader adds host syncs: {probe.syncs_per_step:.2f} per step vs {ref_syncs:.2f} "
                          f"on in-memory data, at {_sites(probe.sites)}")


def step_ops(s: Smoke) -> None:
    import torch

    from hpcaug.ops import load_policy
    from hpcaug.ops import torch_backend as tb

    sc = s.scale
    x = s.image_batch(sc.ops_images, 224).to(s.device)
    policy, g = load_policy("uniform"), torch.Generator().manual_seed(0)
    progs = [policy.sample(len(x), g) for _ in range(4)]
    for p in progs:  # warm-up: kernels, cached constants
        tb.apply_program(x, p.op_ids, p.params)
    counter = SyncCounter(s.device)
    counter.start()
    try:
        tb.apply_program(x, progs[0].op_ids, progs[0].params)
    finally:
        sites = counter.stop()

    def timed(sample: bool) -> float:
        _sync(s.device)
        t0 = time.perf_counter()
        for i in range(sc.ops_iters):
            p = policy.sample(len(x), g) if sample else progs[i % len(progs)]
            tb.apply_program(x, p.op_ids, p.params)
        _sync(s.device)
        return sc.ops_iters * len(x) / (time.perf_counter() - t0)

    apply_rate, total_rate = timed(False), timed(True)
    s.results.update(ops_img_s=round(apply_rate, 1), ops_with_sampling_img_s=round(total_rate, 1),
                     syncs_ops=len(sites))
    goal = _goal(s, apply_rate, GOAL_OPS_IMG_S, "img/s per GPU")
    s.say(f"torch ops backend on {s.device.type}, {len(x)} x 3x224x224 uint8, per-sample AWS programs (uniform "
          f"policy, 2 ops each): {apply_rate:,.0f} img/s{goal}; {total_rate:,.0f} img/s with the sampling on the CPU")
    s.say(f"host syncs per apply_program call: {len(sites)} at {_sites(sites)}")
    parity = tb.device_parity(s.device, s.image_batch(10, 64))
    parity_synth = tb.device_parity(s.device)
    worst = {k: max(parity[k].max_abs_diff, parity_synth[k].max_abs_diff) for k in parity}
    bad = sorted(k for k in parity if not (parity[k].ok and parity_synth[k].ok))
    s.results["parity_max_diff"] = max(worst.values())
    s.say(f"max |{s.device.type} - cpu| per op (levels; every bin and sign, photos and synthetic images): "
          + ", ".join(f"{k} {v}" for k, v in worst.items()))
    if bad:
        raise CheckFailed(f"ops beyond torch_backend.PARITY_TOLERANCE on {s.device.type}: "
                          + ", ".join(f"{k} {parity[k]} {parity_synth[k]}" for k in bad))
    if s.cuda and sites:
        raise CheckFailed(f"apply_program synchronised with the host on CUDA: {_sites(sites)}")


def step_resume(s: Smoke) -> None:
    import torch

    from hpcaug.train import load_checkpoint
    from hpcaug.train.synthetic import train_synthetic

    sc = s.scale
    steps, every, kill_at = 8, 3, 5  # checkpoints after steps 3 and 6; killed in step 5: resumes at step 3
    cfg = s.config(**{"train.model": sc.small_model, "data.image_size": sc.small_size,
                      "data.batch_size": sc.small_batch, "train.checkpoint_every_steps": every})
    # the child computes with this process's thread count: the CPU arithmetic then repeats exactly
    job = {"cfg": cfg.to_json(), "steps": steps, "num_classes": 10, "device": str(s.device),
           "threads": torch.get_num_threads()}
    ref = train_synthetic(cfg, s.work / "resume_ref", steps=steps, num_classes=10, device=s.device, fixed=False)
    p = _worker(s, "killed", {**job, "out": str(s.work / "resume_run"), "kill_at": kill_at}, timeout=300)
    path = s.work / "resume_run" / "checkpoint.pt"
    ck = load_checkpoint(path) if path.is_file() else {"epoch": None, "step_in_epoch": None}
    if p.returncode != -signal.SIGKILL or (ck["epoch"], ck["step_in_epoch"]) != (0, every):
        raise CheckFailed(f"the child was to SIGKILL itself in step {kill_at} after a checkpoint at step {every}: "
                          f"exit {p.returncode}, checkpoint at epoch {ck['epoch']} step {ck['step_in_epoch']}\n"
                          + p.stdout[-2000:] + p.stderr[-2000:])
    got = train_synthetic(cfg, s.work / "resume_run", steps=steps, num_classes=10, device=s.device, fixed=False)
    a = load_checkpoint(s.work / "resume_ref" / "checkpoint.pt")["model"]
    rel, name = _tensor_rel_diff(a, load_checkpoint(s.work / "resume_run" / "checkpoint.pt")["model"])
    tol = RESUME_TOL[s.device.type]
    s.results.update(resume_steps=got.steps, resume_rel_diff=float(f"{rel:.3g}"))
    line = (f"{sc.small_model}, {steps} steps, SIGKILLed in step {kill_at}, resumed from step {every}: "
            f"{got.steps} steps (uninterrupted {ref.steps}); worst ||resumed - uninterrupted|| / ||w|| = "
            f"{rel:.3g} ({name}; tolerance {tol:g})")
    if s.cuda:  # the run-to-run spread of the GPU kernels, for scale: an uninterrupted run in a child
        q = _worker(s, "killed", {**job, "out": str(s.work / "resume_ref2"), "kill_at": 0}, timeout=300)
        if q.returncode == 0:
            spread, _ = _tensor_rel_diff(a, load_checkpoint(s.work / "resume_ref2" / "checkpoint.pt")["model"])
            s.results["resume_spread"] = float(f"{spread:.3g}")
            line += f"; two uninterrupted runs differ by {spread:.3g}"
    s.say(line)
    if got.steps != ref.steps or rel > tol:
        raise CheckFailed(f"the resumed run differs from the uninterrupted one: {got.steps} vs {ref.steps} steps, "
                          f"weights {rel:.3g} > {tol:g} ({name})")


def step_memory(s: Smoke) -> None:
    import torch

    from hpcaug.train.memory import _BUDGET, micro_batches_needed

    sc = s.scale
    gib = float(1 << 30)
    for rows in sc.memory_rows:
        check, peak, k, error = _memory_run(s, rows)
        line = f"{rows} rows per GPU ({sc.model}, {sc.image_size}px, {s.precisions()[0]}): "
        if not s.cuda:
            s.say(line + f"trained with train.micro_batches={k} (peak memory and the start-up check: CUDA only)")
            continue
        line += f"peak {peak / gib:.1f} GiB with train.micro_batches={k}"
        if check is not None:
            per_pass, predicted, total, per_row_mib = check
            per_row = per_row_mib * (1 << 20)
            fixed = predicted * gib - per_pass * per_row
            h100 = micro_batches_needed(rows, fixed, per_row, _BUDGET * H100_BYTES)
            line += (f"; start-up check: {predicted:.1f} GiB predicted for {per_pass:.0f} rows per pass "
                     f"({per_row_mib:.1f} MiB per row) of {total:.0f} GiB, "
                     + (f"refused micro_batches=1 ({error})" if error else "micro_batches=1 fits")
                     + f"; an 80 GB GPU needs train.micro_batches={h100}")
            s.results[f"micro_batches_80gb_{rows}"] = h100
        s.results[f"peak_gib_{rows}"] = round(peak / gib, 2)
        s.say(line)
        torch.cuda.empty_cache()


def _memory_run(s: Smoke, rows: int) -> tuple[tuple[float, ...] | None, float, int, str]:
    """Train 2 steps of `rows` rows with train.micro_batches=1, or, when the start-up check refuses
    that, with the micro_batches its message recommends -> (the check's numbers: rows per pass,
    GiB predicted, GiB of the GPU, MiB per row; None off CUDA), peak bytes allocated,
    micro_batches used, the check's refusal or '')."""
    import logging
    import re

    import torch

    from hpcaug.train.synthetic import train_synthetic

    seen: list[tuple[float, ...]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if str(record.msg).startswith("memory check"):
                seen.append(tuple(float(a) for a in record.args))  # type: ignore[union-attr]

    logger, handler = logging.getLogger("hpcaug.train"), Capture()
    level, logger.propagate = logger.level, False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    error, k = "", 1
    try:
        while True:
            if s.cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(s.device)
            try:
                train_synthetic(s.config(**{"data.batch_size": rows, "train.micro_batches": k}),
                                s.work / f"memory_{rows}_{k}", steps=2, num_classes=s.scale.num_classes,
                                device=s.device)
                break
            except ValueError as e:
                advice = re.search(r"train\.micro_batches=(\d+) fits", str(e))
                if error or advice is None:
                    raise
                error, k = str(e).split(";")[0], int(advice.group(1))
        peak = float(torch.cuda.max_memory_allocated(s.device)) if s.cuda else 0.0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = True
    return (seen[0] if seen else None), peak, k, error


def step_dali(s: Smoke) -> None:
    if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
        s.skipped["dali"] = "DALI is not installed"
        s.say("skipped: DALI is not installed (pip install nvidia-dali-cuda120; docs/cluster.md)")
        return
    from hpcaug.data import build_train_loader
    from hpcaug.ops import load_policy

    sc = s.scale
    warm, timed = (5, 20) if s.cuda else (2, 3)
    workers = max(1, min(16, (os.cpu_count() or 2) - 1)) if s.cuda else 1
    data = s.dataset((warm + timed) * sc.batch)
    cfg = s.config(**{"data.dir": str(data), "data.backend": "dali", "data.workers": workers,
                      "train.steps_per_epoch": warm + timed, "augment.policy": "uniform"})
    loader = build_train_loader(cfg, [load_policy("uniform")], 0, 1, s.device)
    rows, t0 = 0, 0.0
    try:
        loader.set_epoch(0)
        for i, batch in enumerate(loader):
            if i == warm:
                _sync(s.device)
                t0 = time.perf_counter()
            elif i > warm:
                rows += int(batch.labels.numel())
        _sync(s.device)
        rate = rows / max(1e-9, time.perf_counter() - t0)
    finally:
        loader.close()
    decode = "mixed" if s.cuda else "cpu"
    s.results["dali_img_s"] = round(rate, 1)
    s.say(f"DALI train loader, {decode} decode, {workers} thread(s), uniform AWS policy, {sc.batch} rows: "
          f"{rate:,.1f} img/s (loader alone, no training)")


def step_ranks(s: Smoke) -> None:
    import torch

    if s.cuda and torch.cuda.device_count() < 2:
        s.skipped["ranks"] = f"{torch.cuda.device_count()} GPU: the 2-rank NCCL run needs 2"
        s.say(f"skipped: {s.skipped['ranks']}")
        return
    sc = s.scale
    cfg = s.config(**{"train.model": sc.small_model, "data.image_size": sc.small_size,
                      "data.batch_size": sc.small_batch})
    job = {"cfg": cfg.to_json(), "steps": 6, "num_classes": 10}
    script = str(Path(__file__).resolve())
    launchers = {"torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]}
    hvdrun = shutil.which("horovodrun") or str(Path(sys.executable).with_name("horovodrun"))
    if not s.cuda:
        s.say("horovodrun: not run in CPU mode (the NCCL run needs 2+ GPUs; Horovod's gloo path is "
              "tests/test_train_horovod.py)")
    elif importlib.util.find_spec("horovod") is not None and Path(hvdrun).exists():
        launchers["horovodrun"] = [hvdrun, "-np", "2", "-H", "localhost:2"]
    else:
        s.say("horovodrun: skipped, Horovod is not installed (scripts/build_horovod_gpu.sh)")
    for name, launch in launchers.items():
        d = s.work / f"ranks_{name}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "job.json").write_text(json.dumps({**job, "out": str(d / "run")}))
        p = subprocess.run(["timeout", "300", *launch, script, "--worker", "ranks", "--worker-dir", str(d)],
                           capture_output=True, text=True, env=_child_env(), timeout=320)
        res = json.loads((d / "result.json").read_text()) if (d / "result.json").is_file() else None
        if p.returncode != 0 or res is None:
            raise CheckFailed(f"{name}: exit {p.returncode}\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
        fps = res["fingerprints"]  # per rank: sum, norm and 256 fixed entries of the weights
        scale = max(1e-12, max(abs(a) for a in fps[0]))
        spread = max(abs(a - b) for f in fps[1:] for a, b in zip(fps[0], f, strict=True)) / scale
        s.results[f"ranks_{name}_img_s"] = round(res["images_per_s"], 1)
        s.say(f"{name}: {res['size']} ranks, backend {res['backend']} on {res['device']}, {res['steps']} steps, "
              f"{res['images_per_s']:,.1f} img/s in all; weights agree across ranks to {spread:.2g}")
        if res["size"] != 2 or spread > 1e-6:
            raise CheckFailed(f"{name}: the ranks disagree ({spread:.3g}) or the run had {res['size']} ranks")


# ----------------------------------------------------------------- child processes (workers)
def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _worker(s: Smoke, kind: str, job: dict[str, Any], timeout: int) -> subprocess.CompletedProcess:
    d = Path(job["out"] + "_job")
    d.mkdir(parents=True, exist_ok=True)
    (d / "job.json").write_text(json.dumps(job))
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--worker-dir", str(d)],
                          capture_output=True, text=True, env=_child_env(), timeout=timeout)


def run_worker(kind: str, wdir: Path) -> None:
    """--worker killed: one training run that SIGKILLs itself in step kill_at (0: never);
    --worker ranks: one rank of a torchrun/horovodrun job; rank 0 writes result.json."""
    import torch

    from hpcaug.config import DistConfig, from_dict
    from hpcaug.train import TrainHooks, init_dist
    from hpcaug.train.synthetic import train_synthetic

    job = json.loads((wdir / "job.json").read_text())
    cfg = from_dict(json.loads(job["cfg"]))
    if kind == "killed":
        class KillAt(TrainHooks):
            n = 0

            def on_step(self, per_sample_loss: Any, batch: Any) -> None:
                self.n += 1
                if self.n == job["kill_at"]:
                    os.kill(os.getpid(), signal.SIGKILL)  # no clean-up: as a node failure or OOM killer

        torch.set_num_threads(job["threads"])
        train_synthetic(cfg, job["out"], steps=job["steps"], num_classes=job["num_classes"],
                        device=torch.device(job["device"]), hooks=KillAt(), fixed=False)
        return
    d = init_dist(DistConfig(backend="auto"))  # torch under torchrun, horovod under horovodrun
    r = train_synthetic(cfg, job["out"], steps=job["steps"], num_classes=job["num_classes"], dist=d, fixed=False)
    flat = torch.cat([t.detach().double().flatten().cpu() for t in r.model.state_dict().values()
                      if t.is_floating_point()])
    probe = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:256]]
    fps = d.allgather_object([float(flat.sum()), float(flat.norm())] + probe.tolist(), name="smoke.fingerprint")
    if d.is_root:
        (wdir / "result.json").write_text(json.dumps({
            "backend": d.backend, "size": d.size, "device": str(d.device), "steps": r.steps,
            "images_per_s": r.history[-1]["images_per_s"], "fingerprints": fps}))
    d.shutdown()


# ----------------------------------------------------------------------------------- main
def _environment(s: Smoke) -> None:
    import platform

    import torch
    import torchvision

    dev = "cpu"
    if s.cuda:
        props = torch.cuda.get_device_properties(s.device)
        dev = f"cuda: {props.name}, {props.total_memory / (1 << 30):.1f} GiB, {torch.cuda.device_count()} GPU(s)"
    have = {m: importlib.util.find_spec(m.split(".")[0]) is not None and importlib.util.find_spec(m) is not None
            for m in ("nvidia.dali", "horovod.torch")}
    s.env = {"device": dev, "python": platform.python_version(), "torch": torch.__version__,
             "torchvision": torchvision.__version__, "cpus": os.cpu_count(), "dali": have["nvidia.dali"],
             "horovod": have["horovod.torch"]}
    s.say(f"device {dev}; python {platform.python_version()}, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; "
          f"DALI {'installed' if have['nvidia.dali'] else 'not installed'}, "
          f"Horovod {'installed' if have['horovod.torch'] else 'not installed'}")


def _third_party_imports() -> list[str]:
    """Top-level modules loaded from outside the standard library and this repository."""
    local = {"hpcaug", "data_prep", "__main__", "__mp_main__"}
    names = {m.split(".")[0] for m, mod in list(sys.modules.items()) if mod is not None}
    return sorted(n for n in names if n not in sys.stdlib_module_names and n not in local and not n.startswith("_"))


def _summary(s: Smoke) -> int:
    label = f"{s.device.type}" + (f" ({s.scale.model}, scaled down)" if not s.cuda else "")
    imports = _third_party_imports()
    print(f"imports: {' '.join(imports)}")
    for step, why in s.skipped.items():
        print(f"skipped {step}: {why}")
    kv = " ".join(f"{k}={v}" for k, v in s.results.items())
    if s.args.json:
        Path(s.args.json).write_text(json.dumps({"device": s.device.type, "env": s.env, "results": s.results,
                                                 "failed": s.failed, "skipped": s.skipped, "imports": imports},
                                                indent=2))
    if s.failed:
        print(f"SMOKE FAILED {label} failed={','.join(s.failed)} {kv}", flush=True)
        return 1
    print(f"SMOKE OK {label} {kv}", flush=True)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="scripts/gpu_smoke.sh", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                    help="auto: cuda when torch sees a GPU, else the scaled-down CPU run")
    ap.add_argument("--only", default=",".join(STEPS),
                    help=f"comma-separated steps to run (default all: {','.join(STEPS)})")
    ap.add_argument("--photos", default=None,
                    help="a folder of photos (.jpg/.png) for the JPEG tree and the ops images")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary folder)")
    ap.add_argument("--worker", choices=("killed", "ranks"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    only = [x for x in args.only.split(",") if x]
    unknown = [x for x in only if x not in STEPS]
    if unknown or not only:
        ap.error(f"--only: unknown step(s) {', '.join(unknown) or '(none given)'}; the steps are {', '.join(STEPS)}")
    args.only = only
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING, format="    %(name)s: %(message)s")
    logging.getLogger("hpcaug").setLevel(logging.WARNING)
    if args.worker:
        run_worker(args.worker, Path(args.worker_dir))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: --device cuda but torch sees no GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # a check, not a speed test: on a busy machine 2+ threads stall each other
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="hpcaug-smoke-")
    work = Path(args.keep or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    s = Smoke(args, device, work)
    t_start = time.perf_counter()
    s.step = "env"
    _environment(s)
    steps: dict[str, Callable[[Smoke], None]] = {"train": step_train, "loader": step_loader, "ops": step_ops,
                                                 "resume": step_resume, "memory": step_memory, "dali": step_dali,
                                                 "ranks": step_ranks}
    for name in [n for n in STEPS if n in args.only]:
        s.step = name
        t0 = time.perf_counter()
        try:
            steps[name](s)
            if name not in s.skipped:
                s.say(f"done in {time.perf_counter() - t0:.1f} s")
        except Exception as e:  # noqa: BLE001  every step runs; the failures are summed up at the end
            s.failed.append(name)
            traceback.print_exc()
            s.say(f"FAILED {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    s.step = "env"
    s.say(f"all steps in {time.perf_counter() - t_start:.1f} s")
    rc = _summary(s)
    if tmp is not None:
        tmp.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())

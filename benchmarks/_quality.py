"""What the Fashion-MNIST quality benchmarks share: the regime (configs/fmnist_quality.yaml), its
data, training a policy from scratch and scoring it on the 10,000-image test list.

Used by benchmarks/search_vs_baselines.py, element_ground_truth.py, reward_direction.py and
augmentation_timing.py. They train into one tree,
runs/quality_trainings/<settings key>/<policy>/s<seed>: a finished training dir is reused
(train() resumes from its checkpoint and returns at once), so an interrupted benchmark picks up
where it stopped, and the no-augmentation and uniform trainings of one benchmark serve the
others. Dirs are keyed by the settings that matter.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hpcaug.config import Config, load_config  # noqa: E402
from hpcaug.data import build_val_loader  # noqa: E402
from hpcaug.ops.policy import AWSPolicy, Policy  # noqa: E402
from hpcaug.search import power, ppo  # noqa: E402
from hpcaug.train import build_model, evaluate, load_checkpoint, train  # noqa: E402
from hpcaug.train.loop import TrainHooks  # noqa: E402

REGIME = REPO / "configs" / "fmnist_quality.yaml"
TRAIN_PER_CLASS = 100  # the regime's training split: data_prep's search_train, 100 images per class
TEST_SPLIT = "val"  # data_prep's val list is the 10,000-image Fashion-MNIST test set
TRAININGS = REPO / "runs" / "quality_trainings"


def regime(overrides: Sequence[str] = (), config: Path = REGIME) -> Config:
    """The regime's config (with --set style overrides); prepares its data dir when it is missing."""
    cfg = load_config(config, list(overrides))
    data = Path(cfg.data.dir) if Path(cfg.data.dir).is_absolute() else REPO / cfg.data.dir
    if not (data / "dataset.json").is_file():
        from data_prep.fashion_mnist import prepare

        print(f"preparing {data} (Fashion-MNIST, {TRAIN_PER_CLASS} training images per class)", flush=True)
        prepare(data, search_train_per_class=TRAIN_PER_CLASS, quiet=True)
    return cfg.replace(**{"data.dir": str(data)})


def settings_key(cfg: Config, *sections: str) -> str:
    """A short hash of the config sections that decide a result: a cached dir is never reused
    under other settings."""
    d = json.loads(cfg.to_json())
    data = Path(d["data"]["dir"])
    if data.is_relative_to(REPO):  # the same key in every checkout of the repo
        d["data"]["dir"] = str(data.relative_to(REPO))
    blob = json.dumps({s: d[s] for s in sections}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def test_top1(cfg: Config, checkpoint: Path, dist: Any, split: str = TEST_SPLIT) -> float:
    """Top-1 of a trained checkpoint on a whole split (default: the test set). Kept beside the
    checkpoint (top1_<split>.json, with the checkpoint's mtime and size), so a rerun of a benchmark
    does not evaluate its finished trainings again."""
    cache = checkpoint.parent / f"top1_{split}.json"
    st = checkpoint.stat()
    stamp = {"checkpoint_mtime_ns": st.st_mtime_ns, "checkpoint_size": st.st_size}
    if cache.is_file():
        held = json.loads(cache.read_text())
        if {k: held.get(k) for k in stamp} == stamp:
            return float(held["top1"])
    loader = build_val_loader(cfg, dist.rank, dist.size, dist.device, split=split)
    try:
        model = build_model(cfg.train.model, loader.num_classes)
        model.load_state_dict(load_checkpoint(checkpoint)["model"])
        top1 = float(evaluate(model, loader, dist)["val_top1"])
    finally:
        loader.close()
    if dist.rank == 0:
        cache.write_text(json.dumps({**stamp, "top1": top1}))
    return top1


def training_dir(cfg: Config, name: str, seed: int) -> Path:
    """Where policy `name` trains with `seed` in the regime `cfg` (one tree for both benchmarks)."""
    return TRAININGS / settings_key(cfg, "data", "train") / name.replace(":", "_") / f"s{seed}"


def train_and_test(cfg: Config, policy: Policy, name: str, seed: int, dist: Any, hooks: TrainHooks | None = None
                   ) -> float:
    """Train cfg.train.epochs from scratch with `policy` (train.seed = data.seed = seed) in
    training_dir(cfg, name, seed); return test top-1. `name` must identify the policy (and the
    `hooks`, which may switch it between epochs)."""
    # validated once at the end (train.val_every 0): the per-epoch check would double the cost
    scfg = cfg.replace(**{"train.seed": seed, "data.seed": seed, "train.val_every": 0})
    res = train(scfg, training_dir(cfg, name, seed), [policy] * cfg.augment.copies, epochs=cfg.train.epochs,
                hooks=hooks, dist=dist)
    return test_top1(scfg, res.checkpoint, dist)


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def ground_truth_dir(cfg: Config, mix: float = 0.0) -> Path:
    """element_ground_truth.py's output dir: each element alone (mix 0), or at share `mix` of a
    uniform policy (its own dir, e.g. <key>_mix50)."""
    key = settings_key(cfg, "data", "train")
    return REPO / "runs" / "element_ground_truth" / (key if mix == 0 else f"{key}_mix{round(mix * 100)}")


def default_ground_truth(cfg: Config, mix: float = 0.0) -> Path:
    return ground_truth_dir(cfg, mix) / "result.json"


def ground_truths(cfg: Config) -> list[Path]:
    """Every element_ground_truth.py result of this regime: alone first, then each --mix share."""
    alone = ground_truth_dir(cfg)
    mixes = sorted(alone.parent.glob(f"{alone.name}_mix*/result.json"))
    return [p for p in [alone / "result.json", *mixes] if p.is_file()]


def ground_truth_label(ground_truth: Path) -> str:
    """'alone' or 'mix<pct>': which ground truth a result.json is (its reference row's name uses it)."""
    mix = float(json.loads(ground_truth.read_text()).get("mix", 0.0))
    return f"mix{round(mix * 100)}" if mix else "alone"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:10]


def searched_training_name(policy_path: Path) -> str:
    """A searched policy's training dir name, keyed by the policy itself: another search never reuses it."""
    return f"aws_searched_{digest(policy_path.read_bytes())}"


def ground_truth_reference(ground_truth: Path) -> tuple[str, str, AWSPolicy]:
    """(row name, training dir name, policy) of a ground truth's reference row: uniform over the
    operations without one of its harmful elements (goal (a) at 0 x uniform). The row is
    gt_not_harmful for the elements alone, gt_mix50_not_harmful for --mix 0.5; the dir is keyed
    by the harmful list, so a ground truth with other verdicts never reuses it."""
    label = ground_truth_label(ground_truth)
    name = "gt_not_harmful" if label == "alone" else f"gt_{label}_not_harmful"
    harmful = harmful_elements(ground_truth) or []
    return name, f"{name}_{digest(','.join(harmful).encode())}", without_harmful(harmful)


def harmful_elements(ground_truth: Path) -> list[str] | None:
    """The elements element_ground_truth.py's result.json found harmful; None without the file."""
    return json.loads(ground_truth.read_text())["harmful"] if ground_truth.is_file() else None


def without_harmful(harmful: Sequence[str]) -> AWSPolicy:
    """Uniform over the operations with none of the `harmful` elements: goal (a) taken to its
    limit (0 x uniform), as a reference row beside the searched policy."""
    theta = torch.zeros(ppo.NUM_OPERATIONS)
    theta[power.containing(harmful)] = -30.0  # exp(-30): never drawn, theta stays finite
    return AWSPolicy(theta, "joint")


def element_in_mix(name: str, share: float) -> AWSPolicy:
    """The uniform AWS policy re-weighted so that the operations containing element `name` hold
    `share` of the mass (uniform: 71/1296 = 0.055), the other operations keeping their ratios:
    the element's dose inside a policy, where the search moves it, not alone on every image."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    mask = power.containing(name)
    n = int(mask.sum())
    ratio = share * (ppo.NUM_OPERATIONS - n) / (n * (1.0 - share))  # an operation with it / one without
    w_in, w_out = (1.0, 1.0 / ratio) if ratio >= 1.0 else (ratio, 1.0)

    def logit(w: float) -> float:  # joint weights are sigmoid(theta): weight 1 is theta 30, as exp(-30) is 0 above
        return 30.0 if w >= 1.0 else math.log(w / (1.0 - w))

    theta = torch.full((ppo.NUM_OPERATIONS,), logit(w_out))
    theta[mask] = logit(w_in)
    return AWSPolicy(theta, "joint")


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors."""

    def ranks(v: torch.Tensor) -> torch.Tensor:  # average ranks of ties
        return torch.tensor([float((v < a).sum()) + (float((v == a).sum()) - 1) / 2 for a in v])

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))

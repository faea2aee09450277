"""Run configuration: one frozen dataclass per concern, loaded from YAML.

Every stage (shared, finetune, update, final, advaa), the CLI, submitit jobs and the tests
read the same `Config`. Values the papers lost in extraction are fields here, with the
value we chose and where it comes from in the comment (README.md, Configs). Every value is
checked when the config loads (each section's __post_init__: the range is in the message),
so nothing is created or submitted with a bad one; what only an AWS search needs (its fine-tunes
validate at least aws.reward_top_k times) is checked when its run dir opens (check_aws_search).
docs/config.md lists every section and field with its default, range and meaning
(tests/test_config_doc.py keeps it complete).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from hpcaug.policy_names import check_policy_spec

# AWS search choices (hpcaug.search.ppo implements them; docs/search.md compares them)
TRAJECTORY_DESIGNS = ("op_set", "per_image")
BASELINES = ("ema", "round_mean")
RESULT_RULES = ("last", "best_round", "mean_last")
FINETUNE_SCHEDULES = ("constant", "continue")
REWARD_EPOCHS = ("best", "last")
MODELS = ("tiny_resnet", "small_resnet", "resnet18", "resnet50", "resnet200", "wrn28_10")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


_RANGE = re.compile(r"(>=|>) (\S+)|([\[(])(\S+), (\S+)([\])])")


def _in_range(v: float, spec: str) -> bool:
    m = _RANGE.fullmatch(spec)
    assert m, f"bad range spec {spec!r}"
    if m[1]:
        return v >= float(m[2]) if m[1] == ">=" else v > float(m[2])
    lo, hi = float(m[4]), float(m[5])
    return (v >= lo if m[3] == "[" else v > lo) and (v <= hi if m[6] == "]" else v < hi)


def _check_ranges(section: str, obj: Any, **ranges: str) -> None:
    """Each named field of `obj` must lie in its range, written as the message shows it: '>= 1',
    '> 0', '[0, 1)', '(0, 1]'; every element of a tuple field must. NaN and inf never do."""
    for name, spec in ranges.items():
        value = getattr(obj, name)
        for v in value if isinstance(value, tuple) else (value,):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and _in_range(v, spec)):
                what = "every value of " if isinstance(value, tuple) else ""
                raise ValueError(f"{what}{section}.{name} must be {'in ' if spec[0] in '[(' else ''}{spec}, "
                                 f"got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared dataset is and how the loaders read it."""

    dir: str = "data/fashion_mnist"  # a data_prep output dir: dataset.json + lists/
    train_list: str = "train"  # lists/<name>.txt every stage trains on (search configs: search_train)
    val_list: str = "val"  # lists/<name>.txt every stage validates on (search configs: search_val)
    backend: str = "dali"  # dali | torch (the torchvision fallback loader)
    image_size: int = 224  # train crop and val crop side
    val_resize: int = 256  # val: resize shorter side, then centre crop image_size
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range (Inception)
    flip: bool = True
    color_jitter: float = 0.4  # Inception colour distortion strength; 0 turns it off
    mean: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
    std: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)
    batch_size: int = 256  # N images per rank per step, before the M-fold enlargement
    workers: int = 4  # DALI CPU threads / DataLoader workers per rank
    read_ahead: int = 2  # DALI loaders: steps whose files a background thread reads ahead (0 = on the training thread)
    fp16: bool = False  # emit float16 tensors
    on_corrupt: str = "error"  # error | skip: what an undecodable JPEG does
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.backend in ("dali", "torch"), f"data.backend must be 'dali' or 'torch', got {self.backend!r}")
        _check(self.on_corrupt in ("error", "skip"),
               f"data.on_corrupt must be 'error' or 'skip', got {self.on_corrupt!r}")
        _check_ranges("data", self, image_size=">= 1", val_resize=">= 1", crop_scale="(0, 1]", color_jitter=">= 0",
                      mean="[0, 255]", std="> 0", batch_size=">= 1", workers=">= 1", read_ahead=">= 0",
                      seed=">= 0")
        _check(self.val_resize >= self.image_size,
               f"data.val_resize ({self.val_resize}) must be >= data.image_size ({self.image_size})")
        _check(self.crop_scale[0] <= self.crop_scale[1],
               f"data.crop_scale must be [lo, hi] with lo <= hi, got {self.crop_scale}")


@dataclass(frozen=True)
class AugmentConfig:
    """The augmentation policy applied on top of the standard preprocessing."""

    # none | uniform | trivialaugment | autoaugment-imagenet | randaugment-n<N>-m<M> (the parameters are
    # part of the name: hpcaug/policy_names.py) or a policy .json file
    policy: str = "uniform"
    copies: int = 1  # M of the N x M enlarged batch (AdvAA: 8; AWS ImageNet EB: 4); 1 = plain loader

    def __post_init__(self) -> None:
        check_policy_spec(self.policy, "augment.policy")
        _check_ranges("augment", self, copies=">= 1")


def _randaugment_keys_gone(values: Mapping[str, Any]) -> str:
    n, m = values.get("randaugment_n", 2), values.get("randaugment_m", 9)
    return (f"augment.randaugment_n / augment.randaugment_m are gone: RandAugment's n and m are part of the policy "
            f"name now. Delete them, and if augment.policy was randaugment, write augment.policy: "
            f"randaugment-n{n}-m{m} (docs/config.md)")


# keys of earlier versions -> (the section's values) -> what to write instead
_REMOVED_KEYS = {"augment.randaugment_n": _randaugment_keys_gone, "augment.randaugment_m": _randaugment_keys_gone}


@dataclass(frozen=True)
class TrainConfig:
    """Model and optimisation (AWS appendix F, AdvAA table 7)."""

    model: str = "resnet50"
    epochs: int = 300
    lr: float = 0.1  # per lr_ref_batch images; scaled linearly with the global batch N x M x ranks
    lr_ref_batch: int = 256
    scale_lr_with_copies: bool = False  # EB keeps the lr of the N-image batch unless set
    warmup_epochs: float = 5.0
    schedule: str = "cosine"  # cosine | constant (fine-tunes use constant)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    amp: bool = True  # autocast on CUDA only (CPU runs in float32)
    amp_dtype: str = "float16"  # float16 (with GradScaler) | bfloat16 (no GradScaler, no sync per step; Ampere+)
    channels_last: bool = True  # used only on CUDA
    micro_batches: int = 1  # split each step's N x M rows per rank into this many passes (gradient accumulation)
    seed: int = 0
    steps_per_epoch: int = 0  # 0 = one pass over the train list; > 0 caps it (tests, demo)
    log_interval: int = 50  # steps between log lines
    checkpoint_every_steps: int = 0  # 0 = once per epoch; > 0 also every K steps (preemptible queues)
    val_every: int = 1  # validate every N epochs and after the last one; 0 = after the last one only

    def __post_init__(self) -> None:
        _check(self.model in MODELS, f"train.model must be one of {MODELS}, got {self.model!r}")
        _check(self.schedule in ("cosine", "constant"),
               f"train.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        _check_ranges("train", self, epochs=">= 1", lr="> 0", lr_ref_batch=">= 1", warmup_epochs=">= 0",
                      momentum="[0, 1)", weight_decay=">= 0", label_smoothing="[0, 1)", seed=">= 0",
                      steps_per_epoch=">= 0", log_interval=">= 1", checkpoint_every_steps=">= 0", val_every=">= 0",
                      micro_batches=">= 1")
        _check(self.amp_dtype in ("float16", "bfloat16"),
               f"train.amp_dtype must be 'float16' or 'bfloat16', got {self.amp_dtype!r}")
        _check(self.momentum > 0 or not self.nesterov, "train.nesterov needs train.momentum > 0: set one of them")

    def validates_after(self, epoch: int, epochs: int) -> bool:
        """Whether a training of `epochs` epochs validates after epoch `epoch` (0-based): after every
        val_every-th epoch and after the last one (val_every 0: the last one only). The one rule:
        hpcaug.train.loop validates by it and check_aws_search counts a fine-tune's validations by it."""
        return epoch + 1 == epochs or (self.val_every > 0 and (epoch + 1) % self.val_every == 0)

    def validated_epochs(self, epochs: int) -> int:
        """How many epochs of a training of `epochs` epochs validate (validates_after)."""
        return sum(self.validates_after(e, epochs) for e in range(epochs))


@dataclass(frozen=True)
class DistConfig:
    # auto (horovod if importable and launched with > 1 rank, else single) | horovod | torch | single
    backend: str = "auto"
    compression: str = "none"  # none | fp16: gradients travel as float16 in the allreduce (Horovod and DDP)

    def __post_init__(self) -> None:
        _check(self.backend in ("auto", "horovod", "torch", "single"),
               f"dist.backend must be auto|horovod|torch|single, got {self.backend!r}")
        _check(self.compression in ("none", "fp16"),
               f"dist.compression must be 'none' or 'fp16', got {self.compression!r}")


@dataclass(frozen=True)
class AWSConfig:
    """AWS search. Values lost from the paper's text follow the authors' CIFAR config."""

    shared_epochs: int = 200  # E1: shared stage, uniform policy
    finetune_epochs: int = 10  # E2
    finetune_lr: float = 0.001  # constant lr of each fine-tune (finetune_schedule: constant)
    # constant = the shared stage anneals over its E1 epochs, each fine-tune runs at finetune_lr |
    # continue = one train.schedule over E1 + E2 epochs at train.lr: the shared stage is its first E1
    # epochs, each fine-tune its last E2 (docs/search.md, "The proxy's horizon")
    finetune_schedule: str = "constant"
    reward_top_k: int = 2  # reward = mean of k validation accuracies of the fine-tune: its best k or last k
    reward_epochs: str = "best"  # best (the paper's) | last (the annealed end of a continue fine-tune)
    rounds: int = 350
    trajectories_per_round: int = 20  # T: finetune array tasks per PPO update (our choice)
    quorum: float = 0.8  # fraction of a round's trajectories the update needs
    parametrisation: str = "joint"  # joint: theta[1296] | factorised: p(e1) p(e2|e1) (authors' code)
    policy_lr: float = 0.1
    policy_lr_warmup_rounds: int = 5  # linear warm-up to policy_lr, then constant (our choice)
    adam_betas: tuple[float, float] = (0.5, 0.999)
    ppo_clip: float = 0.2
    ppo_epochs: int = 5
    ppo_kl_stop: float = 0.002
    baseline_momentum: float = 0.9
    final_epochs: int = 300
    # What a trajectory is (docs/search.md, "Trajectory designs"; chosen by benchmarks/search_power.py):
    # op_set = the fine-tune applies K operations drawn from p_theta once | per_image = the paper's wording
    trajectory: str = "op_set"
    ops_per_trajectory: int = 16  # K of op_set
    baseline: str = "ema"  # ema (the paper's, weight baseline_momentum) | round_mean (the round's own mean, no lag)
    result_policy: str = "last"  # which theta becomes policy.json: last | best_round (authors' code) | mean_last
    result_window: int = 10  # mean_last: how many of the newest thetas are averaged

    def __post_init__(self) -> None:
        _check(self.parametrisation in ("joint", "factorised"),
               f"aws.parametrisation must be 'joint' or 'factorised', got {self.parametrisation!r}")
        for key, valid in (("trajectory", TRAJECTORY_DESIGNS), ("baseline", BASELINES),
                           ("result_policy", RESULT_RULES), ("finetune_schedule", FINETUNE_SCHEDULES),
                           ("reward_epochs", REWARD_EPOCHS)):
            _check(getattr(self, key) in valid,
                   f"aws.{key} must be one of {', '.join(valid)}, got {getattr(self, key)!r}")
        _check_ranges("aws", self, shared_epochs=">= 1", finetune_epochs=">= 1", finetune_lr="> 0", reward_top_k=">= 1",
                      rounds=">= 1", trajectories_per_round=">= 1", quorum="(0, 1]", policy_lr="> 0",
                      policy_lr_warmup_rounds=">= 0", adam_betas="[0, 1)", ppo_clip="(0, 1)", ppo_epochs=">= 1",
                      ppo_kl_stop="> 0", baseline_momentum="[0, 1)", final_epochs=">= 1",
                      ops_per_trajectory=">= 1", result_window=">= 1")
        _check(self.finetune_epochs >= self.reward_top_k,
               f"aws.finetune_epochs ({self.finetune_epochs}) must be >= aws.reward_top_k ({self.reward_top_k})")


@dataclass(frozen=True)
class AdvAAConfig:
    """Adversarial AutoAugment controller (seed 2, section 3.2 and table 7)."""

    num_policies: int = 8  # M
    sub_policies: int = 5  # Q
    ops_per_sub_policy: int = 2
    num_magnitudes: int = 10
    hidden: int = 100
    embedding: int = 32
    lr: float = 0.00035
    entropy_weight: float = 1e-5

    def __post_init__(self) -> None:
        _check_ranges("advaa", self, num_policies=">= 1", sub_policies=">= 1", ops_per_sub_policy=">= 1",
                      num_magnitudes=">= 1", hidden=">= 1", embedding=">= 1", lr="> 0", entropy_weight=">= 0")


@dataclass(frozen=True)
class ClusterConfig:
    """How stages become SLURM jobs (submitit). Times in minutes."""

    executor: str = "slurm"  # slurm | local (submitit local executor) | inline (this process)
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    nodes: int = 1  # for the multi-node stages (shared, final, advaa)
    gpus_per_node: int = 8
    cpus_per_task: int = 8
    mem_gb: int = 0  # 0 = the partition's default
    finetune_gpus: int = 1  # GPUs of one finetune array task
    array_parallelism: int = 0  # SLURM %K throttle for finetune arrays; 0 = none
    time_shared: int = 24 * 60
    time_finetune: int = 4 * 60
    time_update: int = 30
    time_final: int = 48 * 60
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load ..., source venv)

    def __post_init__(self) -> None:
        _check(self.executor in ("slurm", "local", "inline"),
               f"cluster.executor must be slurm|local|inline, got {self.executor!r}")
        # checked here, not by sbatch: a bad value would otherwise fail half-way through a chain
        _check_ranges("cluster", self, nodes=">= 1", gpus_per_node=">= 0", cpus_per_task=">= 1", mem_gb=">= 0",
                      finetune_gpus=">= 0", array_parallelism=">= 0", time_shared=">= 1", time_finetune=">= 1",
                      time_update=">= 1", time_final=">= 1")


@dataclass(frozen=True)
class Config:
    name: str = "run"
    run_dir: str = ""  # "" = runs/<name>
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    aws: AWSConfig = field(default_factory=AWSConfig)
    advaa: AdvAAConfig = field(default_factory=AdvAAConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        # float16 images into float32 weights is a dtype error on CUDA (the CPU path casts)
        _check(self.train.amp or not self.data.fp16,
               "data.fp16: true needs train.amp: true (half-precision images feed the autocast forward); "
               "set data.fp16: false to train in float32")

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or os.path.join("runs", self.name))

    def replace(self, **changes: Any) -> Config:
        """Copy with top-level or dotted changes: cfg.replace(**{"train.lr": 0.1})."""
        return from_dict(_merge(to_dict(self), _dotted_to_nested(changes)))

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=2, sort_keys=True)


def check_aws_search(cfg: Config) -> None:
    """What an AWS search needs of its config beyond each section's own checks; aws.open_run calls
    it before a search's run dir is created or resumed. Not a Config check: a plain training (the
    final trainings of benchmarks/_quality.py) may validate once (train.val_every 0) whatever its
    aws section says, because it runs no fine-tune."""
    a, every = cfg.aws, cfg.train.val_every
    n = cfg.train.validated_epochs(a.finetune_epochs)
    _check(n >= a.reward_top_k,
           f"a fine-tune of aws.finetune_epochs={a.finetune_epochs} epochs validates only {n} time(s) under "
           f"train.val_every={every} (every val_every-th epoch and the last; 0 = the last only), but its reward "
           f"averages the best aws.reward_top_k={a.reward_top_k} validation accuracies: set train.val_every: 1, "
           f"lower aws.reward_top_k to {n}, or raise aws.finetune_epochs")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _dotted_to_nested(changes: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in changes.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"config section {where or 'top level'} must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    for k in unknown:
        if where + k in _REMOVED_KEYS:
            raise ValueError(_REMOVED_KEYS[where + k](values))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                         f"valid keys here: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}{name}.")
        elif isinstance(default, tuple):
            kwargs[name] = _tuple(default, value, where + name)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where}{name} must be true or false, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, (int, float)):
            kwargs[name] = _number(default, value, where + name)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"{where}{name} must be a string, got {value!r}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _number(default: int | float, value: Any, key: str) -> int | float:
    """`value` as the type of `default`; the range checks are the dataclasses' own."""
    value = _yaml_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    if isinstance(default, int) and value != int(value):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return type(default)(value)


def _tuple(default: tuple[Any, ...], value: Any, key: str) -> tuple[Any, ...]:
    """A list for a tuple field; a numeric one (data.mean, aws.adam_betas, ...) keeps its length."""
    items = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not default or not all(isinstance(d, (int, float)) for d in default):
        return items
    if len(items) != len(default):
        raise ValueError(f"{key} must be a list of {len(default)} numbers, got {value!r}")
    return tuple(_number(d, v, f"{key}[{i}]") for i, (d, v) in enumerate(zip(default, items, strict=True)))


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads '1e-4' as a string; accept it as the number it plainly is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def from_dict(values: Mapping[str, Any]) -> Config:
    return _build(Config, values, "")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """['train.lr=0.1', 'data.backend=torch'] -> {'train.lr': 0.1, ...}; values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config; `overrides` are 'section.key=value' strings applied on top."""
    p = Path(path)
    if not p.is_file():
        hint = Path("configs") / f"{p.name}.yaml"
        extra = f" (did you mean {hint}?)" if hint.is_file() else ""
        raise ValueError(f"config file {str(p)!r} not found{extra}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"config file {str(p)!r} is not valid YAML: {e}") from e
    merged = _merge(raw, _dotted_to_nested(parse_overrides(overrides)))
    merged.setdefault("name", p.stem)
    return from_dict(merged)

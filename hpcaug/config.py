"""Run configuration: one frozen dataclass per concern, loaded from YAML.

Every stage (shared, finetune, update, final, advaa), the CLI, submitit jobs and the tests
read the same `Config`. Values the papers lost in extraction are fields here, with the
value we chose and where it comes from in the comment (see docs/config.md).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

POLICY_NAMES = ("none", "uniform", "autoaugment_imagenet", "randaugment", "trivialaugment")
MODELS = ("tiny_resnet", "resnet18", "resnet50", "resnet200", "wrn28_10")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared dataset is and how the loaders read it."""

    dir: str = "data/fashion_mnist"  # a data_prep output dir: dataset.json + lists/
    train_list: str = "train"  # lists/<name>.txt used for training (search stages: search_train)
    val_list: str = "val"  # lists/<name>.txt used for validation (search stages: search_val)
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
    fp16: bool = False  # emit float16 tensors
    on_corrupt: str = "error"  # error | skip: what an undecodable JPEG does
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.backend in ("dali", "torch"), f"data.backend must be 'dali' or 'torch', got {self.backend!r}")
        _check(self.on_corrupt in ("error", "skip"), f"data.on_corrupt must be 'error' or 'skip', got {self.on_corrupt!r}")
        _check(self.image_size > 0 and self.val_resize >= self.image_size,
               f"need 0 < data.image_size <= data.val_resize, got {self.image_size}, {self.val_resize}")
        _check(0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, f"data.crop_scale must be 0 < lo <= hi <= 1, got {self.crop_scale}")
        _check(self.batch_size > 0, f"data.batch_size must be > 0, got {self.batch_size}")
        _check(self.workers > 0, f"data.workers must be > 0, got {self.workers}")
        _check(self.color_jitter >= 0, f"data.color_jitter must be >= 0, got {self.color_jitter}")


@dataclass(frozen=True)
class AugmentConfig:
    """The augmentation policy applied on top of the standard preprocessing."""

    policy: str = "uniform"  # one of POLICY_NAMES or a path to a policy JSON (hpcaug.ops.policy)
    copies: int = 1  # M of the N x M enlarged batch (AdvAA: 8; AWS ImageNet EB: 4); 1 = plain loader
    randaugment_n: int = 2
    randaugment_m: int = 9  # on the 0..9 magnitude bins of the op table

    def __post_init__(self) -> None:
        _check(self.policy in POLICY_NAMES or self.policy.endswith(".json"),
               f"augment.policy must be one of {POLICY_NAMES} or a .json policy file, got {self.policy!r}")
        _check(self.copies >= 1, f"augment.copies (M) must be >= 1, got {self.copies}")
        _check(0 <= self.randaugment_m <= 9, f"augment.randaugment_m must be in 0..9, got {self.randaugment_m}")
        _check(self.randaugment_n >= 1, f"augment.randaugment_n must be >= 1, got {self.randaugment_n}")


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
    amp: bool = True  # used only on CUDA
    channels_last: bool = True  # used only on CUDA
    seed: int = 0
    steps_per_epoch: int = 0  # 0 = one pass over the train list; > 0 caps it (tests, demo)
    log_interval: int = 50  # steps between log lines
    checkpoint_every_steps: int = 0  # 0 = once per epoch; > 0 also every K steps (preemptible queues)

    def __post_init__(self) -> None:
        _check(self.model in MODELS, f"train.model must be one of {MODELS}, got {self.model!r}")
        _check(self.epochs >= 0, f"train.epochs must be >= 0, got {self.epochs}")
        _check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(self.schedule in ("cosine", "constant"), f"train.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        _check(0 <= self.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _check(self.warmup_epochs >= 0, f"train.warmup_epochs must be >= 0, got {self.warmup_epochs}")


@dataclass(frozen=True)
class DistConfig:
    backend: str = "auto"  # auto (horovod if importable and launched with > 1 rank, else single) | horovod | torch | single

    def __post_init__(self) -> None:
        _check(self.backend in ("auto", "horovod", "torch", "single"),
               f"dist.backend must be auto|horovod|torch|single, got {self.backend!r}")


@dataclass(frozen=True)
class AWSConfig:
    """AWS search. Values lost from the paper's text follow the authors' CIFAR config."""

    shared_epochs: int = 200  # E1: shared stage, uniform policy
    finetune_epochs: int = 10  # E2
    finetune_lr: float = 0.001  # constant lr of each fine-tune
    reward_top_k: int = 2  # reward = mean of the best k validation accuracies of the fine-tune
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

    def __post_init__(self) -> None:
        _check(self.parametrisation in ("joint", "factorised"),
               f"aws.parametrisation must be 'joint' or 'factorised', got {self.parametrisation!r}")
        _check(0 < self.quorum <= 1, f"aws.quorum must be in (0, 1], got {self.quorum}")
        _check(self.trajectories_per_round >= 1, "aws.trajectories_per_round must be >= 1")
        _check(1 <= self.reward_top_k, "aws.reward_top_k must be >= 1")
        _check(self.finetune_epochs >= self.reward_top_k,
               f"aws.finetune_epochs ({self.finetune_epochs}) must be >= aws.reward_top_k ({self.reward_top_k})")
        _check(0 <= self.baseline_momentum < 1, "aws.baseline_momentum must be in [0, 1)")


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
        _check(self.num_policies >= 1 and self.sub_policies >= 1, "advaa.num_policies and advaa.sub_policies must be >= 1")


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
        _check(self.executor in ("slurm", "local", "inline"), f"cluster.executor must be slurm|local|inline, got {self.executor!r}")
        _check(self.nodes >= 1 and self.gpus_per_node >= 0, "cluster.nodes must be >= 1 and cluster.gpus_per_node >= 0")


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

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or os.path.join("runs", self.name))

    def replace(self, **changes: Any) -> "Config":
        """Copy with top-level or dotted changes: cfg.replace(**{"train.lr": 0.1})."""
        return from_dict(_merge(to_dict(self), _dotted_to_nested(changes)))

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=2, sort_keys=True)


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
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                         f"valid keys here: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}{name}.")
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where}{name} must be true or false, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, (int, float)):
            value = _yaml_number(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}{name} must be a number, got {value!r}")
            if isinstance(default, int) and value != int(value):
                raise ValueError(f"{where}{name} must be an integer, got {value!r}")
            kwargs[name] = type(default)(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"{where}{name} must be a string, got {value!r}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


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

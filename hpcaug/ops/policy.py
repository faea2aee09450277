"""Policies: distributions over per-sample programs, with one interface.

`policy.sample(n, generator) -> Sampled(op_ids int64 [n, K], params float32 [n, K, 3], choice
int64 [n])`. All randomness (which operation, random signs, whether a step fires, Cutout
centres, SamplePairing partners) is drawn here from the given torch.Generator, so the
backends are deterministic functions of (images, program). Policies are immutable values
with a stable JSON form (`to_json` / `policy_from_json`, schema version SCHEMA_VERSION).
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hpcaug._atomic import atomic_write_text
from hpcaug.policy_names import FAMILIES, MAGNITUDE_BINS, RANDAUGMENT_MAX_N, is_policy_file, parse_policy_name

from .spaces import AWS_SPACE, Space
from .table import IDENTITY, NUM_BINS, OPS, get_op

SCHEMA = "hpcaug.policy"
SCHEMA_VERSION = 1

# Ops RandAugment / TrivialAugment draw from (torchvision's list: Identity + 13, no Invert).
RA_OPS: tuple[str, ...] = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
                           "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")

# AutoAugment's published ImageNet policy (as torchvision.transforms.v2.AutoAugment lists it):
# (op, probability, magnitude bin on our 10-bin table; 0 for ops without magnitude).
AUTOAUGMENT_IMAGENET: tuple[tuple[tuple[str, float, int], ...], ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.8, 0), ("Equalize", 0.6, 0)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, 0), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 0), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 0)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, 0)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 0), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 0)),
    (("Equalize", 0.0, 0), ("Equalize", 0.8, 0)),
    (("Invert", 0.6, 0), ("Equalize", 1.0, 0)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 0)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 0)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 0)),
    (("Equalize", 0.4, 0), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 0)),
    (("Invert", 0.6, 0), ("Equalize", 1.0, 0)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 0), ("Equalize", 0.6, 0)),
)

# Per-(op, bin) lookup tensors built once from the table (the only source of magnitudes).
_MAG = torch.tensor([[op.magnitude(b) for b in range(NUM_BINS)] for op in OPS], dtype=torch.float64)
_OFFSET = torch.tensor([op.offset for op in OPS], dtype=torch.float64)
_SIGNED = torch.tensor([op.signed and op.has_magnitude for op in OPS])


@dataclass(frozen=True)
class Sampled:
    """A program for n images and K steps plus what the search counts (`choice`)."""

    op_ids: torch.Tensor  # int64 [n, K], -1 = identity
    params: torch.Tensor  # float32 [n, K, 3]: (signed physical value, u1, u2)
    choice: torch.Tensor  # int64 [n]

    def __len__(self) -> int:
        return int(self.op_ids.shape[0])

    @staticmethod
    def cat(parts: Sequence[Sampled]) -> Sampled:
        """Concatenate along the batch, padding shorter programs with identity steps."""
        if not parts:
            raise ValueError("Sampled.cat needs at least one Sampled")
        k = max(p.op_ids.shape[1] for p in parts)
        ids, prm = [], []
        for p in parts:
            pad = k - p.op_ids.shape[1]
            ids.append(torch.nn.functional.pad(p.op_ids, (0, pad), value=IDENTITY))
            prm.append(torch.nn.functional.pad(p.params, (0, 0, 0, pad)))
        return Sampled(torch.cat(ids), torch.cat(prm), torch.cat([p.choice for p in parts]))


def program_from_elements(ops: torch.Tensor, bins: torch.Tensor, generator: torch.Generator | None,
                          fire: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(op ids, bins) int64 [n, K] -> (op_ids, params) with random signs and u1/u2 drawn from generator.

    `fire` (bool [n, K]) marks steps that apply; others become identity (-1). Entries with op -1
    are identity too.
    """
    n, k = ops.shape
    sign_u = torch.rand(n, k, generator=generator, dtype=torch.float64)
    u = torch.rand(n, k, 2, generator=generator)
    valid = ops >= 0
    if fire is not None:
        valid = valid & fire
    safe = ops.clamp(min=0)
    mag = _MAG[safe, bins.clamp(0, NUM_BINS - 1)]
    sign = torch.where(_SIGNED[safe] & (sign_u < 0.5), -1.0, 1.0).to(torch.float64)
    value = torch.where(valid, _OFFSET[safe] + sign * mag, 0.0)
    params = torch.cat([value.to(torch.float32).unsqueeze(-1), u], dim=-1)
    op_ids = torch.where(valid, ops, torch.full_like(ops, IDENTITY))
    return op_ids, params


class Policy(ABC):
    """Common interface: sample(n, generator) -> Sampled; num_choices; JSON round trip."""

    kind: str = ""

    @property
    @abstractmethod
    def num_choices(self) -> int: ...

    @property
    @abstractmethod
    def augmentations(self) -> frozenset[str]:
        """Names of the ops (hpcaug.ops.table) this policy can emit: a DALI graph builds a branch
        for each. Fixed per policy kind where the kind fixes the op list, so that loaders keep
        their graph when new policies of the same kind arrive (AdvAA's every epoch)."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Sampled: ...

    @abstractmethod
    def _fields(self) -> dict[str, Any]: ...

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, "type": self.kind, **self._fields()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON form atomically (temp file + rename)."""
        atomic_write_text(path, self.to_json())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        f = self._fields()
        short = {k: (f"<{len(v)} values>" if isinstance(v, list) and len(v) > 8 else v) for k, v in f.items()}
        return f"{type(self).__name__}({short})"


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"sample(n): n must be an int >= 0, got {n!r}")


# ---------------------------------------------------------------------------------------- AWS
AWS_PARAMETRISATIONS = ("joint", "factorised")


def aws_theta_size(parametrisation: str = "joint") -> int:
    """1296 for 'joint' (theta per operation); 36 + 36*36 for 'factorised' (p(e1) p(e2|e1))."""
    e = AWS_SPACE.num_elements
    if parametrisation == "joint":
        return e * e
    if parametrisation == "factorised":
        return e + e * e
    raise ValueError(f"parametrisation must be one of {AWS_PARAMETRISATIONS}, got {parametrisation!r}")


def aws_log_probs(theta: torch.Tensor, parametrisation: str = "joint") -> torch.Tensor:
    """log p over the 1296 AWS operations; differentiable in theta (for PPO).

    joint: p_k = sigmoid(theta_k) / sum_j sigmoid(theta_j) (AWS paper);
    factorised: p(e1) = normalised sigmoid of theta[:36], p(e2|e1) = normalised sigmoid of row e1
    of theta[36:].view(36, 36) (the authors' public code).
    """
    e = AWS_SPACE.num_elements
    if theta.dim() != 1 or theta.numel() != aws_theta_size(parametrisation):
        raise ValueError(f"theta for the {parametrisation} AWS parametrisation must be 1-D with "
                         f"{aws_theta_size(parametrisation)} entries, got shape {tuple(theta.shape)}")
    ls = torch.nn.functional.logsigmoid(theta)
    if parametrisation == "joint":
        return ls - torch.logsumexp(ls, 0)
    first = ls[:e] - torch.logsumexp(ls[:e], 0)
    cond = ls[e:].view(e, e)
    cond = cond - torch.logsumexp(cond, 1, keepdim=True)
    return (first[:, None] + cond).reshape(-1)


class _AWSOperations(Policy):
    """A policy over the 1296 AWS operations (AWSPolicy, AWSOperationSet): the choice is the
    operation index (first element * 36 + second), and its two elements are the program."""

    _EL_OP = torch.tensor([x.op for x in AWS_SPACE.elements], dtype=torch.int64)
    _EL_BIN = torch.tensor([x.bin for x in AWS_SPACE.elements], dtype=torch.int64)

    @property
    def num_choices(self) -> int:
        return AWS_SPACE.num_operations

    @property
    def augmentations(self) -> frozenset[str]:
        return AWS_SPACE.op_names

    def _program(self, choice: torch.Tensor, generator: torch.Generator | None) -> Sampled:
        """The sampled operations `choice` [n] as programs of their two elements."""
        e = AWS_SPACE.num_elements
        els = torch.stack([choice // e, choice % e], dim=1)
        op_ids, params = program_from_elements(self._EL_OP[els], self._EL_BIN[els], generator)
        return Sampled(op_ids, params, choice)


class AWSPolicy(_AWSOperations):
    """p_theta over the 1296 AWS operations (ordered element pairs); one operation per image."""

    kind = "aws"

    def __init__(self, theta: torch.Tensor | Sequence[float], parametrisation: str = "joint") -> None:
        t = torch.as_tensor(theta).detach().clone()
        if not t.is_floating_point():
            t = t.to(torch.float32)
        if parametrisation not in AWS_PARAMETRISATIONS:
            raise ValueError(f"parametrisation must be one of {AWS_PARAMETRISATIONS}, got {parametrisation!r}")
        if t.dim() != 1 or t.numel() != aws_theta_size(parametrisation):
            raise ValueError(f"AWSPolicy({parametrisation}): theta must be 1-D with {aws_theta_size(parametrisation)} "
                             f"entries, got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError("AWSPolicy: theta has NaN or inf entries")
        self.theta = t.cpu()
        self.parametrisation = parametrisation
        self.space: Space = AWS_SPACE

    @classmethod
    def uniform(cls, parametrisation: str = "joint") -> AWSPolicy:
        return cls(torch.zeros(aws_theta_size(parametrisation)), parametrisation)

    def log_probs(self) -> torch.Tensor:
        return aws_log_probs(self.theta.to(torch.float64), self.parametrisation)

    def probs(self) -> torch.Tensor:
        return self.log_probs().exp()

    def log_prob(self, choice: torch.Tensor) -> torch.Tensor:
        return self.log_probs()[choice]

    def entropy(self) -> torch.Tensor:
        lp = self.log_probs()
        return -(lp.exp() * lp).sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Sampled:
        _check_n(n)
        if n == 0:
            choice = torch.zeros(0, dtype=torch.int64)
        else:
            choice = torch.multinomial(self.probs(), n, replacement=True, generator=generator)
        return self._program(choice, generator)

    def _fields(self) -> dict[str, Any]:
        return {"parametrisation": self.parametrisation, "dtype": str(self.theta.dtype).replace("torch.", ""),
                "theta": [float(x) for x in self.theta.tolist()]}


def UniformAWS() -> AWSPolicy:  # noqa: N802  (a named policy, kept as in docs/architecture.md)
    """The uniform AWS policy (theta = 0): the shared stage's policy."""
    return AWSPolicy.uniform()


class AWSOperationSet(_AWSOperations):
    """A fixed multiset of K AWS operations; each image gets one of them, uniformly.

    What one trajectory of the `op_set` search design applies: the K operations were drawn from
    p_theta once for the whole fine-tune (hpcaug.search), so trajectories of one round differ in
    which operations they apply, not only by sampling noise. `choice` is the operation index
    (0..1295), as for AWSPolicy, so the loaders' op counts mean the same for both.
    """

    kind = "aws_set"

    def __init__(self, operations: Sequence[int]) -> None:
        ops = [int(k) for k in operations]
        n = AWS_SPACE.num_operations
        if not ops:
            raise ValueError("AWSOperationSet needs at least one operation index")
        bad = [k for k in ops if not 0 <= k < n]
        if bad:
            raise ValueError(f"AWSOperationSet: operation indices must be in 0..{n - 1}, got {bad[:5]}")
        self.operations: tuple[int, ...] = tuple(ops)
        self._ops = torch.tensor(ops, dtype=torch.int64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Sampled:
        _check_n(n)
        choice = self._ops[torch.randint(len(self._ops), (n,), generator=generator)]
        return self._program(choice, generator)

    def _fields(self) -> dict[str, Any]:
        return {"operations": list(self.operations)}


# --------------------------------------------------------------------------------- sub-policies
SubPolicy = tuple[tuple[str, float, int], ...]


class SubPolicyPolicy(Policy):
    """AutoAugment-style list of sub-policies; each image gets one, chosen uniformly.

    Each step is (op name, probability, magnitude bin 0..9). AdvAA policies use probability 1.
    """

    kind = "subpolicies"

    def __init__(self, sub_policies: Sequence[Sequence[Sequence[Any]]]) -> None:
        if not sub_policies:
            raise ValueError("SubPolicyPolicy needs at least one sub-policy")
        subs: list[SubPolicy] = []
        for i, sp in enumerate(sub_policies):
            if not sp:
                raise ValueError(f"sub-policy {i} is empty; give at least one (op, probability, bin) step")
            steps = []
            for step in sp:
                if len(step) != 3:
                    raise ValueError(f"sub-policy {i}: each step is (op name, probability, bin), got {step!r}")
                name, prob, b = step
                spec = get_op(name) if isinstance(name, str) else get_op(int(name))
                b = 0 if b is None else b
                if isinstance(b, float) and b.is_integer():
                    b = int(b)
                spec.magnitude(b)  # validates the bin
                if not 0.0 <= float(prob) <= 1.0:
                    raise ValueError(f"sub-policy {i}: probability of {spec.name} must be in [0, 1], got {prob}")
                steps.append((spec.name, float(prob), int(b)))
            subs.append(tuple(steps))
        self.sub_policies: tuple[SubPolicy, ...] = tuple(subs)
        k = max(len(s) for s in subs)
        self._ops = torch.full((len(subs), k), IDENTITY, dtype=torch.int64)
        self._bins = torch.zeros(len(subs), k, dtype=torch.int64)
        self._prob = torch.zeros(len(subs), k, dtype=torch.float64)
        for i, s in enumerate(subs):
            for j, (name, p, b) in enumerate(s):
                self._ops[i, j], self._bins[i, j], self._prob[i, j] = get_op(name).id, b, p

    @classmethod
    def autoaugment_imagenet(cls) -> SubPolicyPolicy:
        """AutoAugment's published ImageNet policy (25 sub-policies)."""
        return cls(AUTOAUGMENT_IMAGENET)

    @classmethod
    def from_advaa(cls, elements: Sequence[Sequence[int]]) -> SubPolicyPolicy:
        """AdvAA controller output: per sub-policy, ADVAA_SPACE element indices (op_id * 10 + bin)."""
        subs = [[(OPS[e // NUM_BINS].name, 1.0, e % NUM_BINS) for e in _check_advaa(sp)] for sp in elements]
        return cls(subs)

    @property
    def num_choices(self) -> int:
        return len(self.sub_policies)

    @property
    def augmentations(self) -> frozenset[str]:
        """Every op of the table: a sub-policy list is data (AdvAA draws new lists every epoch),
        so a graph built for one list must run the next (the ops in use: `sub_policies`)."""
        return frozenset(op.name for op in OPS)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Sampled:
        _check_n(n)
        choice = torch.randint(len(self.sub_policies), (n,), generator=generator)
        fire = torch.rand(n, self._ops.shape[1], generator=generator, dtype=torch.float64) < self._prob[choice]
        op_ids, params = program_from_elements(self._ops[choice], self._bins[choice], generator, fire)
        return Sampled(op_ids, params, choice)

    def _fields(self) -> dict[str, Any]:
        return {"sub_policies": [[list(step) for step in sp] for sp in self.sub_policies]}


def _check_advaa(sp: Sequence[int]) -> list[int]:
    out = []
    for e in sp:
        if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < len(OPS) * NUM_BINS:
            raise ValueError(f"AdvAA element index must be an int in 0..{len(OPS) * NUM_BINS - 1}, got {e!r}")
        out.append(e)
    return out


# -------------------------------------------------------------------- RandAugment / Trivial / None
def _ra_op_ids() -> torch.Tensor:
    return torch.tensor([IDENTITY if n == "Identity" else get_op(n).id for n in RA_OPS], dtype=torch.int64)


class RandAugment(Policy):
    """RandAugment(n, m): n ops drawn uniformly (with replacement) from RA_OPS, all at bin m.

    choice = mixed-radix index of the n drawn ops (sum op_k * 14**(n-1-k)).
    """

    kind = "randaugment"

    def __init__(self, n: int = 2, m: int = 9) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= RANDAUGMENT_MAX_N:
            raise ValueError(f"RandAugment: n (ops per image) must be an int in 1..{RANDAUGMENT_MAX_N} (the loop "
                             f"counts 14**n choices), got {n!r}")
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < NUM_BINS:
            raise ValueError(f"RandAugment: m (magnitude bin) must be an int in 0..{NUM_BINS - 1}, got {m!r}")
        self.n, self.m = n, m
        self._ids = _ra_op_ids()

    @property
    def num_choices(self) -> int:
        return len(RA_OPS) ** self.n

    @property
    def augmentations(self) -> frozenset[str]:
        return frozenset(RA_OPS) - {"Identity"}

    def sample(self, n: int, generator: torch.Generator | None = None) -> Sampled:
        _check_n(n)
        idx = torch.randint(len(RA_OPS), (n, self.n), generator=generator)
        op_ids, params = program_from_elements(self._ids[idx], torch.full_like(idx, self.m), generator)
        radix = len(RA_OPS) ** torch.arange(self.n - 1, -1, -1)
        return Sampled(op_ids, params, (idx * radix).sum(1))

    def _fields(self) -> dict[str, Any]:
        return {"n": self.n, "m": self.m}


class TrivialAugment(Policy):
    """TrivialAugment: one op from RA_OPS and one bin in 0..9, both uniform; choice = op * 10 + bin."""

    kind = "trivialaugment"

    def __init__(self) -> None:
        self._ids = _ra_op_ids()

    @property
    def num_choices(self) -> int:
        return len(RA_OPS) * NUM_BINS

    @property
    def augmentations(self) -> frozenset[str]:
        return frozenset(RA_OPS) - {"Identity"}

    def sample(self, n: int, generator: torch.Generator | None = None) -> Sampled:
        _check_n(n)
        idx = torch.randint(len(RA_OPS), (n, 1), generator=generator)
        bins = torch.randint(NUM_BINS, (n, 1), generator=generator)
        op_ids, params = program_from_elements(self._ids[idx], bins, generator)
        return Sampled(op_ids, params, (idx * NUM_BINS + bins)[:, 0])

    def _fields(self) -> dict[str, Any]:
        return {}


class NoPolicy(Policy):
    """No augmentation: one identity step per image, choice 0."""

    kind = "none"

    @property
    def num_choices(self) -> int:
        return 1

    @property
    def augmentations(self) -> frozenset[str]:
        return frozenset()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Sampled:
        _check_n(n)
        return Sampled(torch.full((n, 1), IDENTITY, dtype=torch.int64), torch.zeros(n, 1, 3),
                       torch.zeros(n, dtype=torch.int64))

    def _fields(self) -> dict[str, Any]:
        return {}


# ------------------------------------------------------------------------------------ JSON, load
def policy_from_dict(d: dict[str, Any]) -> Policy:
    """Build a policy from its dict form; ValueError says what is wrong."""
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise ValueError(f"not an hpcaug policy: expected a JSON object with \"schema\": \"{SCHEMA}\"")
    if d.get("version") != SCHEMA_VERSION:
        raise ValueError(f"policy schema version {d.get('version')!r} is not supported (this hpcaug reads "
                         f"version {SCHEMA_VERSION}); re-save the policy with a matching hpcaug")
    kind = d.get("type")
    try:
        if kind == "aws":
            dtype = getattr(torch, d.get("dtype", "float32"))
            return AWSPolicy(torch.tensor(d["theta"], dtype=dtype), d.get("parametrisation", "joint"))
        if kind == "aws_set":
            return AWSOperationSet(d["operations"])
        if kind == "subpolicies":
            return SubPolicyPolicy(d["sub_policies"])
        if kind == "randaugment":
            return RandAugment(int(d["n"]), int(d["m"]))
        if kind == "trivialaugment":
            return TrivialAugment()
        if kind == "none":
            return NoPolicy()
    except KeyError as e:
        raise ValueError(f"policy of type {kind!r} is missing field {e}") from None
    raise ValueError(f"unknown policy type {kind!r}; valid: aws, aws_set, subpolicies, randaugment, trivialaugment, "
                     "none")


def policy_from_json(text: str) -> Policy:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"policy JSON is not valid JSON: {e}") from e
    return policy_from_dict(d)


Policy.from_json = staticmethod(policy_from_json)  # type: ignore[attr-defined]

# The policy a name of hpcaug.policy_names stands for: one builder per family, called with the
# name's parameters (randaugment-n2-m9 -> RandAugment(n=2, m=9)).
_BUILDERS: dict[str, Callable[..., Policy]] = {
    "none": NoPolicy,
    "uniform": AWSPolicy.uniform,
    "trivialaugment": TrivialAugment,
    "autoaugment-imagenet": SubPolicyPolicy.autoaugment_imagenet,
    "randaugment": RandAugment,
}
if set(_BUILDERS) != set(FAMILIES) or MAGNITUDE_BINS != NUM_BINS:  # the name grammar is checked without torch
    raise RuntimeError(f"hpcaug.policy_names is out of step with hpcaug.ops.policy: families {sorted(FAMILIES)} vs "
                       f"builders {sorted(_BUILDERS)}, MAGNITUDE_BINS {MAGNITUDE_BINS} vs NUM_BINS {NUM_BINS}")


def load_policy(spec: str | os.PathLike[str]) -> Policy:
    """A policy name or a policy .json file -> Policy.

    Names (hpcaug.policy_names, parsed strictly): none | uniform | trivialaugment |
    autoaugment-imagenet | randaugment-n<N>-m<M>; a ValueError names what is accepted.
    """
    spec = os.fspath(spec)
    if is_policy_file(spec):
        p = Path(spec)
        if not p.is_file():
            raise ValueError(f"policy file {str(p)!r} not found")
        return policy_from_json(p.read_text())
    name = parse_policy_name(spec)
    return _BUILDERS[name.family](**name.kwargs)

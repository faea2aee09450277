"""Policy names: the one grammar of `augment.policy`, `--policy` and `hpcaug.ops.load_policy`.

A policy is a name (timm's style, every part parsed strictly) or a policy .json file:

    none                     no augmentation
    uniform                  AWS's uniform policy over the 1296 operations (the shared stage)
    trivialaugment           TrivialAugment: one op and one magnitude bin, both uniform
    autoaugment-imagenet     AutoAugment's ImageNet policy (25 sub-policies)
    randaugment-n<N>-m<M>    RandAugment: N ops per image (N in 1..4), all at magnitude bin M (0..9)
    <path>.json              a policy file (the JSON form of hpcaug.ops.policy)

Strict means: lower case, the parameters in the order shown, each once, decimal integers
without leading zeros, in range; anything else is an error naming what is accepted (timm's
`rand-...` strings taught this: its lax parsing switched features on by accident). So each
policy has exactly one name, and `str(parse_policy_name(s)) == s`.
The spellings of hpcaug before these names, `autoaugment_imagenet` and `randaugment` (whose n
and m came from the config keys augment.randaugment_n / randaugment_m), are refused with the
new spelling in the message rather than kept as aliases (docs/config.md says why).

Nothing heavy is imported here: the config checks a name with it before torch is loaded;
hpcaug.ops.policy builds the policy a name stands for.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

# = hpcaug.ops.table.NUM_BINS, written here so that checking a name needs no torch;
# hpcaug.ops.policy refuses to import if the two differ.
MAGNITUDE_BINS = 10


@dataclass(frozen=True)
class Param:
    """One parameter of a name: written `<key><int>`; `key` is the policy constructor's argument."""

    key: str
    meaning: str
    example: int
    lo: int
    hi: int | None = None  # None: no upper bound

    @property
    def accepted(self) -> str:
        values = f">= {self.lo}" if self.hi is None else f"in {self.lo}..{self.hi}"
        return f"{self.key}: {self.meaning}, an int {values}"


RANDAUGMENT_MAX_N = 4

# family -> its parameters, in the order they are written (hpcaug.ops.policy has a builder for each)
FAMILIES: dict[str, tuple[Param, ...]] = {
    "none": (),
    "uniform": (),
    "trivialaugment": (),
    "autoaugment-imagenet": (),
    # n <= RANDAUGMENT_MAX_N: the training loop counts each of the 14**n choices (n = 4: 38,416 counts)
    "randaugment": (Param("n", "ops per image", example=2, lo=1, hi=RANDAUGMENT_MAX_N),
                    Param("m", "magnitude bin", example=9, lo=0, hi=MAGNITUDE_BINS - 1)),
}
# old spellings -> a hint after the error (not accepted: one name per policy)
_OLD = {"autoaugment_imagenet": "it is spelled 'autoaugment-imagenet' now",
        "randaugment": "before, 'randaugment' took n and m from augment.randaugment_n / randaugment_m, whose "
                       "defaults make 'randaugment-n2-m9'"}
_PART = re.compile(r"([a-z]+)(0|[1-9][0-9]*)")


def form(family: str) -> str:
    """How a family is written, e.g. 'randaugment-n<N>-m<M>'."""
    return "-".join([family, *(f"{p.key}<{p.key.upper()}>" for p in FAMILIES[family])])


def accepted() -> str:
    """Every accepted spelling, for error messages and --help."""
    forms = [form(f) + (f" ({'; '.join(p.accepted for p in FAMILIES[f])})" if FAMILIES[f] else "")
             for f in FAMILIES]
    return ", ".join(forms) + ", or a policy .json file"


@dataclass(frozen=True)
class PolicyName:
    """A parsed name: `family` (a key of FAMILIES) and its parameters in written order."""

    family: str
    params: tuple[tuple[str, int], ...] = ()

    @property
    def kwargs(self) -> dict[str, int]:
        """The parameters as the policy constructor's keyword arguments (RandAugment(n=2, m=9))."""
        return dict(self.params)

    def __str__(self) -> str:
        return "-".join([self.family, *(f"{k}{v}" for k, v in self.params)])


def is_policy_file(spec: str) -> bool:
    """A spec ending in .json names a policy file; anything else must be a policy name."""
    return spec.endswith(".json")


def parse_policy_name(spec: object) -> PolicyName:
    """The parsed name; ValueError naming what is accepted for anything else (a non-string too)."""
    if not isinstance(spec, str):
        raise ValueError(f"a policy must be a name or a .json file path (a string), got {spec!r}")
    for family, params in FAMILIES.items():
        if spec == family and not params:
            return PolicyName(family)
        if spec == family or spec.startswith(family + "-"):
            return _parse_params(spec, family, params)
    hint = _OLD.get(spec) or ("names are lower case" if spec.lower() != spec else "")
    raise ValueError(f"unknown policy {spec!r}{f' ({hint})' if hint else ''}; accepted: {accepted()}")


def _parse_params(spec: str, family: str, params: tuple[Param, ...]) -> PolicyName:
    if not params:
        raise ValueError(f"policy {spec!r}: {family} takes no parameters; write {family!r}")
    example = PolicyName(family, tuple((p.key, p.example) for p in params))
    how = f"{family} is written {form(family)} ({'; '.join(p.accepted for p in params)}), e.g. {example}"
    old = f" ({_OLD[spec]})" if spec in _OLD else ""
    parts = spec[len(family) + 1:].split("-") if spec != family else []
    values = []
    for i, part in enumerate(parts):
        m = _PART.fullmatch(part)
        if i >= len(params) or not m or m[1] != params[i].key:
            raise ValueError(f"policy {spec!r}: part {part!r} is not accepted; {how}")
        p, v = params[i], int(m[2])
        if v < p.lo or (p.hi is not None and v > p.hi):
            raise ValueError(f"policy {spec!r}: {p.key}={v} is out of range ({p.accepted}); {how}")
        values.append((p.key, v))
    if len(values) < len(params):
        missing = " and ".join(p.key for p in params[len(values):])
        raise ValueError(f"policy {spec!r}: {missing} missing{old}; {how}")
    return PolicyName(family, tuple(values))


def _why_not(spec: object) -> str | None:
    """Why `spec` is no policy; None for an accepted name or a path ending in .json (whether that
    file exists and loads is load_policy's check)."""
    if isinstance(spec, str) and is_policy_file(spec):
        return None
    try:
        parse_policy_name(spec)
    except ValueError as e:
        return str(e)
    return None


def check_policy_spec(spec: object, key: str) -> None:
    """ValueError starting with `key` (the config key or the flag) unless `spec` is an accepted
    policy name or a .json path: the config's check of augment.policy."""
    why = _why_not(spec)
    if why:
        raise ValueError(f"{key}: {why}")


def policy_arg(spec: str) -> str:
    """argparse `type=` of a --policy flag: the same check as augment.policy's."""
    why = _why_not(spec)
    if why:
        raise argparse.ArgumentTypeError(why)
    return spec

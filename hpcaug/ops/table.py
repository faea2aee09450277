"""The op table: every augmentation element, its magnitude range and sign rule, written once.

Conventions (AutoAugment as the AWS authors' code builds it, docs/ops.md):
- every op has `NUM_BINS = 10` magnitude bins, magnitude(bin) = linspace(lo, hi, 10)[bin];
- signed ops ("random +-") are negated with probability 1/2 by the policy that samples them;
- `param(bin, sign)` is the physical parameter a backend receives in a program
  (params[..., 0]); backends never see bins, only these values.

Physical parameters (what `param` returns and `params[..., 0]` holds):
  ShearX/ShearY    shear factor s (x' = x + s*y about the top-left corner, PIL/torchvision)
  TranslateX/Y     fraction of the image side; backends shift by round(value * side) pixels,
                   positive = content moves right / down
  Rotate           degrees, positive = counter-clockwise on screen (PIL / torchvision)
  Color/Contrast/
  Sharpness/
  Brightness       enhance factor 1 + sign*m (PIL ImageEnhance: 0 = degenerate image, 1 = identity)
  Posterize        bits kept, integer 8..4 (round(linspace(8, 4, 10)))
  Solarize         threshold: pixels >= threshold are inverted (256 = identity, 0 = invert all)
  AutoContrast,
  Equalize, Invert no parameter (0.0)
  Cutout           side of the square, fraction of the shorter image side; centre = (u1*W, u2*H)
  SamplePairing    weight w of the partner image: (1-w)*x + w*x[floor(u1*n)]
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

NUM_BINS = 10
FILL = 128  # fill value for pixels a geometric op or Cutout uncovers (AutoAugment's grey)


@dataclass(frozen=True)
class OpSpec:
    """One augmentation element family.

    lo, hi: magnitude range over NUM_BINS bins (linspace); signed: negated at random;
    identity_at: the physical value that leaves the image unchanged (None: op always changes);
    offset: physical value = offset + sign * magnitude (1.0 for enhance factors, 0 otherwise);
    integer: the parameter is rounded to an integer (Posterize bits);
    severity: how the image changes as the bin grows (for docs and checks).
    """

    id: int
    name: str
    lo: float
    hi: float
    signed: bool
    offset: float = 0.0
    integer: bool = False
    has_magnitude: bool = True
    kind: str = "color"  # geometric | color | mix (uses u1/u2 or the batch)
    severity: str = ""

    def magnitude(self, level: int) -> float:
        """Unsigned magnitude of bin `level` (0..NUM_BINS-1): linspace(lo, hi, NUM_BINS)[level]."""
        _check_level(self, level)
        if not self.has_magnitude:
            return 0.0
        m = self.lo + (self.hi - self.lo) * level / (NUM_BINS - 1)
        return float(round(m)) if self.integer else float(m)

    def param(self, level: int, sign: int = 1) -> float:
        """Physical parameter for bin `level` and sign (+1/-1; must be +1 for unsigned ops)."""
        if sign not in (1, -1):
            raise ValueError(f"{self.name}: sign must be +1 or -1, got {sign!r}")
        if sign == -1 and not self.signed:
            raise ValueError(f"{self.name} is not a signed op: pass sign=+1")
        if not self.has_magnitude:
            _check_level(self, level)
            return 0.0
        return float(self.offset + sign * self.magnitude(level))

    @property
    def param_range(self) -> tuple[float, float]:
        """Smallest and largest physical parameter any bin and sign can produce."""
        if not self.has_magnitude:
            return (0.0, 0.0)
        ends = [self.param(0), self.param(NUM_BINS - 1)]
        if self.signed:
            ends += [self.param(0, -1), self.param(NUM_BINS - 1, -1)]
        return (min(ends), max(ends))


def _check_level(spec: OpSpec, level: int) -> None:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < NUM_BINS:
        raise ValueError(f"{spec.name}: magnitude bin must be an int in 0..{NUM_BINS - 1}, got {level!r}")


_TRANSLATE_MAX = 150.0 / 331.0  # AutoAugment: 150 px on a 331 px ImageNet image

# Ordered, stable ids 0..15 (docs/architecture.md section 2). Changing the order breaks saved programs.
OPS: tuple[OpSpec, ...] = (
    OpSpec(0, "ShearX", 0.0, 0.3, True, kind="geometric", severity="larger shear"),
    OpSpec(1, "ShearY", 0.0, 0.3, True, kind="geometric", severity="larger shear"),
    OpSpec(2, "TranslateX", 0.0, _TRANSLATE_MAX, True, kind="geometric", severity="larger shift"),
    OpSpec(3, "TranslateY", 0.0, _TRANSLATE_MAX, True, kind="geometric", severity="larger shift"),
    OpSpec(4, "Rotate", 0.0, 30.0, True, kind="geometric", severity="larger angle"),
    OpSpec(5, "Color", 0.0, 0.9, True, offset=1.0, severity="factor further from 1"),
    OpSpec(6, "Posterize", 8.0, 4.0, False, integer=True, severity="fewer bits"),
    OpSpec(7, "Solarize", 256.0, 0.0, False, severity="lower threshold, more pixels inverted"),
    OpSpec(8, "Contrast", 0.0, 0.9, True, offset=1.0, severity="factor further from 1"),
    OpSpec(9, "Sharpness", 0.0, 0.9, True, offset=1.0, severity="factor further from 1"),
    OpSpec(10, "Brightness", 0.0, 0.9, True, offset=1.0, severity="factor further from 1"),
    OpSpec(11, "AutoContrast", 0.0, 0.0, False, has_magnitude=False, severity="none (no magnitude)"),
    OpSpec(12, "Equalize", 0.0, 0.0, False, has_magnitude=False, severity="none (no magnitude)"),
    OpSpec(13, "Invert", 0.0, 0.0, False, has_magnitude=False, severity="none (no magnitude)"),
    # Values the papers lost (AdvAA refers to AutoAugment, which gives Cutout in CIFAR pixels
    # [0, 20] of 32 and SamplePairing weight [0, 0.4]); our choices, see docs/ops.md.
    OpSpec(14, "Cutout", 0.0, 0.5, False, kind="mix", severity="larger square"),
    OpSpec(15, "SamplePairing", 0.0, 0.4, False, kind="mix", severity="more of the partner image"),
)
OP_NAMES: tuple[str, ...] = tuple(op.name for op in OPS)
OP_BY_NAME: dict[str, OpSpec] = {op.name: op for op in OPS}
GEOMETRIC_OPS: frozenset[int] = frozenset(op.id for op in OPS if op.kind == "geometric")
IDENTITY = -1  # op id meaning "leave the image as it is"
PARAM_EPS = 1e-4  # tolerance when checking a physical parameter against the table's range


def op_id(name: str) -> int:
    """Id of op `name` (exact AutoAugment spelling, e.g. 'ShearX'); ValueError lists valid names."""
    try:
        return OP_BY_NAME[name].id
    except (KeyError, TypeError):
        raise ValueError(f"unknown op {name!r}; valid ops: {', '.join(OP_NAMES)}") from None


def get_op(op: int | str) -> OpSpec:
    """The OpSpec for an id or a name."""
    if isinstance(op, str):
        return OPS[op_id(op)]
    if isinstance(op, bool) or not isinstance(op, int) or not 0 <= op < len(OPS):
        raise ValueError(f"op id must be an int in 0..{len(OPS) - 1} (or an op name), got {op!r}")
    return OPS[op]


def magnitude_table(ops: Sequence[OpSpec] = OPS) -> dict[str, list[float]]:
    """name -> the 10 unsigned magnitudes (for docs and tests)."""
    return {op.name: [op.magnitude(b) for b in range(NUM_BINS)] for op in ops}


def check_param(op: int, value: float) -> None:
    """ValueError unless `value` is a physical parameter the table can produce for op `op`."""
    spec = get_op(op)
    lo, hi = spec.param_range
    if not lo - PARAM_EPS <= value <= hi + PARAM_EPS:
        raise ValueError(f"{spec.name}: parameter {value} is out of range [{lo:.4g}, {hi:.4g}]; "
                         f"build programs with OpSpec.param(bin, sign) or a policy's sample()")


# ---------------------------------------------------------------------------- implementations
F = TypeVar("F", bound=Callable[..., object])


class Implementations(Generic[F]):
    """One backend's op implementations, each declared by op name above its function.

        IMPLS = Implementations("torch")

        @IMPLS("Color")
        def color(...): ...

    A function may serve several ops (`@IMPLS("ShearX", "ShearY")`). The backend module ends
    with `IMPLS.check_complete()`, so importing a backend that lacks an op of the table fails
    at once, naming the op.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._by_id: dict[int, F] = {}

    def __call__(self, *names: str) -> Callable[[F], F]:
        if not names:
            raise ValueError(f"{self.backend} backend: name the op(s) a function implements, e.g. @IMPLS('Color')")
        ids = [op_id(n) for n in names]  # ValueError for a misspelt name

        def register(fn: F) -> F:
            for name, i in zip(names, ids, strict=True):
                if i in self._by_id:
                    raise ValueError(f"{self.backend} backend: {name} already has an implementation "
                                     f"({getattr(self._by_id[i], '__name__', '?')}); declare each op once")
                self._by_id[i] = fn
            return fn

        return register

    def __getitem__(self, op: int) -> F:
        return self._by_id[op]

    def __contains__(self, op: object) -> bool:
        return op in self._by_id

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._by_id))

    def check_complete(self) -> None:
        """RuntimeError naming every op of OPS this backend does not implement. (Not an
        ImportError: callers that treat an optional backend's ImportError as "not installed"
        must not hide a missing op.)"""
        missing = [op.name for op in OPS if op.id not in self._by_id]
        if missing:
            raise RuntimeError(f"the {self.backend} backend has no implementation of {', '.join(missing)}: "
                               f"declare one with @IMPLS({missing[0]!r}) above the function that does it")

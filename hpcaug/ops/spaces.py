"""Search spaces built from the op table: AWS (36 elements, 1296 operations) and AdvAA (16 x 10).

An *element* is (op id, magnitude bin). The AWS space (AWS appendix D and the authors' code):
11 ops at bins {3, 6, 9} plus AutoContrast, Equalize and Invert (bin 0, no magnitude) = 36
elements; an *operation* is an ordered pair of elements, index k in 0..1295 =
(element k // 36, element k % 36). The AdvAA space: all 16 ops x 10 bins = 160 elements,
element index = op_id * 10 + bin.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .table import NUM_BINS, OPS, OpSpec, get_op

AWS_BINS: tuple[int, ...] = (3, 6, 9)
AWS_MAGNITUDE_OPS: tuple[str, ...] = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Color",
                                      "Posterize", "Solarize", "Contrast", "Sharpness", "Brightness")
AWS_FREE_OPS: tuple[str, ...] = ("AutoContrast", "Equalize", "Invert")


@dataclass(frozen=True)
class Element:
    """One augmentation element: an op at one magnitude bin (bin 0 for ops without magnitude)."""

    op: int
    bin: int

    @property
    def spec(self) -> OpSpec:
        return OPS[self.op]

    @property
    def name(self) -> str:
        s = self.spec
        return f"{s.name}:{self.bin}" if s.has_magnitude else s.name

    def param(self, sign: int = 1) -> float:
        return self.spec.param(self.bin, sign)


@dataclass(frozen=True)
class Space:
    """An ordered list of elements; `ops_per_operation` elements make one operation."""

    name: str
    elements: tuple[Element, ...]
    ops_per_operation: int

    @property
    def num_elements(self) -> int:
        return len(self.elements)

    @property
    def num_operations(self) -> int:
        return self.num_elements ** self.ops_per_operation

    @property
    def op_names(self) -> frozenset[str]:
        """Names of the ops that have an element in this space."""
        return frozenset(e.spec.name for e in self.elements)

    def element_index(self, name_or_op: str | int, bin: int = 0) -> int:
        """Index of element (op, bin); accepts 'ShearX:3' or ('ShearX', 3)."""
        if isinstance(name_or_op, str) and ":" in name_or_op:
            op_name, b = name_or_op.split(":", 1)
            name_or_op, bin = op_name, int(b)
        e = Element(get_op(name_or_op).id, bin)
        try:
            return self._index[e]
        except KeyError:
            raise ValueError(f"element {e.name} (bin {bin}) is not in the {self.name} space; "
                             f"valid: {', '.join(x.name for x in self.elements)}") from None

    def operation(self, index: int) -> tuple[Element, ...]:
        """Operation index -> its elements (most significant first: k = e1 * E + e2)."""
        n = self.num_operations
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise ValueError(f"{self.name} operation index must be an int in 0..{n - 1}, got {index!r}")
        out = []
        for _ in range(self.ops_per_operation):
            index, r = divmod(index, self.num_elements)
            out.append(self.elements[r])
        return tuple(reversed(out))

    def operation_index(self, elements: tuple[int, ...]) -> int:
        """Element indices (e1, e2, ...) -> operation index."""
        if len(elements) != self.ops_per_operation:
            raise ValueError(f"{self.name}: an operation has {self.ops_per_operation} elements, got {len(elements)}")
        k = 0
        for e in elements:
            if not 0 <= e < self.num_elements:
                raise ValueError(f"{self.name}: element index must be in 0..{self.num_elements - 1}, got {e}")
            k = k * self.num_elements + e
        return k

    @cached_property
    def _index(self) -> dict[Element, int]:
        return {e: i for i, e in enumerate(self.elements)}


def _aws_elements() -> tuple[Element, ...]:
    els = [Element(get_op(n).id, b) for n in AWS_MAGNITUDE_OPS for b in AWS_BINS]
    els += [Element(get_op(n).id, 0) for n in AWS_FREE_OPS]
    return tuple(els)


AWS_SPACE = Space("aws", _aws_elements(), 2)
ADVAA_SPACE = Space("advaa", tuple(Element(op.id, b) for op in OPS for b in range(NUM_BINS)), 2)

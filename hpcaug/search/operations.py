"""p_theta over the 1296 AWS operations, for people: the probability matrix, element names and
the most probable operations with readable labels (report, status, the CLI's summary)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from hpcaug.ops.policy import aws_log_probs
from hpcaug.ops.spaces import AWS_SPACE, Element


class TopOperation(NamedTuple):
    """One operation of the AWS space with its probability under a theta."""

    op_index: int  # operation index 0..1295 (first element * 36 + second element)
    first: str  # element names such as 'Rotate:9' (op:magnitude bin); 'Invert' has no bin
    second: str
    probability: float
    label: str  # 'Rotate:9(±30) + Invert': both elements with their magnitudes (± = random sign)


def aws_probabilities(theta: torch.Tensor, parametrisation: str = "joint") -> torch.Tensor:
    """p over the 1296 operations as a [36, 36] matrix: row = first element, column = second."""
    e = AWS_SPACE.num_elements
    return aws_log_probs(theta.detach().double(), parametrisation).exp().view(e, e)


def element_names() -> list[str]:
    """The 36 AWS element names ('ShearX:3', ..., 'Invert'), in theta's order."""
    return [e.name for e in AWS_SPACE.elements]


def top_operations(theta: torch.Tensor, parametrisation: str = "joint", k: int = 10) -> list[TopOperation]:
    """The k most probable operations of p_theta, most probable first."""
    p = aws_probabilities(theta, parametrisation).flatten()
    vals, idx = torch.topk(p, min(k, p.numel()))
    out = []
    for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
        e1, e2 = AWS_SPACE.operation(int(i))
        out.append(TopOperation(int(i), e1.name, e2.name, float(v), f"{_element_label(e1)} + {_element_label(e2)}"))
    return out


def _element_label(e: Element) -> str:
    """'Rotate:9(±30)': op, magnitude bin and its magnitude (± = random sign); 'Invert' without one."""
    s = e.spec
    if not s.has_magnitude:
        return s.name
    return f"{s.name}:{e.bin}({'±' if s.signed else ''}{s.magnitude(e.bin):.3g})"

"""Augmentation ops: one op table, search spaces, policies and two backends (torch, DALI).

The DALI backend (`hpcaug.ops.dali_backend`) is imported on demand: DALI is an optional extra.
"""
from .policy import (
                     AUTOAUGMENT_IMAGENET,
                     AWSPolicy,
                     NoPolicy,
                     Policy,
                     RandAugment,
                     Sampled,
                     SubPolicyPolicy,
                     TrivialAugment,
                     UniformAWS,
                     aws_log_probs,
                     load_policy,
                     policy_from_json,
)
from .spaces import ADVAA_SPACE, AWS_SPACE, Element, Space
from .table import FILL, IDENTITY, NUM_BINS, OP_NAMES, OPS, OpSpec, get_op, op_id
from .torch_backend import apply_program, augment

__all__ = [
    "AUTOAUGMENT_IMAGENET", "AWSPolicy", "NoPolicy", "Policy", "RandAugment", "Sampled", "SubPolicyPolicy",
    "TrivialAugment", "UniformAWS", "aws_log_probs", "load_policy", "policy_from_json",
    "ADVAA_SPACE", "AWS_SPACE", "Element", "Space",
    "FILL", "IDENTITY", "NUM_BINS", "OP_NAMES", "OPS", "OpSpec", "get_op", "op_id",
    "apply_program", "augment",
]

"""Any hpcaug policy as a torchvision-v2 transform, and `export_policy` (a run dir -> policy JSON).

`PolicyTransform(policy)` is a `torchvision.transforms.v2.Transform` (so a `torch.nn.Module`):
put it in any v2 pipeline after the image is a uint8 tensor (`v2.PILToTensor()` /
`v2.ToImage()`), before `v2.ToDtype(torch.float32, scale=True)` and `v2.Normalize`. Each
image gets its own draw from the policy (`policy.sample`), applied by hpcaug's torch backend
(`apply_program`), so the pixels are exactly what hpcaug's own loaders produce for the same
program. Inputs: uint8 `[C, H, W]` or batched `[..., C, H, W]` (C = 1 or 3) pure tensors or
`tv_tensors.Image`, or PIL images; labels and other non-image entries of a sample pass through.

Randomness: with no generator the policy draws from torch's global RNG, which a DataLoader
seeds differently in every worker (what you want in a pipeline). Pass a `torch.Generator`
only for a single-process reproducible stream: a generator copied into several workers makes
them draw the same programs.

SamplePairing (AdvAA space) mixes an image with a partner from the same call: on a single
image the partner is the image itself (the op is then the identity); on a batch it is
another image of the batch, as in hpcaug's loaders.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2 import functional as TF

from .policy import AWSPolicy, Policy, Sampled, SubPolicy, SubPolicyPolicy, load_policy, policy_from_dict
from .torch_backend import apply_program

__all__ = ["PolicyTransform", "export_policy", "policy_of"]

PolicyLike = Policy | str | os.PathLike[str]
# Sample entries a per-image op would have to move along with the image: refused, not ignored.
_UNSUPPORTED = tuple(getattr(tv_tensors, n) for n in ("BoundingBoxes", "Mask", "KeyPoints") if hasattr(tv_tensors, n))


def policy_of(source: PolicyLike) -> Policy:
    """A Policy from a Policy, a policy name / .json file (`load_policy`), or an hpcaug run dir.

    Run dirs: an AWS search gives its `policy.json` (written by every update) or, before the
    first update, the theta of its latest round; an AdvAA run gives the union of the last
    epoch's M policies (`advaa/last_policies.json`, else the last line of `advaa/epochs.jsonl`)
    as one sub-policy list, each sub-policy equally likely (as AdvAA concatenates its best
    policies into one).
    """
    if isinstance(source, Policy):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a Policy, a policy name, a policy .json or a run dir, got {type(source).__name__}")
    p = Path(source)
    if p.is_dir():
        return _policy_from_run_dir(p)
    return load_policy(str(source))


def _policy_from_run_dir(root: Path) -> Policy:
    if (root / "policy.json").is_file():
        return load_policy(str(root / "policy.json"))
    rounds = root / "rounds"
    thetas = sorted(int(d.name) for d in rounds.iterdir() if d.name.isdigit() and (d / "theta.pt").is_file()
                    ) if rounds.is_dir() else []
    if thetas:
        state = torch.load(rounds / str(thetas[-1]) / "theta.pt", map_location="cpu", weights_only=True)
        return AWSPolicy(state["theta"], state.get("parametrisation", "joint"))
    last = root / "advaa" / "last_policies.json"
    if last.is_file():
        pols = [policy_from_dict(d) for d in json.loads(last.read_text())["policies"]]
        return _union(pols)
    records = root / "advaa" / "epochs.jsonl"
    if records.is_file():
        lines = [json.loads(x) for x in records.read_text().splitlines() if x.strip()]
        if lines:
            subs = [[(name, 1.0, b) for name, b in sub] for pol in lines[-1]["policies"] for sub in pol]
            return SubPolicyPolicy(subs)
    raise ValueError(f"{root} holds no policy: not an hpcaug run dir, or the run has not written one yet "
                     "(an AWS search needs rounds/0/theta.pt, an AdvAA run one finished epoch). Pass a run dir, "
                     "a policy .json file or a policy name such as 'autoaugment-imagenet'")


def _union(policies: Sequence[Policy]) -> Policy:
    subs: list[SubPolicy] = []
    for pol in policies:
        if not isinstance(pol, SubPolicyPolicy):
            raise ValueError(f"cannot merge a {type(pol).__name__} into a sub-policy list")
        subs.extend(pol.sub_policies)
    return SubPolicyPolicy(subs)


def export_policy(source: PolicyLike, path: str | os.PathLike[str]) -> Path:
    """Write the schema-versioned policy JSON (the ops module's form) of `source` to `path`.

    `source`: a Policy, a run dir (see `policy_of`), a policy .json or a policy name. The file
    loads back with `hpcaug.ops.load_policy(path)` or `PolicyTransform(path)`.
    """
    policy = policy_of(source)
    out = Path(path)
    if out.suffix != ".json":
        raise ValueError(f"export path {str(out)!r} must end in .json (load_policy recognises policy files by it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    policy.save(out)
    return out


class PolicyTransform(Transform):
    """Augment uint8 images with an hpcaug policy, one draw per image, in a torchvision-v2 pipeline.

    policy: a Policy, a policy name ('autoaugment-imagenet', 'randaugment-n2-m9', ...), a policy
    .json file or an hpcaug run dir. `last_sampled` holds the program of the latest call
    (op_ids, params and the policy's `choice` per image), for inspection and tests.
    """

    _transformed_types = (tv_tensors.Image, PIL.Image.Image, torch.Tensor)

    def __init__(self, policy: PolicyLike, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.policy: Policy = policy_of(policy)
        self.generator = generator
        self.last_sampled: Sampled | None = None

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        for x in flat_inputs:
            if isinstance(x, _UNSUPPORTED):
                raise TypeError(f"PolicyTransform transforms images only; the sample holds a {type(x).__name__}, "
                                "which the geometric ops would not move with the image. Use it on "
                                "classification samples (image, label)")
            if isinstance(x, tv_tensors.Video):
                raise TypeError("PolicyTransform does not transform videos; pass frames as a batch of images")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        n = None
        for x in flat_inputs:
            m = _batch_size(x)
            if n is not None and m != n:
                raise ValueError(f"the sample holds images with different batch sizes ({n} and {m}); "
                                 "transform them in separate calls")
            n = m
        sampled = self.policy.sample(n or 0, self.generator)
        self.last_sampled = sampled
        return {"sampled": sampled}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        s: Sampled = params["sampled"]
        if isinstance(inpt, PIL.Image.Image):
            mode = inpt.mode
            if mode not in ("L", "RGB"):
                raise TypeError(f"PIL image mode {mode!r} is not supported; convert it with img.convert('RGB')")
            out = apply_program(TF.pil_to_tensor(inpt).unsqueeze(0).contiguous(), s.op_ids, s.params)[0]
            return TF.to_pil_image(out, mode=mode)
        x = inpt.as_subclass(torch.Tensor)
        _check_tensor(x)
        lead = x.shape[:-3]
        # contiguous: the backend's Equalize needs it (PIL / HWC inputs arrive as permuted views)
        flat = x.reshape(-1, *x.shape[-3:]).contiguous()
        if flat.shape[0] == 0:
            return inpt.clone()
        out = apply_program(flat, s.op_ids, s.params).reshape(*lead, *x.shape[-3:])
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    def extra_repr(self) -> str:
        return repr(self.policy)


def _batch_size(x: Any) -> int:
    if isinstance(x, PIL.Image.Image):
        return 1
    _check_tensor(x)
    n = 1
    for d in x.shape[:-3]:
        n *= int(d)
    return n


def _check_tensor(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8:
        raise TypeError(f"PolicyTransform needs uint8 images (0..255), got {x.dtype}: put it before "
                        "v2.ToDtype(torch.float32, scale=True), or convert with v2.ToDtype(torch.uint8, scale=True)")
    if x.dim() < 3 or x.shape[-3] not in (1, 3):
        raise ValueError(f"PolicyTransform needs images shaped [C, H, W] or [..., C, H, W] with C = 1 or 3, got "
                         f"{tuple(x.shape)}; for HWC arrays use v2.ToImage() (or tensor.permute(2, 0, 1))")

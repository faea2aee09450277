"""Ops declared beside their implementations (each backend checked complete at import) and
policies that say which ops they can emit (`Policy.augmentations`), which the DALI loader keys
its graph on: new AdvAA policies every epoch keep the graph."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpcaug.config import Config
from hpcaug.ops import AWS_SPACE, NoPolicy, RandAugment, SubPolicyPolicy, TrivialAugment, UniformAWS, torch_backend
from hpcaug.ops.policy import AUTOAUGMENT_IMAGENET, RA_OPS, AWSPolicy, Policy
from hpcaug.ops.spaces import ADVAA_SPACE
from hpcaug.ops.table import IDENTITY, OP_NAMES, OPS, Implementations


def test_every_op_has_an_implementation_in_each_backend() -> None:
    assert sorted(torch_backend.IMPLS) == [op.id for op in OPS]
    pytest.importorskip("nvidia.dali")
    from hpcaug.ops import dali_backend

    assert sorted(dali_backend.IMPLS) == [op.id for op in OPS]
    # the five geometric ops share one implementation (one warp / one gather)
    geo = {dali_backend.IMPLS[op.id] for op in OPS if op.kind == "geometric"}
    assert len(geo) == 1 and len({torch_backend.IMPLS[op.id] for op in OPS if op.kind == "geometric"}) == 1


def test_a_backend_missing_an_op_fails_naming_it() -> None:
    impls: Implementations = Implementations("toy")
    impls(*[n for n in OP_NAMES if n not in ("Invert", "Cutout")])(lambda x: x)
    with pytest.raises(RuntimeError, match=r"toy backend has no implementation of Invert, Cutout.*@IMPLS\('Invert'\)"):
        impls.check_complete()
    with pytest.raises(ValueError, match="already has an implementation"):
        impls("Color")(lambda x: x)
    with pytest.raises(ValueError, match="valid ops: ShearX"):
        impls("Colour")
    impls("Invert", "Cutout")(lambda x: x)
    impls.check_complete()


POLICIES: list[Policy] = [UniformAWS(), AWSPolicy.uniform("factorised"), RandAugment(2, 9), TrivialAugment(),
                          NoPolicy(), SubPolicyPolicy(AUTOAUGMENT_IMAGENET),
                          SubPolicyPolicy.from_advaa([[15 * 10 + 9, 14 * 10 + 3], [0, 12 * 10]])]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.kind)
def test_a_policy_emits_only_its_augmentations(policy: Policy) -> None:
    s = policy.sample(4000, torch.Generator().manual_seed(0))
    emitted = {OPS[i].name for i in s.op_ids.unique().tolist() if i != IDENTITY}
    assert emitted <= policy.augmentations
    assert policy.augmentations <= set(OP_NAMES)


def test_augmentations_per_policy_kind() -> None:
    aws = AWS_SPACE.op_names
    assert len(aws) == 14 and "SamplePairing" not in aws and "Cutout" not in aws
    assert UniformAWS().augmentations == aws
    assert RandAugment().augmentations == TrivialAugment().augmentations == set(RA_OPS) - {"Identity"}
    assert NoPolicy().augmentations == frozenset()
    # sub-policy lists: every op, whatever the list holds (AdvAA's lists change every epoch)
    assert SubPolicyPolicy([[("Rotate", 1.0, 3)]]).augmentations == set(OP_NAMES) == ADVAA_SPACE.op_names


def _advaa_policies(seed: int, m: int) -> list[SubPolicyPolicy]:
    """m AdvAA-style policies (5 sub-policies of 2 elements each, ADVAA_SPACE indices)."""
    g = torch.Generator().manual_seed(seed)
    return [SubPolicyPolicy.from_advaa(torch.randint(0, ADVAA_SPACE.num_elements, (5, 2), generator=g).tolist())
            for _ in range(m)]


def test_dali_loader_keeps_its_graph_when_advaa_brings_new_policies(imagenet_data: Path) -> None:
    """AdvAA calls set_policies with new policies every epoch; the pipeline (the GPU graph on a
    cluster) is built once. The old key recorded whether each policy could emit SamplePairing,
    so a new set of policies rebuilt it almost every epoch."""
    pytest.importorskip("nvidia.dali")
    from hpcaug.data import build_train_loader

    cfg = Config().replace(**{"data.dir": str(imagenet_data), "data.backend": "dali", "data.batch_size": 4,
                              "data.image_size": 32, "data.val_resize": 40, "data.workers": 1,
                              "train.steps_per_epoch": 1})
    with_pairing = SubPolicyPolicy([[("SamplePairing", 1.0, 9), ("Rotate", 1.0, 5)]])
    without = SubPolicyPolicy([[("Equalize", 1.0, 0), ("ShearX", 1.0, 5)]])
    loader = build_train_loader(cfg, [without, without], 0, 1, "cpu")
    try:
        pipes = []
        for epoch, policies in enumerate([[without, without], [with_pairing, without], *(
                _advaa_policies(seed, 2) for seed in range(3))]):
            loader.set_policies(policies)
            loader.set_epoch(epoch)
            (batch,) = list(loader)
            assert batch.images.shape == (8, 3, 32, 32)
            pipes.append(loader._pipe)
        assert all(p is pipes[0] for p in pipes), "the DALI pipeline was rebuilt for new policies of the same kind"
        loader.set_policies([UniformAWS(), without])  # another kind: another graph
        loader.set_epoch(9)
        list(loader)
        assert loader._pipe is not pipes[0]
    finally:
        loader.close_pipeline()

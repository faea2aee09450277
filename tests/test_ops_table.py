"""Op table, search spaces, policies (sampling statistics, JSON) and bad input to the torch backend."""
from __future__ import annotations

import json
import math

import pytest
import torch

from hpcaug.ops import (
    ADVAA_SPACE,
    AWS_SPACE,
    AWSPolicy,
    NoPolicy,
    RandAugment,
    SubPolicyPolicy,
    TrivialAugment,
    UniformAWS,
    apply_program,
    aws_log_probs,
    get_op,
    load_policy,
    op_id,
    policy_from_json,
)
from hpcaug.ops.policy import AUTOAUGMENT_IMAGENET, SCHEMA_VERSION, Sampled, aws_theta_size
from hpcaug.ops.table import NUM_BINS, OP_NAMES, OPS, check_param


# ------------------------------------------------------------------------------------- table
def test_op_ids_are_the_documented_order() -> None:
    assert OP_NAMES == ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Color", "Posterize",
                        "Solarize", "Contrast", "Sharpness", "Brightness", "AutoContrast", "Equalize",
                        "Invert", "Cutout", "SamplePairing")
    assert [op.id for op in OPS] == list(range(16))


@pytest.mark.parametrize("name,b3,b6,b9", [
    ("ShearX", 0.1, 0.2, 0.3), ("ShearY", 0.1, 0.2, 0.3),
    ("TranslateX", 150 / 331 / 3, 2 * 150 / 331 / 3, 150 / 331),
    ("TranslateY", 150 / 331 / 3, 2 * 150 / 331 / 3, 150 / 331),
    ("Rotate", 10, 20, 30), ("Color", 0.3, 0.6, 0.9), ("Contrast", 0.3, 0.6, 0.9), ("Sharpness", 0.3, 0.6, 0.9),
    ("Brightness", 0.3, 0.6, 0.9), ("Posterize", 7, 5, 4), ("Solarize", 256 * 2 / 3, 256 / 3, 0),
])
def test_design_magnitudes_at_bins_3_6_9(name: str, b3: float, b6: float, b9: float) -> None:
    op = get_op(name)
    assert [op.magnitude(b) for b in (3, 6, 9)] == pytest.approx([b3, b6, b9], abs=1e-9)


def test_sign_rules_and_params() -> None:
    assert get_op("Color").param(9, -1) == pytest.approx(0.1)
    assert get_op("Color").param(9, 1) == pytest.approx(1.9)
    assert get_op("Color").param(0) == 1.0  # bin 0 of an enhance op is the identity
    assert get_op("Rotate").param(3, -1) == pytest.approx(-10)
    assert [get_op("Posterize").param(b) for b in range(NUM_BINS)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert get_op("Solarize").param(0) == 256  # threshold 256 = identity
    for op in OPS:
        assert op.signed == (op.name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Color",
                                         "Contrast", "Sharpness", "Brightness"))
        if not op.signed:
            with pytest.raises(ValueError, match="not a signed op"):
                op.param(3, -1)


def test_table_rejects_bad_names_and_bins() -> None:
    with pytest.raises(ValueError, match="valid ops: ShearX"):
        op_id("shear_x")
    with pytest.raises(ValueError, match="0..9"):
        get_op("Rotate").param(10)
    with pytest.raises(ValueError, match="0..9"):
        get_op("Rotate").magnitude(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        check_param(op_id("Rotate"), 45.0)


# ------------------------------------------------------------------------------------ spaces
def test_aws_space_has_36_elements_and_1296_operations() -> None:
    assert AWS_SPACE.num_elements == 36 and AWS_SPACE.num_operations == 1296
    names = [e.name for e in AWS_SPACE.elements]
    assert names[:3] == ["ShearX:3", "ShearX:6", "ShearX:9"]
    assert names[-3:] == ["AutoContrast", "Equalize", "Invert"]
    assert not any(n.startswith(("Cutout", "SamplePairing")) for n in names)
    for k in (0, 1, 37, 1295, 700):
        e1, e2 = AWS_SPACE.operation(k)
        assert AWS_SPACE.operation_index((AWS_SPACE.elements.index(e1), AWS_SPACE.elements.index(e2))) == k
        assert AWS_SPACE.elements.index(e1) == k // 36 and AWS_SPACE.elements.index(e2) == k % 36
    assert AWS_SPACE.element_index("Rotate:9") == AWS_SPACE.element_index("Rotate", 9) == 14
    with pytest.raises(ValueError, match="not in the aws space"):
        AWS_SPACE.element_index("Rotate", 4)
    with pytest.raises(ValueError, match="0..1295"):
        AWS_SPACE.operation(1296)


def test_advaa_space_is_16_ops_by_10_bins() -> None:
    assert ADVAA_SPACE.num_elements == 160
    assert ADVAA_SPACE.elements[op_id("Cutout") * 10 + 7].name == "Cutout:7"


# ---------------------------------------------------------------------------------- policies
def _theta(seed: int, size: int) -> torch.Tensor:
    return torch.randn(size, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("param", ["joint", "factorised"])
def test_aws_probs_log_prob_entropy(param: str) -> None:
    theta = _theta(0, aws_theta_size(param))
    pol = AWSPolicy(theta, param)
    p = pol.probs()
    assert p.shape == (1296,) and float(p.sum()) == pytest.approx(1.0, abs=1e-9) and (p > 0).all()
    if param == "joint":
        s = torch.sigmoid(theta.double())
        assert torch.allclose(p, s / s.sum())
    else:
        a = torch.sigmoid(theta[:36].double())
        b = torch.sigmoid(theta[36:].double()).view(36, 36)
        assert torch.allclose(p.view(36, 36), (a / a.sum())[:, None] * b / b.sum(1, keepdim=True))
    assert float(pol.entropy()) == pytest.approx(float(-(p * p.log()).sum()))
    assert float(AWSPolicy.uniform(param).entropy()) == pytest.approx(math.log(1296))
    t = theta.clone().requires_grad_(True)
    aws_log_probs(t, param)[5].backward()  # differentiable for PPO
    assert t.grad is not None and t.grad.abs().sum() > 0


@pytest.mark.parametrize("param", ["joint", "factorised"])
def test_aws_sampling_matches_probs(param: str) -> None:
    """Chi-square goodness of fit of 200k sampled operations (a biased theta) and sign balance."""
    theta = torch.zeros(aws_theta_size(param))
    theta[:40] = 4.0  # make some operations ~20x more likely
    pol = AWSPolicy(theta, param)
    s = pol.sample(200_000, torch.Generator().manual_seed(1))
    counts = torch.bincount(s.choice, minlength=1296).double()
    exp = pol.probs() * 200_000
    chi2 = float(((counts - exp) ** 2 / exp).sum())
    assert chi2 < 1295 + 5 * math.sqrt(2 * 1295), chi2  # ~5 sigma for 1295 dof
    # op ids follow the chosen elements; signed ops get both signs about equally often
    e1 = s.choice // 36
    want = torch.tensor([AWS_SPACE.elements[i].op for i in range(36)])[e1]
    assert torch.equal(s.op_ids[:, 0], want)
    rot = s.op_ids == op_id("Rotate")
    frac_neg = float((s.params[..., 0][rot] < 0).double().mean())
    assert abs(frac_neg - 0.5) < 0.02
    assert s.params.dtype == torch.float32 and s.op_ids.dtype == torch.int64
    assert ((s.params[..., 1:] >= 0) & (s.params[..., 1:] < 1)).all()


def test_sampling_is_reproducible_with_a_generator() -> None:
    for pol in (UniformAWS(), SubPolicyPolicy.autoaugment_imagenet(), RandAugment(2, 9), TrivialAugment()):
        a = pol.sample(64, torch.Generator().manual_seed(3))
        b = pol.sample(64, torch.Generator().manual_seed(3))
        assert torch.equal(a.op_ids, b.op_ids) and torch.equal(a.params, b.params) and torch.equal(a.choice, b.choice)


def test_subpolicy_probabilities_fire_as_listed() -> None:
    pol = SubPolicyPolicy([[("Invert", 0.3, 0), ("Rotate", 1.0, 9)]])
    s = pol.sample(20_000, torch.Generator().manual_seed(0))
    assert abs(float((s.op_ids[:, 0] == op_id("Invert")).double().mean()) - 0.3) < 0.015
    assert (s.op_ids[:, 0][s.op_ids[:, 0] != op_id("Invert")] == -1).all()
    assert (s.op_ids[:, 1] == op_id("Rotate")).all()
    assert set(s.params[:, 1, 0].abs().tolist()) == {30.0}
    aa = SubPolicyPolicy.autoaugment_imagenet()
    assert aa.num_choices == 25 and len(AUTOAUGMENT_IMAGENET) == 25
    adv = SubPolicyPolicy.from_advaa([[op_id("Cutout") * 10 + 4, op_id("ShearX") * 10 + 9]] * 5)
    assert adv.sub_policies[0] == (("Cutout", 1.0, 4), ("ShearX", 1.0, 9))


def test_randaugment_trivial_none() -> None:
    g = torch.Generator().manual_seed(0)
    ra = RandAugment(3, 5).sample(5000, g)
    assert ra.op_ids.shape == (5000, 3) and int(ra.choice.max()) < 14 ** 3
    assert not (ra.op_ids == op_id("Invert")).any()
    mags = ra.params[..., 0][ra.op_ids == op_id("Rotate")].abs()
    assert torch.allclose(mags, torch.tensor(get_op("Rotate").magnitude(5), dtype=torch.float32))
    ta = TrivialAugment().sample(5000, g)
    assert ta.op_ids.shape == (5000, 1) and int(ta.choice.max()) < 140
    assert len(torch.unique(ta.choice)) > 120
    no = NoPolicy().sample(7, g)
    assert (no.op_ids == -1).all() and (no.choice == 0).all()


def test_sampled_cat_pads_with_identity() -> None:
    g = torch.Generator().manual_seed(0)
    s = Sampled.cat([RandAugment(3, 5).sample(4, g), TrivialAugment().sample(2, g)])
    assert s.op_ids.shape == (6, 3) and (s.op_ids[4:, 1:] == -1).all() and s.params.shape == (6, 3, 3)


# -------------------------------------------------------------------------------------- JSON
@pytest.mark.parametrize("pol", [
    AWSPolicy(torch.randn(1296, generator=torch.Generator().manual_seed(5))),
    AWSPolicy(torch.randn(1332, dtype=torch.float64, generator=torch.Generator().manual_seed(6)), "factorised"),
    SubPolicyPolicy.autoaugment_imagenet(), RandAugment(2, 7), TrivialAugment(), NoPolicy(),
], ids=["aws", "aws_factorised_f64", "autoaugment", "randaugment", "trivial", "none"])
def test_json_round_trip_is_exact(pol, tmp_path) -> None:  # type: ignore[no-untyped-def]
    back = policy_from_json(pol.to_json())
    assert back == pol and back.to_json() == pol.to_json()
    if isinstance(pol, AWSPolicy):
        assert back.theta.dtype == pol.theta.dtype and torch.equal(back.theta, pol.theta)  # bit-exact floats
    path = tmp_path / "p.json"
    pol.save(path)
    assert load_policy(str(path)) == pol
    d = json.loads(path.read_text())
    assert d["schema"] == "hpcaug.policy" and d["version"] == SCHEMA_VERSION


def test_json_errors_say_what_is_wrong(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = json.loads(UniformAWS().to_json())
    with pytest.raises(ValueError, match="version 99 is not supported"):
        policy_from_json(json.dumps({**d, "version": 99}))
    with pytest.raises(ValueError, match="not an hpcaug policy"):
        policy_from_json("{}")
    with pytest.raises(ValueError, match="not valid JSON"):
        policy_from_json("{")
    with pytest.raises(ValueError, match="1296 entries"):
        policy_from_json(json.dumps({**d, "theta": [0.0] * 10}))
    with pytest.raises(ValueError, match="unknown policy type"):
        policy_from_json(json.dumps({**d, "type": "magic"}))
    with pytest.raises(ValueError, match="not found"):
        load_policy(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="accepted: none, uniform"):  # the grammar: tests/test_policy_names.py
        load_policy("autoaugment")


def test_policy_constructors_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="valid ops"):
        SubPolicyPolicy([[("Rotat", 0.5, 3)]])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        SubPolicyPolicy([[("Rotate", 1.5, 3)]])
    with pytest.raises(ValueError, match="0..9"):
        SubPolicyPolicy([[("Rotate", 0.5, 12)]])
    with pytest.raises(ValueError, match="m \\(magnitude bin\\)"):
        RandAugment(2, 10)
    with pytest.raises(ValueError, match="NaN"):
        AWSPolicy(torch.full((1296,), float("nan")))
    with pytest.raises(ValueError, match="n must be an int"):
        UniformAWS().sample(-1)


# --------------------------------------------------------------------------------- bad input
def _prog(n: int, op: str = "Rotate", value: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((n, 1), op_id(op))
    params = torch.zeros(n, 1, 3)
    params[:, 0, 0] = value
    return ids, params


def test_backend_bad_input_errors() -> None:
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    ids, prm = _prog(2)
    with pytest.raises(TypeError, match="must be uint8"):
        apply_program(x.float(), ids, prm)
    with pytest.raises(ValueError, match="permute"):
        apply_program(x.permute(0, 2, 3, 1), ids, prm)  # NHWC
    with pytest.raises(ValueError, match="NCHW"):
        apply_program(x[0], ids, prm)
    with pytest.raises(ValueError, match="empty batch"):
        apply_program(x[:0], ids[:0], prm[:0])
    with pytest.raises(ValueError, match="shapes do not match"):
        apply_program(x, *_prog(3))
    with pytest.raises(TypeError, match="int64"):
        apply_program(x, ids.int(), prm)
    with pytest.raises(TypeError, match="float32"):
        apply_program(x, ids, prm.double())
    with pytest.raises(ValueError, match="unknown op id 16"):
        apply_program(x, torch.full((2, 1), 16), prm)
    with pytest.raises(ValueError, match="Rotate parameter 40.0 is out of range"):
        apply_program(x, *_prog(2, "Rotate", 40.0))
    with pytest.raises(ValueError, match="Posterize parameter 2.0"):
        apply_program(x, *_prog(2, "Posterize", 2.0))
    bad_u = prm.clone()
    bad_u[:, 0, 1] = 2.0
    with pytest.raises(ValueError, match="u1, u2"):
        apply_program(x, ids, bad_u)
    with pytest.raises(TypeError, match="torch.Tensor"):
        apply_program(x.numpy(), ids, prm)  # type: ignore[arg-type]


def test_identity_program_and_grayscale_images() -> None:
    x = torch.randint(0, 256, (3, 1, 16, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ids = torch.full((3, 2), -1)
    assert torch.equal(apply_program(x, ids, torch.zeros(3, 2, 3)), x)
    s = UniformAWS().sample(3, torch.Generator().manual_seed(0))
    y = apply_program(x, s.op_ids, s.params)  # 1-channel images run every op
    assert y.shape == x.shape and y.dtype == torch.uint8


def test_augment_samples_and_applies() -> None:
    from hpcaug.ops import augment

    x = torch.randint(0, 256, (6, 3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y, choice = augment(x, UniformAWS(), torch.Generator().manual_seed(4))
    s = UniformAWS().sample(6, torch.Generator().manual_seed(4))
    assert torch.equal(choice, s.choice) and torch.equal(y, apply_program(x, s.op_ids, s.params))
    for pol in (UniformAWS(), SubPolicyPolicy.autoaugment_imagenet(), RandAugment(), TrivialAugment(), NoPolicy()):
        z = pol.sample(0, torch.Generator().manual_seed(0))
        assert z.op_ids.shape[0] == 0 and z.params.shape[0] == 0 and z.choice.shape == (0,)

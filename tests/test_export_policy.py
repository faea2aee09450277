"""export_policy and PolicyTransform: a policy exported to JSON and applied through torchvision-v2
draws the same op distribution as the source policy (chi-square), and the pixels are hpcaug's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torchvision import tv_tensors
from torchvision.transforms import v2

from hpcaug.ops.policy import AWSPolicy, Policy, SubPolicyPolicy, load_policy
from hpcaug.ops.torch_backend import apply_program
from hpcaug.ops.tv_transform import PolicyTransform, export_policy

DRAWS, BATCH = 6_000, 500


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _draw_through(t: PolicyTransform) -> tuple[np.ndarray, np.ndarray]:
    """Run DRAWS images through the transform in batches; (choices, applied op-id rows) it reports."""
    choices, ops = [], []
    for i in range(DRAWS // BATCH):
        x = _images(BATCH, i)
        y = t(x)
        s = t.last_sampled
        assert s is not None and len(s) == BATCH
        if i == 0:  # the pixels are the backend's for the program the transform reports
            assert torch.equal(y, apply_program(x, s.op_ids, s.params))
        choices.append(s.choice.numpy())
        ops.append(s.op_ids.numpy())
    return np.concatenate(choices), np.concatenate(ops)


def _chi2(observed: np.ndarray, expected_p: np.ndarray) -> float:
    """p-value of observed counts against probabilities.

    A count in a cell of probability 0 gives 0 (impossible); cells are merged, smallest expected
    first, into groups of expected count >= 5 so the chi-square approximation holds.
    """
    exp = expected_p * observed.sum()
    if observed[exp == 0].sum() > 0:
        return 0.0
    obs_g, exp_g, o, e = [], [], 0.0, 0.0
    for i in np.argsort(exp, kind="stable"):
        if exp[i] == 0:
            continue
        o, e = o + observed[i], e + exp[i]
        if e >= 5:
            obs_g.append(o)
            exp_g.append(e)
            o, e = 0.0, 0.0
    if e > 0:  # leftover small group joins the last one
        obs_g[-1] += o
        exp_g[-1] += e
    assert len(obs_g) >= 2, "too few draws for a chi-square test"
    return float(chisquare(obs_g, np.array(exp_g) * sum(obs_g) / sum(exp_g)).pvalue)


def _skewed_aws() -> AWSPolicy:
    """A strongly non-uniform AWS policy (a uniform sampler must fail the test against it)."""
    return AWSPolicy(3.0 * torch.randn(1296, generator=torch.Generator().manual_seed(7)))


def test_aws_policy_exported_and_applied_keeps_its_distribution(tmp_path: Path) -> None:
    src = _skewed_aws()
    path = export_policy(src, tmp_path / "aws.json")
    assert json.loads(path.read_text())["schema"] == "hpcaug.policy" and "version" in json.loads(path.read_text())
    t = PolicyTransform(path, generator=torch.Generator().manual_seed(1))
    assert t.policy == src
    choices, ops = _draw_through(t)
    counts = np.bincount(choices, minlength=1296)
    p = src.probs().numpy()
    assert _chi2(counts, p) > 1e-3
    assert _chi2(counts, np.full(1296, 1 / 1296)) < 1e-12  # the test can tell a wrong distribution apart
    # the ops applied are the chosen operation's two elements, in order
    from hpcaug.ops.spaces import AWS_SPACE

    el_op = np.array([e.op for e in AWS_SPACE.elements])
    assert (ops[:, 0] == el_op[choices // 36]).all() and (ops[:, 1] == el_op[choices % 36]).all()


def _applied_distribution(pol: SubPolicyPolicy) -> dict[tuple[int, int], float]:
    """Exact distribution of the applied (step-1 op, step-2 op) pair, -1 = the step did not fire."""
    from hpcaug.ops.table import get_op

    out: dict[tuple[int, int], float] = {}
    for (a, pa, _), (b, pb, _) in pol.sub_policies:
        for fa in (True, False):
            for fb in (True, False):
                key = (get_op(a).id if fa else -1, get_op(b).id if fb else -1)
                w = (pa if fa else 1 - pa) * (pb if fb else 1 - pb) / len(pol.sub_policies)
                out[key] = out.get(key, 0.0) + w
    return out


def test_published_autoaugment_loads_and_keeps_its_op_distribution(tmp_path: Path) -> None:
    src = load_policy("autoaugment-imagenet")
    path = export_policy("autoaugment-imagenet", tmp_path / "aa.json")
    t = PolicyTransform(path, generator=torch.Generator().manual_seed(2))
    assert t.policy == src == SubPolicyPolicy.autoaugment_imagenet()
    _, ops = _draw_through(t)
    dist = _applied_distribution(src)
    keys = sorted(dist)
    seen = {tuple(r) for r in ops.tolist()}
    assert seen <= set(keys)
    idx = {k: i for i, k in enumerate(keys)}
    counts = np.bincount([idx[tuple(r)] for r in ops.tolist()], minlength=len(keys))
    assert _chi2(counts, np.array([dist[k] for k in keys])) > 1e-3
    # ignoring the step probabilities (every step fires) would be caught
    assert counts[[i for k, i in idx.items() if -1 in k]].sum() > 0.3 * DRAWS
    everything_fires = {k: v for k, v in dist.items() if -1 not in k}
    p_all = np.array([everything_fires.get(k, 0.0) for k in keys])
    assert _chi2(counts, p_all / p_all.sum()) < 1e-12


def test_export_from_a_search_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_report_aws import build_aws_run

    from hpcaug.search.rundir import RunDir

    run = tmp_path / "run"
    build_aws_run(run, monkeypatch, rounds_to_run=0, partial=0)  # no update yet: theta of round 0
    assert export_policy(run, tmp_path / "p0.json").read_text() == AWSPolicy.uniform().to_json()
    build_aws_run(run, monkeypatch, rounds_to_run=2, partial=0)
    out = export_policy(run, tmp_path / "p2.json")
    pol = load_policy(str(out))
    assert pol == load_policy(str(run / "policy.json"))
    assert torch.equal(pol.theta, RunDir(run).theta(2).to(pol.theta.dtype))


def test_pipeline_on_real_photos(foolbox_images: list[Path], tmp_path: Path) -> None:
    from PIL import Image

    path = export_policy(_skewed_aws(), tmp_path / "aws.json")
    pipe = v2.Compose([v2.PILToTensor(), v2.CenterCrop(224), PolicyTransform(path),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.25] * 3)])
    with Image.open(foolbox_images[0]) as im:
        img = im.convert("RGB")
        x, label = pipe(img, 3)
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and label == 3
        out = PolicyTransform(path)(img)  # PIL in, PIL out
        assert isinstance(out, Image.Image) and out.size == img.size and out.mode == "RGB"
    # tv_tensors.Image stays an Image; a batch gets one draw per image
    t = PolicyTransform(path)
    y = t(tv_tensors.Image(_images(6)))
    assert isinstance(y, tv_tensors.Image) and y.shape == (6, 3, 12, 12) and len(t.last_sampled) == 6


def test_same_generator_same_output_and_errors(tmp_path: Path) -> None:
    x = _images(8)
    a = PolicyTransform("randaugment-n2-m9", generator=torch.Generator().manual_seed(5))(x)
    b = PolicyTransform("randaugment-n2-m9", generator=torch.Generator().manual_seed(5))(x)
    assert torch.equal(a, b)
    t = PolicyTransform("autoaugment-imagenet")
    with pytest.raises(TypeError, match="ToDtype"):
        t(x.float() / 255)
    with pytest.raises(TypeError, match="classification samples"):
        t(tv_tensors.Image(x[0]), tv_tensors.BoundingBoxes([[0, 0, 4, 4]], format="XYXY", canvas_size=(12, 12)))
    with pytest.raises(ValueError, match="must end in .json"):
        export_policy("autoaugment-imagenet", tmp_path / "p.txt")
    with pytest.raises(ValueError, match="holds no policy"):
        export_policy(tmp_path, tmp_path / "p.json")
    assert isinstance(t.policy, Policy)


class _Same(torch.utils.data.Dataset):
    """n copies of one image: any difference between outputs comes from the transform's draws."""

    def __init__(self, transform: PolicyTransform, n: int = 16) -> None:
        self.t, self.n, self.img = transform, n, _images(1, 3)[0]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.t(self.img, i)


def test_in_a_dataloader_with_workers(tmp_path: Path) -> None:
    """Pickled into two worker processes; each worker draws its own programs (torch's per-worker seed)."""
    t = PolicyTransform(export_policy(_skewed_aws(), tmp_path / "aws.json"))
    dl = torch.utils.data.DataLoader(_Same(t), batch_size=8, num_workers=2)
    batches = [x for x, _ in dl]
    assert len(batches) == 2 and all(b.shape == (8, 3, 12, 12) for b in batches)
    assert not torch.equal(batches[0], batches[1])  # identical only if both workers drew the same stream

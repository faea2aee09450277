"""The torch backend gives the same pixels on every device: every op at every bin and sign, the
device path (whole op groups, gather translations, atomic histograms, no host synchronisation)
against the CPU path on the CPU, within `torch_backend.PARITY_TOLERANCE`.

The "cuda" case runs wherever CUDA exists (it reports "no CUDA" here); the "cpu" case runs the
device path on the CPU, where the arithmetic is the same, so it must agree exactly. The device
path is also run on the meta device, which has no data: any host read of a tensor value there
(`.item()`, `.tolist()`, `bool()`, `nonzero()`, `bincount`) raises, so a host synchronisation
added to the CUDA path fails this test on a machine without a GPU.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpcaug.ops import OPS, UniformAWS, apply_program
from hpcaug.ops import torch_backend as tb
from hpcaug.ops.policy import SubPolicyPolicy


@pytest.fixture(scope="module")
def photos(foolbox_images: list[Path]) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    return torch.stack([TF.resize(decode_jpeg(read_file(str(p)), mode=ImageReadMode.RGB), [96, 96], antialias=True)
                        for p in foolbox_images[:10]])


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA")  # only this case: the CUDA code path is the one the cpu/meta cases run
    return torch.device(name)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_op_gives_the_cpu_pixels_on_the_device(photos: torch.Tensor, device: str) -> None:
    dev = _device(device)
    for images in (photos, tb.parity_images()):
        res = tb.device_parity(dev, images)
        assert set(res) == {op.name for op in OPS}
        bad = {k: v for k, v in res.items() if not v.ok}
        assert not bad, f"{dev}: beyond PARITY_TOLERANCE {bad}"
        if dev.type == "cpu":  # same arithmetic: the two paths must agree bit for bit
            assert all(v.max_abs_diff == 0 for v in res.values()), res


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_mixed_programs_give_the_cpu_pixels_on_the_device(photos: torch.Tensor, device: str) -> None:
    """Several ops per step, two steps, SamplePairing reading the batch before its step."""
    dev = _device(device)
    g = torch.Generator().manual_seed(1)
    advaa = SubPolicyPolicy.from_advaa(torch.randint(0, 160, (8, 2), generator=g).tolist() + [[159, 149]])
    for policy in (UniformAWS(), advaa):
        s = policy.sample(len(photos), g)
        want = apply_program(photos, s.op_ids, s.params)
        got = tb._apply(photos.to(dev), s.op_ids, s.params, cpu_path=False).cpu()  # the device path
        d = (got.int() - want.int()).abs()
        assert float((d > 1).float().mean()) <= 1e-3, (policy.kind, int(d.max()))
        if dev.type == "cpu":
            assert torch.equal(got, want), policy.kind


def test_the_device_path_never_reads_tensor_values_on_the_host() -> None:
    x = tb.parity_images(8, 24).to("meta")
    for spec in OPS:
        ids, params = tb.every_bin_program(spec.id, len(x))
        out = tb._apply(x, ids, params, cpu_path=False)
        assert out.shape == x.shape and out.dtype == torch.uint8 and out.device.type == "meta"
    with pytest.raises((NotImplementedError, RuntimeError)):  # what the CPU path does is caught
        tb._apply(x, *tb.every_bin_program(OPS[2].id, len(x)), cpu_path=True)


def test_atomic_histogram_equals_bincount() -> None:
    key = torch.randint(0, 700, (5000,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(tb._histogram(key, 768, atomic=True), tb._histogram(key, 768, atomic=False))


def test_device_parity_reports_per_op() -> None:
    res = tb.device_parity("cpu")
    assert all(isinstance(v, tb.Parity) and v.ok and v.differing == 0.0 for v in res.values())
    assert tb.PARITY_TOLERANCE["Posterize"] == (0, 0.0) and tb.PARITY_TOLERANCE["Color"][0] == 1

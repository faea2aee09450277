"""The backends' fast paths give the same pixels as the general code they stand in for.

- torch: TranslateX/Y run as slice copies instead of the nearest-neighbour gather;
- torch: any input layout (permuted views, channels_last, strided slices) works and gives the
  same result as the contiguous tensor (Equalize and the LUT ops used to fail on views);
- DALI CPU: Brightness / Contrast run as `brightness_contrast` on uint8 (rounds half away from
  zero) instead of float arithmetic + floor(x + 0.5): identical on every level and table factor.
"""
from __future__ import annotations

import pytest
import torch

from hpcaug.ops import OPS, apply_program, get_op
from hpcaug.ops import torch_backend as tb
from hpcaug.ops.table import NUM_BINS


def _images(n: int = 6, h: int = 23, w: int = 31, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _all_params(op_name: str) -> torch.Tensor:
    spec = get_op(op_name)
    return torch.tensor([spec.param(b, s) for b in range(NUM_BINS) for s in ((1, -1) if spec.signed else (1,))])


@pytest.mark.parametrize("name", ["TranslateX", "TranslateY"])
def test_translation_slices_equal_the_gather(name: str) -> None:
    v = _all_params(name)
    x = _images(len(v))
    ids = torch.full((len(v),), get_op(name).id)
    want = tb._gather(x, tb._coeffs(ids, v, x.shape[2], x.shape[3]))
    params = torch.stack([v, torch.zeros_like(v), torch.zeros_like(v)], 1).view(-1, 1, 3)
    got = apply_program(x, ids.view(-1, 1), params)
    assert torch.equal(got, want)
    assert tb._is_shift(tb._coeffs(ids, v, x.shape[2], x.shape[3])).all()


@pytest.mark.parametrize("layout", ["permuted", "channels_last", "strided"])
def test_every_op_accepts_non_contiguous_images(layout: str) -> None:
    base = _images(8, 20, 20, seed=1)
    if layout == "permuted":  # an NHWC buffer seen as NCHW
        x = base.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    elif layout == "channels_last":
        x = base.contiguous(memory_format=torch.channels_last)
    else:
        x = _images(8, 40, 20, seed=1)[:, :, ::2]
        base = x.contiguous()
    assert not x.is_contiguous()
    for spec in OPS:
        ids = torch.full((8, 1), spec.id)
        params = torch.zeros(8, 1, 3)
        params[:, 0, 0] = spec.param(NUM_BINS - 1)
        params[:, 0, 1:] = 0.3
        assert torch.equal(apply_program(x, ids, params), apply_program(base, ids, params)), spec.name
        # the op's implementation itself, on the view
        g = tb.Group(spec.id, params[:, 0, 0], params[:, 0, 1:], base.flip(0) if spec.name == "SamplePairing" else None)
        assert torch.equal(tb.IMPLS[spec.id](x, g), tb.IMPLS[spec.id](base, g)), spec.name


def test_equalize_on_a_permuted_view() -> None:
    hwc = _images(2, 16, 16, seed=3).permute(0, 2, 3, 1).contiguous()
    g = tb.Group(get_op("Equalize").id, torch.zeros(2), torch.zeros(2, 2))
    out = tb.equalize(hwc.permute(0, 3, 1, 2), g)
    assert torch.equal(out, tb.equalize(hwc.permute(0, 3, 1, 2).contiguous(), g))


@pytest.mark.parametrize("name", ["Brightness", "Contrast"])
def test_dali_uint8_enhance_ops_equal_torch_on_every_level(name: str) -> None:
    pytest.importorskip("nvidia.dali")
    from hpcaug.ops import dali_backend as db

    v = _all_params(name)
    levels = torch.arange(256, dtype=torch.uint8).view(16, 16)
    x = torch.stack([torch.stack([levels, levels.t(), levels.flip(0)]) for _ in range(len(v))])
    if name == "Contrast":  # different mean grey per sample
        scale = torch.arange(len(v)).view(-1, 1, 1, 1) + 1
        x = torch.cat([x[:, :, :8], (x[:, :, 8:].int() * scale // len(v)).to(torch.uint8)], 2)
    ids = torch.full((len(v), 1), get_op(name).id)
    params = torch.zeros(len(v), 1, 3)
    params[:, 0, 0] = v
    assert torch.equal(db.run_program(x, ids, params, device="cpu"), apply_program(x, ids, params))

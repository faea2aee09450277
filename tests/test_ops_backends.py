"""The torch and DALI (CPU) backends agree op by op on real images, every bin and both signs.

Measured (foolbox ImageNet photos at 128x128 and Fashion-MNIST at 32x32, DALI 2.4 CPU): all ops
are bit-identical except Rotate (cos/sin rounding moves ~0.01% of pixels to a neighbour),
Sharpness and AutoContrast (a few pixels off by 1 level). Tolerances below leave some margin
and are the ones docs/ops.md states.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")
from nvidia.dali import fn, pipeline_def, types  # noqa: E402

from hpcaug.ops import OPS, SubPolicyPolicy, UniformAWS, apply_program, op_id  # noqa: E402
from hpcaug.ops import dali_backend as db  # noqa: E402
from hpcaug.ops.policy import program_from_elements  # noqa: E402
from hpcaug.ops.table import NUM_BINS  # noqa: E402
from hpcaug.ops.torch_backend import every_bin_program  # noqa: E402

# per op: (max mean |diff| of any image in uint8 levels, max fraction of differing pixels)
EXACT = (0.01, 0.001)
TOLERANCE: dict[str, tuple[float, float]] = {op.name: EXACT for op in OPS}
TOLERANCE.update({"Rotate": (0.05, 0.002), "Sharpness": (0.02, 0.002), "AutoContrast": (0.02, 0.002)})


def _decode(paths: list[Path], size: int) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    return torch.stack([TF.resize(decode_jpeg(read_file(str(p)), mode=ImageReadMode.RGB), [size, size],
                                  antialias=True) for p in paths])


@pytest.fixture(scope="module")
def photos(foolbox_images: list[Path]) -> torch.Tensor:
    return _decode(foolbox_images, 128)


@pytest.fixture(scope="module")
def fashion(demo_data: Path) -> torch.Tensor:
    files = sorted((demo_data / "train").rglob("*.JPEG"))[::25][:20]
    assert len(files) == 20
    return _decode(files, 32)


def diff_stats(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.int() - b.int()).abs().float()
    return float(d.mean(dim=(1, 2, 3)).max()), float((d > 0).float().mean())


def _check_agreement(images: torch.Tensor) -> dict[str, tuple[float, float]]:
    x = torch.cat([images, images.flip(-1)])  # 2 samples per image: every (bin, sign) covered
    gray = bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())  # Fashion-MNIST: Color is a no-op
    measured = {}
    for op in OPS:
        ids, params = every_bin_program(op.id, len(x), seed=op.id)
        ours = apply_program(x, ids, params)
        dali = db.run_program(x, ids, params, device="cpu")
        assert dali.shape == ours.shape and dali.dtype == torch.uint8
        measured[op.name] = diff_stats(ours, dali)
        # the op did something, so agreement is not trivial
        if not (gray and op.name == "Color"):
            assert (ours != x).any(), op.name
    bad = {k: v for k, v in measured.items() if v[0] > TOLERANCE[k][0] or v[1] > TOLERANCE[k][1]}
    assert not bad, f"backends disagree beyond tolerance {TOLERANCE}: {bad}"
    return measured


def test_backends_agree_per_op_on_photos(photos: torch.Tensor) -> None:
    _check_agreement(photos)


def test_backends_agree_per_op_on_fashion_mnist(fashion: torch.Tensor) -> None:
    _check_agreement(fashion)


def test_backends_agree_on_mixed_two_step_programs(photos: torch.Tensor) -> None:
    """Random programs over all 16 ops (AdvAA space, incl. Cutout and SamplePairing) and the AWS policy."""
    g = torch.Generator().manual_seed(7)
    x = photos
    ops = torch.randint(-1, len(OPS), (len(x), 2), generator=g)
    ids, params = program_from_elements(ops, torch.randint(0, NUM_BINS, (len(x), 2), generator=g), g)
    for ids_, params_ in ((ids, params), (UniformAWS().sample(len(x), g).op_ids, None)):
        if params_ is None:
            s = UniformAWS().sample(len(x), g)
            ids_, params_ = s.op_ids, s.params
        worst, frac = diff_stats(apply_program(x, ids_, params_), db.run_program(x, ids_, params_, device="cpu"))
        assert worst <= 0.05 and frac <= 0.002, (worst, frac)


@pipeline_def(enable_conditionals=True)
def _reader_pipeline(files: list[str], size: int):  # type: ignore[no-untyped-def]
    jpegs, _ = fn.readers.file(files=files, random_shuffle=False, name="Reader")
    images = fn.resize(fn.decoders.image(jpegs, device="cpu", output_type=types.RGB), size=[size, size])
    op_ids = fn.external_source(name="op_ids", dtype=types.INT64)
    params = fn.external_source(name="params", dtype=types.FLOAT)
    return images, db.apply_program(images, op_ids, params, num_steps=2)


def test_apply_program_inside_a_reader_pipeline(foolbox_images: list[Path]) -> None:
    """The loader's use: readers.file -> decode -> resize -> per-sample program from a policy."""
    n = len(foolbox_images)
    pipe = _reader_pipeline([str(p) for p in foolbox_images], 96, batch_size=n, num_threads=2, device_id=None,
                            seed=0, prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
    pipe.build()
    pol = SubPolicyPolicy([[("SamplePairing", 1.0, 9), ("Cutout", 1.0, 6)], [("Rotate", 1.0, 9), ("Equalize", 1.0, 0)],
                           [("Posterize", 1.0, 9), ("Solarize", 1.0, 5)]])
    s = pol.sample(n, torch.Generator().manual_seed(0))
    pipe.feed_input("op_ids", list(s.op_ids.numpy()))
    pipe.feed_input("params", list(s.params.numpy()))
    plain, augmented = pipe.run()
    x = torch.from_numpy(np.stack([np.asarray(plain.at(i)) for i in range(n)])).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.stack([np.asarray(augmented.at(i)) for i in range(n)])).permute(0, 3, 1, 2)
    assert (y != x).float().mean() > 0.3
    worst, frac = diff_stats(apply_program(x.contiguous(), s.op_ids, s.params), y)
    assert worst <= 0.05 and frac <= 0.002, (worst, frac)


def test_sample_pairing_uses_the_batch_partner(photos: torch.Tensor) -> None:
    x = photos[:8]
    ids = torch.full((8, 1), op_id("SamplePairing"))
    params = torch.zeros(8, 1, 3)
    params[:, 0, 0] = 0.4
    params[:, 0, 1] = (torch.arange(8) + 0.5) / 8  # partner i = sample i: identity
    assert torch.equal(db.run_program(x, ids, params, device="cpu"), x)
    params[:, 0, 1] = 0.0  # everyone pairs with sample 0
    want = (0.6 * x.float() + 0.4 * x[:1].float() + 0.5).floor().to(torch.uint8)
    assert (db.run_program(x, ids, params, device="cpu").int() - want.int()).abs().max() <= 1


def test_dali_backend_rejects_bad_input(photos: torch.Tensor) -> None:
    ids = torch.full((2, 1), op_id("Rotate"))
    params = torch.zeros(2, 1, 3)
    params[:, 0, 0] = 90.0
    with pytest.raises(ValueError, match="out of range"):
        db.run_program(photos[:2], ids, params)
    with pytest.raises(TypeError, match="uint8"):
        db.run_program(photos[:2].float(), ids, params * 0)
    with pytest.raises(ValueError, match="num_steps"):
        db.build_pipeline(2, 0, device="cpu")


def test_dali_apply_program_needs_conditionals() -> None:
    @pipeline_def
    def plain():  # type: ignore[no-untyped-def]
        imgs = fn.external_source(name="images", dtype=types.UINT8, layout="HWC")
        ids = fn.external_source(name="op_ids", dtype=types.INT64)
        prm = fn.external_source(name="params", dtype=types.FLOAT)
        return db.apply_program(imgs, ids, prm)

    with pytest.raises(RuntimeError, match="enable_conditionals=True"):
        plain(batch_size=2, num_threads=1, device_id=None).build()


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_standalone_pipeline_defines_on_either_device(device: str) -> None:
    """The graph is defined (not built: no GPU here) for the device passed explicitly. On GPU
    images the graph must not ask DALI for their shape: that is a GPU -> CPU transfer, refused
    under the standalone pipeline's synchronous executor (the old code failed here)."""
    for augmentations in (None, ["Rotate", "Equalize", "SamplePairing"]):
        pipe = db._pipeline(4, 2, device, 1, augmentations)
        assert pipe.device_id == (0 if device == "gpu" else None)


def test_gpu_images_need_their_shape() -> None:
    @pipeline_def(enable_conditionals=True)
    def on_gpu(shape):  # type: ignore[no-untyped-def]
        imgs = fn.external_source(name="images", dtype=types.UINT8, layout="HWC").gpu()
        ids = fn.external_source(name="op_ids", dtype=types.INT64)
        prm = fn.external_source(name="params", dtype=types.FLOAT)
        return db.apply_program(imgs, ids, prm, shape=shape)

    on_gpu((32, 32), batch_size=2, num_threads=1, device_id=0, exec_async=False, exec_pipelined=False)
    with pytest.raises(ValueError, match="needs shape="):
        on_gpu(None, batch_size=2, num_threads=1, device_id=0, exec_async=False, exec_pipelined=False)


def test_graph_has_branches_only_for_the_policys_ops(photos: torch.Tensor) -> None:
    """augmentations= builds the identity plus one branch per implementation; run with a
    fixed size (the loader's shape=) it gives the torch backend's pixels."""
    branches, lut = db._branches(UniformAWS().augmentations)
    assert db.IMPLS[op_id("SamplePairing")] not in branches and db.IMPLS[op_id("Cutout")] not in branches
    assert len(branches) == 11 and lut[op_id("Cutout") + 1] == 0  # identity, geometric, 9 colour ops
    assert len(db._branches(None)[0]) == 13
    with pytest.raises(ValueError, match="unknown op"):
        db._branches(["Shear"])

    @pipeline_def(enable_conditionals=True)
    def fixed():  # type: ignore[no-untyped-def]
        imgs = fn.external_source(name="images", dtype=types.UINT8, layout="HWC")
        ids = fn.external_source(name="op_ids", dtype=types.INT64)
        prm = fn.external_source(name="params", dtype=types.FLOAT)
        return db.apply_program(imgs, ids, prm, augmentations=UniformAWS().augmentations, shape=(128, 128))

    n = len(photos)
    pipe = fixed(batch_size=n, num_threads=1, device_id=None, exec_async=False, exec_pipelined=False)
    pipe.build()
    s = UniformAWS().sample(n, torch.Generator().manual_seed(3))
    pipe.feed_input("images", list(photos.permute(0, 2, 3, 1).contiguous().numpy()), layout="HWC")
    pipe.feed_input("op_ids", list(s.op_ids.numpy()))
    pipe.feed_input("params", list(s.params.numpy()))
    (out,) = pipe.run()
    y = torch.from_numpy(np.stack([np.asarray(out.at(i)) for i in range(n)])).permute(0, 3, 1, 2)
    worst, frac = diff_stats(apply_program(photos, s.op_ids, s.params), y)
    assert worst <= 0.05 and frac <= 0.002, (worst, frac)

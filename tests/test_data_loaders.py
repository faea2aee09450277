"""The train/val loaders (DALI in CPU mode and the torch fallback) on real JPEGs.

`imagenet_data` is 4 classes x 10 train (512 px photos) + 2 val (320 px) images, prepared by
data_prep; most tests use a small crop so that the decode dominates and tests stay quick.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hpcaug.config import Config
from hpcaug.data import Batch, CorruptImageError, _plan, build_train_loader, build_val_loader
from hpcaug.data.index import DatasetIndex
from hpcaug.ops.policy import AWSPolicy, NoPolicy

BACKENDS = ["dali", "torch"]


def _cfg(data_dir: Path, backend: str, **data: object) -> Config:
    base = {"data.dir": str(data_dir), "data.backend": backend, "data.batch_size": 4, "data.image_size": 32,
            "data.val_resize": 40, "data.workers": 2}
    base.update({f"data.{k}": v for k, v in data.items()})
    return Config().replace(**base)


def _epoch(loader) -> list[Batch]:  # noqa: ANN001
    return list(loader)


def _aws_policies(backend: str, m: int) -> list:
    """AWS policies for the DALI loader need hpcaug.ops.dali_backend (another module)."""
    if backend == "dali":
        pytest.importorskip("hpcaug.ops.dali_backend", reason="hpcaug.ops.dali_backend not there yet")
    return [AWSPolicy.uniform()] * m


# ------------------------------------------------------------------------------ plans (pure)
@pytest.mark.parametrize("n,world,bs", [(10, 4, 2), (8, 2, 3), (7, 3, 1), (50, 2, 16), (1000, 8, 7), (9, 2, 4)])
def test_val_plan_covers_every_sample_once(n: int, world: int, bs: int) -> None:
    batches = [_plan.val_batches(n, bs, r, world) for r in range(world)]
    rows = np.concatenate([np.concatenate(b) for b in batches])
    assert sorted(rows.tolist()) == list(range(n))
    assert all(len(x) >= 1 and len(x) <= bs for b in batches for x in b)
    steps = {len(b) for b in batches}
    assert len(steps) == 1 or bs == 1, f"ranks run different step counts: {steps}"


def test_train_plan_is_a_seeded_permutation_in_full_global_batches() -> None:
    n, bs, world = 103, 5, 3
    steps = _plan.train_steps(n, bs, world)
    assert steps == 103 // 15
    order = _plan.epoch_order(n, 7, 2)
    assert np.array_equal(order, _plan.epoch_order(n, 7, 2))
    assert not np.array_equal(order, _plan.epoch_order(n, 7, 3))
    seen = np.concatenate([_plan.train_step_indices(order, s, bs, r, world)
                           for s in range(steps) for r in range(world)])
    assert len(seen) == steps * bs * world and len(set(seen.tolist())) == len(seen)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        _plan.train_steps(10, 8, 2)


# ------------------------------------------------------------------------------ train / val
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_batches_shapes_dtypes_and_labels(imagenet_data: Path, backend: str) -> None:
    split = DatasetIndex.open(imagenet_data).split("train")
    cfg = _cfg(imagenet_data, backend, fp16=True)
    loader = build_train_loader(cfg, [NoPolicy()], 0, 1, "cpu")
    assert len(loader) == len(split) // 4 and loader.num_classes == 4
    batches = _epoch(loader)
    assert len(batches) == len(loader)
    for b in batches:
        assert b.images.shape == (4, 3, 32, 32) and b.images.dtype == torch.float16
        assert b.labels.dtype == b.choices.dtype == b.copy_ids.dtype == torch.int64
        assert torch.equal(b.labels, torch.from_numpy(split.labels[b.indices.numpy()]))
        assert torch.isfinite(b.images.float()).all() and b.images.float().std() > 0.1  # normalised photos
    rows = torch.cat([b.indices for b in batches])
    assert sorted(rows.tolist()) == list(range(len(split)))  # 40 images, 10 full steps: all of them
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["step"] == 0


def _reference_val(path: str, resize: int, size: int, mean: tuple, std: tuple) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = resize / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        x = torch.from_numpy(np.asarray(im.crop((left, top, left + size, top + size)), np.float32)).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_val_images_are_the_listed_files_resized_and_centre_cropped(imagenet_data: Path, backend: str) -> None:
    split = DatasetIndex.open(imagenet_data).split("val")
    cfg = _cfg(imagenet_data, backend, batch_size=3, image_size=64, val_resize=80)
    batches = _epoch(build_val_loader(cfg, 0, 1, "cpu"))
    assert [len(b) for b in batches] == [3, 3, 2]  # 8 images: the last batch is partial, nothing dropped
    files = split.abs_files()
    for b in batches:
        assert torch.equal(b.labels, torch.from_numpy(split.labels[b.indices.numpy()]))
        assert (b.choices == -1).all()
        for img, row in zip(b.images, b.indices.tolist(), strict=True):
            ref = _reference_val(files[row], 80, 64, cfg.data.mean, cfg.data.std)
            err = (img - ref).abs().mean()
            assert err < 0.12, f"row {row}: mean abs error {err:.3f} vs PIL reference (wrong image?)"
            other = _reference_val(files[(row + 1) % len(files)], 80, 64, cfg.data.mean, cfg.data.std)
            assert (img - other).abs().mean() > 2 * err


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_ranks_cover_val_and_a_train_epoch_exactly_once(imagenet_data: Path, backend: str) -> None:
    index = DatasetIndex.open(imagenet_data)
    cfg = _cfg(imagenet_data, backend, batch_size=3)
    val = [_epoch(build_val_loader(cfg, r, 2, "cpu")) for r in range(2)]
    assert len(val[0]) == len(val[1])
    rows = torch.cat([b.indices for bs in val for b in bs]).tolist()
    assert sorted(rows) == list(range(len(index.split("val"))))
    cfg = _cfg(imagenet_data, backend, batch_size=4)  # 40 = 5 steps x 4 x 2 ranks
    train = []
    for r in range(2):
        loader = build_train_loader(cfg, [NoPolicy()], r, 2, "cpu")
        loader.set_epoch(3)
        train.append(_epoch(loader))
    assert len(train[0]) == len(train[1]) == 5
    rows = torch.cat([b.indices for bs in train for b in bs]).tolist()
    assert sorted(rows) == list(range(40))


@pytest.mark.parametrize("backend", BACKENDS)
def test_enlarged_batch_rows_are_aligned(imagenet_data: Path, backend: str) -> None:
    m = 3
    cfg = _cfg(imagenet_data, backend, batch_size=4).replace(**{"train.steps_per_epoch": 2})
    loader = build_train_loader(cfg, _aws_policies(backend, m), 0, 1, "cpu")
    batches = _epoch(loader)
    assert len(batches) == 2
    for b in batches:
        assert b.images.shape == (4 * m, 3, 32, 32)
        assert b.copy_ids.tolist() == [0, 1, 2] * 4
        lab, rows, ch = b.labels.view(4, m), b.indices.view(4, m), b.choices.view(4, m)
        assert (lab == lab[:, :1]).all() and (rows == rows[:, :1]).all()
        assert ((ch >= 0) & (ch < 1296)).all()
        assert (ch != ch[:, :1]).any(1).all(), "copies of an image drew the same AWS operation"
        img = b.images.view(4, m, 3, 32, 32)
        assert ((img[:, 0] - img[:, 1]).abs().mean(dim=(1, 2, 3)) > 0.05).all()  # distinct views


@pytest.mark.parametrize("backend", BACKENDS)
def test_copy_m_uses_policy_m(imagenet_data: Path, backend: str) -> None:
    """AdvAA: copy m is made by policies[m] (here copy 0 by no policy, copy 1 by AWS)."""
    aws = _aws_policies(backend, 1)[0]
    cfg = _cfg(imagenet_data, backend, batch_size=8, color_jitter=0.0, flip=False, crop_scale=(1.0, 1.0))
    cfg = cfg.replace(**{"train.steps_per_epoch": 1})
    (b,) = _epoch(build_train_loader(cfg, [NoPolicy(), aws], 0, 1, "cpu"))
    ch = b.choices.view(8, 2)
    assert (ch[:, 0] == 0).all() and len(set(ch[:, 1].tolist())) > 1
    img = b.images.view(8, 2, 3, 32, 32)  # full-image crops, no flip/jitter: only the program differs
    changed = (img[:, 0] - img[:, 1]).abs().amax(dim=(1, 2, 3)) > 0.5
    assert changed.sum() >= 4, "the AWS copy should differ from the plain copy for most images"


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_equals_the_uninterrupted_epoch(imagenet_data: Path, backend: str) -> None:
    policies = _aws_policies(backend, 2)
    cfg = _cfg(imagenet_data, backend, seed=5)
    full = build_train_loader(cfg, policies, 0, 1, "cpu")
    full.set_epoch(2)
    ref = _epoch(full)
    first = build_train_loader(cfg, policies, 0, 1, "cpu")
    first.set_epoch(2)
    part = []
    for b in first:  # a job killed after 4 steps
        part.append(b)
        if len(part) == 4:
            break
    state = first.state_dict()
    assert state == {"epoch": 2, "step": 4, "samples": 16}
    again = build_train_loader(cfg, policies, 0, 1, "cpu")  # the requeued job
    again.load_state_dict(state)
    again.set_epoch(2)  # what a training loop does at the epoch start: keeps the resume point
    rest = _epoch(again)
    got = part + rest
    assert len(got) == len(ref) == 10
    assert torch.equal(torch.cat([b.indices for b in got]), torch.cat([b.indices for b in ref]))
    assert torch.equal(torch.cat([b.choices for b in got]), torch.cat([b.choices for b in ref]))
    assert again.state_dict()["epoch"] == 3


def test_dali_and_torch_loaders_read_the_same_order(imagenet_data: Path) -> None:
    out = {}
    for backend in BACKENDS:
        loader = build_train_loader(_cfg(imagenet_data, backend, seed=11), [NoPolicy()], 1, 2, "cpu")
        loader.set_epoch(4)
        out[backend] = [[(b.indices.tolist(), b.labels.tolist()) for b in loader] for _ in range(2)]  # epochs 4, 5
        assert loader.state_dict()["epoch"] == 6
        loader.close()  # frees the DALI pipeline before the torch loader forks its workers
    assert out["dali"] == out["torch"]
    e4, e5 = out["dali"]
    assert len(e4) == len(e5) == 5 and e4 != e5
    assert all(len({i for rows, _ in e for i in rows}) == 20 for e in (e4, e5))  # rank 1's half, no repeats


# ------------------------------------------------------------------------------ read-ahead (DALI)
def _timed_epoch(loader, step_s: float) -> tuple[list[Batch], list[float]]:  # noqa: ANN001
    """An epoch with a `step_s` training step after each batch; returns the batches and the
    time the loop waited for each one."""
    batches, waits = [], []
    it = iter(loader)
    while True:
        t = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            return batches, waits
        waits.append(time.perf_counter() - t)
        batches.append(b)
        time.sleep(step_s)  # the training step


def test_dali_reads_files_ahead_of_the_training_step(imagenet_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of the next steps are read while the training step runs (a slow parallel file
    system: 50 ms per file), not inside the loader's next(); the batches, and a resume in the
    middle of the epoch, are the same with and without read-ahead."""
    from hpcaug.data import _common

    def slow_read(self, row: int):  # noqa: ANN001, ANN202  a real read behind a slow file system
        time.sleep(0.05)
        return _common.read_encoded(self.paths[row])

    read_on: list[str] = []
    plain_read = _common.ImageReader.read

    def read(self, rows):  # noqa: ANN001, ANN202
        read_on.append(threading.current_thread().name)
        return plain_read(self, rows)

    monkeypatch.setattr(_common.ImageReader, "_read", slow_read)
    monkeypatch.setattr(_common.ImageReader, "read", read)
    policies = _aws_policies("dali", 2)
    cfg = _cfg(imagenet_data, "dali", seed=3).replace(**{"train.steps_per_epoch": 8})
    runs = {}
    for depth in (0, 2):
        read_on.clear()
        loader = build_train_loader(cfg.replace(**{"data.read_ahead": depth}), policies, 0, 1, "cpu")
        batches, waits = _timed_epoch(loader, step_s=0.25)
        loader.close()
        runs[depth] = batches, statistics.median(waits[2:])  # after the pipeline's own prefetch
        main = threading.main_thread().name
        assert (set(read_on) == {main}) if depth == 0 else (main not in read_on), (depth, set(read_on))
    (sync, wait_sync), (ahead, wait_ahead) = runs[0], runs[2]
    # 4 files x 50 ms over 2 reader threads = 100 ms of reading per step, hidden by read-ahead
    assert wait_ahead < 0.5 * wait_sync, f"wait per step: {wait_ahead * 1e3:.0f} ms with read-ahead, " \
                                         f"{wait_sync * 1e3:.0f} ms without"
    for key in ("indices", "labels", "choices", "copy_ids"):
        assert torch.equal(torch.cat([getattr(b, key) for b in sync]), torch.cat([getattr(b, key) for b in ahead]))

    first = build_train_loader(cfg, policies, 0, 1, "cpu")  # killed after 3 steps, steps 4-5 read ahead
    part = []
    for b in first:
        part.append(b)
        if len(part) == 3:
            break
    again = build_train_loader(cfg, policies, 0, 1, "cpu")
    again.load_state_dict(first.state_dict())
    got = part + _epoch(again)
    for key in ("indices", "choices"):
        assert torch.equal(torch.cat([getattr(b, key) for b in got]), torch.cat([getattr(b, key) for b in ahead]))
    first.close()
    again.close()


# ------------------------------------------------------------------------------ output format
def test_image_dtype_follows_amp_on_cuda_only() -> None:
    from hpcaug.data._common import image_dtype

    cfg = Config()
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")  # a device object needs no GPU
    assert image_dtype(cfg, cuda) == torch.float16  # train.amp is on by default
    assert image_dtype(cfg.replace(**{"train.amp": False}), cuda) == torch.float32
    assert image_dtype(cfg, cpu) == torch.float32  # CPU training runs in float32
    assert image_dtype(cfg.replace(**{"data.fp16": True}), cpu) == torch.float16


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m", [1, 2])
def test_channels_last_output_has_the_same_pixels(imagenet_data: Path, backend: str, m: int) -> None:
    """On CUDA (train.channels_last) the loaders emit NHWC memory under the NCHW shape, so the
    model's channels_last copy is free; forced here on the CPU, same pixels as CHW output."""
    cfg = _cfg(imagenet_data, backend, seed=2).replace(**{"train.steps_per_epoch": 2})
    policies = _aws_policies(backend, m)
    out = {}
    for cl in (False, True):
        loader = build_train_loader(cfg, policies, 0, 1, "cpu")
        assert loader.channels_last is False  # decided from the device: only CUDA
        loader.channels_last = cl
        out[cl] = _epoch(loader)
        loader.close()
    for a, b in zip(out[False], out[True], strict=True):
        assert b.images.shape == a.images.shape == (4 * m, 3, 32, 32)
        assert b.images.is_contiguous(memory_format=torch.channels_last) and a.images.is_contiguous()
        assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)


def test_dali_decoder_memory_hints(imagenet_data: Path) -> None:
    """The nvJPEG hints (NVIDIA's ResNet-50 values) go to `mixed` decoders only; DALI accepts
    them (its CPU decoder takes and ignores the same arguments, so a typo would fail here)."""
    from nvidia.dali import backend as dali_backend

    from hpcaug.data._dali import _decoder_hints, _Format, _train_pipeline, _val_pipeline

    hints = _decoder_hints("mixed")
    assert _decoder_hints("cpu") == {} and set(hints) == {"device_memory_padding", "host_memory_padding",
                                                          "preallocate_width_hint", "preallocate_height_hint"}
    for op in ("decoders__Image", "decoders__ImageRandomCrop"):
        assert all(dali_backend.GetSchema(op).HasArgument(k) for k in hints)
    loader = build_val_loader(_cfg(imagenet_data, "dali"), 0, 1, "cpu")
    assert loader._format().decode == "cpu" and loader._format().hints == {}
    buf = np.fromfile(DatasetIndex.open(imagenet_data).split("train").abs_files()[0], np.uint8)
    feed = lambda: ([buf] * 2, *([[np.array([0], np.int64)] * 2] * 3))  # noqa: E731
    fmt = _Format("cpu", True, True, hints)
    for pipe in (_train_pipeline(loader.cfg, feed, [None], fmt, batch_size=2, num_threads=1, device_id=None),
                 _train_pipeline(loader.cfg, feed, [None, None], fmt, batch_size=2, num_threads=1, device_id=None),
                 _val_pipeline(loader.cfg, feed, fmt, batch_size=2, num_threads=1, device_id=None)):
        pipe.build()
        assert pipe.run()[0].as_tensor().shape() == [2, 32, 32, 3]  # HWC
        del pipe
    loader.close()


# ------------------------------------------------------------------------------ bad input
def test_check_encoded_on_real_bytes(foolbox_images: list[Path]) -> None:
    from hpcaug.data._common import check_encoded

    jpg = np.fromfile(foolbox_images[0], np.uint8)
    assert check_encoded(jpg) is None
    assert check_encoded(np.concatenate([jpg, np.zeros(100, np.uint8)])) is None  # padding after EOI is fine
    assert "truncated" in check_encoded(jpg[: len(jpg) // 2])
    assert check_encoded(np.zeros(0, np.uint8)) == "empty file"
    assert "not an image" in check_encoded(np.frombuffer(b"<html>oops</html>", np.uint8))
    png = np.fromfile(sorted(foolbox_images[0].parent.glob("*.png"))[0], np.uint8)
    assert check_encoded(png) is None


def _prepared_with_bad(tmp: Path, tree: Path) -> tuple[Path, dict[str, str]]:
    """A prepared dir over `imagenet_tree_with_bad` whose train list also names the bad files
    (data_prep would have dropped them): truncated JPEG, broken Huffman table, missing file."""
    root = tmp / "images"
    shutil.copytree(tree, root)
    classes = sorted(p.name for p in (root / "train").iterdir())
    good = sorted((root / "train").glob("*/*.JPEG"))
    src = good[0].read_bytes()
    i = src.find(b"\xff\xc4")
    (root / "train" / classes[0] / "bad_huffman.JPEG").write_bytes(src[:i] + b"\xff\xc4\x00\x02" + src[i + 4:])
    bad = {"truncated": f"train/{classes[0]}/{classes[0]}_truncated.JPEG",
           "huffman": f"train/{classes[0]}/bad_huffman.JPEG", "missing": f"train/{classes[1]}/gone.JPEG"}
    rows = [(str(p.relative_to(root)), classes.index(p.parent.name)) for p in good if "truncated" not in p.name]
    rows += [(bad["truncated"], 0), (bad["huffman"], 0), (bad["missing"], 1)]
    rows.sort()
    d = tmp / "prepared"
    (d / "lists").mkdir(parents=True)
    (d / "lists" / "classes.txt").write_text("\n".join(classes) + "\n")
    (d / "lists" / "train.txt").write_text("".join(f"{f} {lab}\n" for f, lab in rows))
    val = sorted((root / "val").glob("*/*.JPEG"))
    (d / "lists" / "val.txt").write_text("".join(f"{p.relative_to(root)} {classes.index(p.parent.name)}\n"
                                                 for p in val))
    (d / "dataset.json").write_text(json.dumps({"name": "bad", "root": str(root), "num_classes": len(classes),
                                                "lists": {"train": len(rows), "val": len(val)}}))
    return d, bad


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_files_raise_or_are_skipped_and_counted(tmp_path: Path, imagenet_tree_with_bad: Path,
                                                        backend: str) -> None:
    d, bad = _prepared_with_bad(tmp_path, imagenet_tree_with_bad)
    split = DatasetIndex.open(d).split("train")
    n = len(split)  # 40 good (incl. a PNG named .JPEG) + 3 bad
    with pytest.warns(RuntimeWarning, match="no image"):  # the empty class folder
        loader = build_train_loader(_cfg(d, backend, batch_size=n, on_corrupt="error"), [NoPolicy()], 0, 1, "cpu")
    with pytest.raises(CorruptImageError, match="on_corrupt: skip") as err:
        _epoch(loader)
    assert any(v in str(err.value) for v in bad.values())

    with pytest.warns(RuntimeWarning):
        loader = build_train_loader(_cfg(d, backend, batch_size=5, on_corrupt="skip"), [NoPolicy()], 0, 1, "cpu")
        batches = _epoch(loader)
    assert len(batches) == n // 5
    rows = torch.cat([b.indices for b in batches])
    bad_rows = {split.files.index(f) for f in bad.values()}
    used = set(_plan.epoch_order(n, 0, 0)[: (n // 5) * 5].tolist())
    assert set(rows.tolist()) == used - bad_rows
    assert set(loader.skipped) == used & bad_rows
    for b in batches:
        assert torch.equal(b.labels, torch.from_numpy(split.labels[b.indices.numpy()]))
        assert b.images.shape[0] == len(b.indices)
    loader.close()  # `err` above keeps this frame (and a DALI pipeline) alive in a reference cycle


def test_wrong_image_root_is_a_clear_error(tmp_path: Path, imagenet_data: Path) -> None:
    d = tmp_path / "moved"
    shutil.copytree(imagenet_data, d)
    other = tmp_path / "empty_root"
    other.mkdir()
    meta = json.loads((d / "dataset.json").read_text())
    meta["root"] = str(other)
    (d / "dataset.json").write_text(json.dumps(meta))
    for backend in BACKENDS:
        with pytest.raises(FileNotFoundError, match="image root"):
            build_train_loader(_cfg(d, backend), [NoPolicy()], 0, 1, "cpu")


# ------------------------------------------------------------------------------ worker processes
def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_torch_workers_are_not_forked_from_the_loading_process(imagenet_data: Path) -> None:
    """A worker forked from a process that holds a DALI pipeline (even one that is only cyclic
    garbage: the child's collector frees it and DALI's destructor blocks) hangs for ever. The
    workers must come from a clean server process, whatever this process holds."""
    import gc
    import multiprocessing

    dali = build_val_loader(_cfg(imagenet_data, "dali", batch_size=3), 0, 1, "cpu")
    assert len(_epoch(dali)) == 3 and dali._pipe is not None
    dali.cycle = dali  # a live pipeline as cyclic garbage, as a failed test's traceback leaves it
    del dali
    loader = build_train_loader(_cfg(imagenet_data, "torch"), [NoPolicy()], 0, 1, "cpu")
    before = {p.pid for p in multiprocessing.active_children()}
    it = iter(loader)
    next(it)
    workers = [p for p in multiprocessing.active_children() if p.pid not in before]  # this loader's
    assert len(workers) >= 2 and all(_ppid(p.pid) != os.getpid() for p in workers), \
        [(p.name, _ppid(p.pid)) for p in workers]
    assert len([next(it) for _ in range(len(loader) - 1)]) == len(loader) - 1
    it.close()  # an abandoned epoch stops its workers at once
    assert not [p for p in workers if p.is_alive()]
    gc.collect()


def test_stuck_torch_workers_raise_instead_of_hanging(imagenet_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpcaug.data import LoaderTimeoutError

    monkeypatch.setenv("HPCAUG_LOADER_TIMEOUT", "0.001")  # no step is decoded that fast
    loader = build_val_loader(_cfg(imagenet_data, "torch", batch_size=2), 0, 1, "cpu")
    with pytest.raises(LoaderTimeoutError, match="HPCAUG_LOADER_TIMEOUT"):
        _epoch(loader)
    monkeypatch.setenv("HPCAUG_LOADER_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="number of seconds"):
        _epoch(loader)

"""Real Fashion-MNIST (Debian's dataset-fashion-mnist) -> the prepared-dataset layout.

    python -m data_prep.fashion_mnist --out data/fashion_mnist [--size 32] [--seed 0]
        [--train-per-class N] [--val-per-class N]
        [--search-train-per-class 400] [--search-val-per-class 100]

Writes, in the same layout as ImageNet so that the demo runs the real loaders:
`OUT/train/<class>/<n>.JPEG` (the 60k train set, n = index in the source IDX file),
`OUT/val/<class>/<n>.JPEG` (the 10k test set), RGB JPEGs upscaled to --size;
`OUT/lists/{classes,train,val,search_train,search_val}.txt`; `OUT/fashion_mnist.h5`
(the source 28x28 uint8 images and labels, rows in list order); `OUT/dataset.json`.
search_train / search_val are disjoint, class-balanced, seeded subsets of train.
"""
from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from data_prep._lists import (
    PrepError,
    already_prepared,
    atomic_dir,
    dataset_meta,
    exit_status,
    seeded_rng,
    write_classes,
    write_json,
    write_list,
)

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
SOURCE_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),  # the official test set
}
# Folder names: label order = sorted order (like ImageNet wnids), no spaces or slashes
# (DALI's file_list splits at whitespace). The human-readable titles go to dataset.json.
CLASSES = ("0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat",
           "5_sandal", "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot")
TITLES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
JPEG_QUALITY = 95
H5_NAME = "fashion_mnist.h5"
# seeded_rng purposes: one stream each, so e.g. a new search size keeps the train subset
_RNG_TRAIN, _RNG_VAL, _RNG_SEARCH = 1, 2, 3


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzipped IDX file (big-endian header: magic, dims, then uint8 data)."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    got, = struct.unpack(">I", data[:4])
    if got != magic:
        raise PrepError(f"{path} is not an IDX file of the expected kind (magic {got:#x}, want {magic:#x}); "
                        f"reinstall it: apt-get install --reinstall -y {DEBIAN_PACKAGE}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise PrepError(f"{path} is truncated ({arr.size} bytes of data for shape {dims}); "
                        f"reinstall it: apt-get install --reinstall -y {DEBIAN_PACKAGE}")
    return arr.reshape(dims)


def load_source(source: str | os.PathLike[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images uint8 [60000,28,28], labels uint8 [60000]), 'val': (... 10000 ...)}."""
    src = Path(source) if source else DEFAULT_SOURCE
    names = [n for pair in SOURCE_FILES.values() for n in pair]
    missing = [n for n in names if not (src / n).is_file()]
    if missing:
        raise PrepError(f"Fashion-MNIST source files missing in {str(src)!r}: {', '.join(missing)}. "
                        f"Install the Debian package: `apt-get install -y {DEBIAN_PACKAGE}` "
                        f"(`dpkg -L {DEBIAN_PACKAGE}` lists where it puts them), or pass --source DIR")
    out = {}
    for split, (img_name, lab_name) in SOURCE_FILES.items():
        images = _read_idx(src / img_name, 0x0803)
        labels = _read_idx(src / lab_name, 0x0801)
        if len(images) != len(labels) or labels.max() >= len(CLASSES):
            raise PrepError(f"{src / img_name} and {src / lab_name} do not match; "
                            f"reinstall them: apt-get install --reinstall -y {DEBIAN_PACKAGE}")
        out[split] = (images, labels)
    return out


def _select_per_class(labels: np.ndarray, per_class: int | None, rng: np.random.Generator) -> np.ndarray:
    """Source indices of `per_class` seeded random images of each class (all if None), sorted."""
    if per_class is None:
        return np.arange(len(labels))
    picked = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(labels == c)
        if per_class > len(idx):
            raise PrepError(f"asked for {per_class} images of class {CLASSES[c]} but the source has {len(idx)}")
        picked.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(picked))


def _write_jpegs(job: tuple[str, list[str], np.ndarray, int, int]) -> int:
    """Worker: encode one chunk of 28x28 grey images as RGB JPEGs of side `size`."""
    from PIL import Image

    root, rels, images, size, quality = job
    for rel, img in zip(rels, images, strict=True):
        im = Image.fromarray(img)  # 2-D uint8 -> mode "L"
        if size != img.shape[0]:
            im = im.resize((size, size), Image.BICUBIC)
        im.convert("RGB").save(os.path.join(root, rel), "JPEG", quality=quality)
    return len(rels)


def _count_jpegs(d: Path) -> int:
    n = 0
    if d.is_dir():
        for c in os.scandir(d):
            if c.is_dir():
                n += sum(1 for e in os.scandir(c.path) if e.name.endswith(".JPEG"))
    return n


def _outputs_present(out: Path, meta: dict[str, Any]) -> bool:
    lists = meta["lists"]
    return ((out / H5_NAME).is_file() and _count_jpegs(out / "train") == lists["train"]
            and _count_jpegs(out / "val") == lists["val"])


def prepare(out: str | os.PathLike[str], *, size: int = 32, seed: int = 0, train_per_class: int | None = None,
            val_per_class: int | None = None, search_train_per_class: int = 400, search_val_per_class: int = 100,
            source: str | os.PathLike[str] | None = None, workers: int | None = None, force: bool = False,
            quiet: bool = False) -> Path:
    """Build the prepared Fashion-MNIST dir at `out` (or keep it if already built with these args)."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    out_p = Path(out).absolute()
    if size < 8:
        raise PrepError(f"--size must be >= 8, got {size}")
    for name, v in (("--train-per-class", train_per_class), ("--val-per-class", val_per_class),
                    ("--search-train-per-class", search_train_per_class),
                    ("--search-val-per-class", search_val_per_class)):
        if v is not None and v < 1:
            raise PrepError(f"{name} must be >= 1, got {v}")
    src = Path(source).absolute() if source else DEFAULT_SOURCE
    args = {"size": size, "seed": seed, "train_per_class": train_per_class, "val_per_class": val_per_class,
            "search_train_per_class": search_train_per_class, "search_val_per_class": search_val_per_class,
            "jpeg_quality": JPEG_QUALITY, "source": str(src)}
    if not force and already_prepared(out_p, args, _outputs_present):
        say(f"already prepared: {out_p} (same arguments, complete output; nothing rewritten)")
        return out_p

    t0 = time.perf_counter()
    data = load_source(src)
    train_idx = _select_per_class(data["train"][1], train_per_class, seeded_rng(seed, _RNG_TRAIN))
    val_idx = _select_per_class(data["val"][1], val_per_class, seeded_rng(seed, _RNG_VAL))
    train_labels = data["train"][1][train_idx]
    n_train_min = int(np.bincount(train_labels, minlength=len(CLASSES)).min())
    if search_train_per_class + search_val_per_class > n_train_min:
        raise PrepError(f"--search-train-per-class + --search-val-per-class = "
                        f"{search_train_per_class + search_val_per_class} exceeds the {n_train_min} train images "
                        "per class; lower them or raise --train-per-class")
    # search_train / search_val: per class, one seeded permutation of its train images,
    # cut in two, so the splits are disjoint by construction.
    rng = seeded_rng(seed, _RNG_SEARCH)
    s_train, s_val = [], []
    for c in range(len(CLASSES)):
        rows = rng.permutation(np.flatnonzero(train_labels == c))  # rows of the train list
        s_train.append(rows[:search_train_per_class])
        s_val.append(rows[search_train_per_class:search_train_per_class + search_val_per_class])
    search_rows = {"search_train": np.sort(np.concatenate(s_train)), "search_val": np.sort(np.concatenate(s_val))}

    rel = {split: [f"{split}/{CLASSES[lab]}/{i}.JPEG" for i, lab in zip(idx, data[split][1][idx], strict=True)]
           for split, idx in (("train", train_idx), ("val", val_idx))}
    labels = {"train": train_labels, "val": data["val"][1][val_idx]}
    indices = {"train": train_idx, "val": val_idx}

    with atomic_dir(out_p) as tmp:
        for split in ("train", "val"):
            for c in CLASSES:
                (tmp / split / c).mkdir(parents=True)
        jobs = []
        chunk = 2000
        for split in ("train", "val"):
            imgs = data[split][0][indices[split]]
            for s in range(0, len(imgs), chunk):
                jobs.append((str(tmp), rel[split][s:s + chunk], imgs[s:s + chunk], size, JPEG_QUALITY))
        n_workers = workers or len(os.sched_getaffinity(0))
        if n_workers > 1:
            with ProcessPoolExecutor(n_workers) as pool:
                written = sum(pool.map(_write_jpegs, jobs))
        else:
            written = sum(map(_write_jpegs, jobs))
        assert written == len(train_idx) + len(val_idx)

        import h5py  # only here: the index reader and the tests need no h5py import for lists

        with h5py.File(tmp / H5_NAME, "w") as h5:
            for split in ("train", "val"):
                g = h5.create_group(split)
                g.create_dataset("images", data=data[split][0][indices[split]], dtype=np.uint8)
                g.create_dataset("labels", data=labels[split], dtype=np.uint8)
                g.create_dataset("indices", data=indices[split].astype(np.int64))  # row -> source IDX index
            for split, rows in search_rows.items():
                h5.create_group(split).create_dataset("rows", data=rows.astype(np.int64))  # rows of train/
            h5.attrs["classes"] = list(CLASSES)

        write_classes(tmp / "lists" / "classes.txt", CLASSES)
        counts = {}
        for split in ("train", "val"):
            counts[split] = write_list(tmp / "lists" / f"{split}.txt", rel[split], labels[split])
        for split, rows in search_rows.items():
            counts[split] = write_list(tmp / "lists" / f"{split}.txt", [rel["train"][r] for r in rows],
                                       train_labels[rows])
        meta = dataset_meta(
            name="fashion_mnist", root=".", classes=CLASSES, lists=counts, seed=seed,
            source=f"Debian package {DEBIAN_PACKAGE} (Fashion-MNIST, MIT); val = the official 10k test set",
            args=args, class_titles=list(TITLES), image_size=size, h5=H5_NAME,
            search_class_labels=list(range(len(CLASSES))))
        write_json(tmp / "dataset.json", meta)  # written last: its presence marks a complete dir
    dt = time.perf_counter() - t0
    say(f"prepared Fashion-MNIST in {out_p} in {dt:.1f} s: "
        + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; {len(CLASSES)} classes, {size}x{size} RGB JPEG")
    return out_p


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_prep.fashion_mnist", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (config data.dir)")
    ap.add_argument("--size", type=int, default=32, help="JPEG side in pixels (source images are 28x28)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-per-class", type=int, default=None,
                    help="images per class from the 60k train set (default all 6000)")
    ap.add_argument("--val-per-class", type=int, default=None,
                    help="images per class from the 10k test set (default all 1000)")
    ap.add_argument("--search-train-per-class", type=int, default=400)
    ap.add_argument("--search-val-per-class", type=int, default=100)
    ap.add_argument("--source", default=None, help=f"directory of the gzipped IDX files (default {DEFAULT_SOURCE})")
    ap.add_argument("--workers", type=int, default=None, help="JPEG encoding processes (default: all cores)")
    ap.add_argument("--force", action="store_true", help="rebuild even if --out was made with the same arguments")
    a = ap.parse_args(argv)
    return exit_status(lambda: prepare(
        a.out, size=a.size, seed=a.seed, train_per_class=a.train_per_class, val_per_class=a.val_per_class,
        search_train_per_class=a.search_train_per_class, search_val_per_class=a.search_val_per_class,
        source=a.source, workers=a.workers, force=a.force))


if __name__ == "__main__":
    sys.exit(main())

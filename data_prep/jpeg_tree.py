"""An ImageNet-like JPEG tree made from a few photos, for the loader benchmark and the GPU smoke.

`write_jpeg_tree(root, photos, entries)` writes `root/train/<wnid>/<wnid>_<i>.JPEG`: random
crops of the photos resized to ImageNet's shapes (longer side `side`, the shorter one 2/3 to 1
of it, 70% landscape), half of them mirrored, saved at quality 90, and an empty
`root/val/<wnid>/` per class, so `data_prep.imagenet.prepare(root, out, ...)` lists the tree
like ImageNet. Only `distinct` entries are encoded; the others are hard links to them (copies
where links fail), so a large tree costs little time and disk.
"""
from __future__ import annotations

import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from PIL import Image


def wnids(classes: int) -> list[str]:
    """Synthetic wnid-style class names, sorted as ImageNet's are."""
    return [f"n{1000000 + i:08d}" for i in range(classes)]


def write_jpeg_tree(root: str | os.PathLike[str], photos: Sequence[Image.Image], entries: int, *,
                    classes: int = 8, side: int = 500, distinct: int | None = None, seed: int = 0) -> int:
    """Write `entries` train files (entry i in class i % classes) under `root`; returns how many
    were encoded (the rest are links). `photos`: RGB PIL images, used in turn."""
    if not photos:
        raise ValueError("write_jpeg_tree needs at least one photo")
    if entries < 1 or classes < 1 or side < 2:
        raise ValueError(f"entries, classes must be >= 1 and side >= 2, got {entries}, {classes}, {side}")
    out = Path(root)
    names = wnids(classes)
    for w in names:
        (out / "train" / w).mkdir(parents=True, exist_ok=True)
        (out / "val" / w).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written: list[Path] = []
    distinct = entries if distinct is None else max(1, min(distinct, entries))
    for i in range(entries):
        w = names[i % classes]
        path = out / "train" / w / f"{w}_{i}.JPEG"
        if i >= distinct:
            try:
                os.link(written[i % distinct], path)
            except OSError:  # a file system without hard links
                shutil.copyfile(written[i % distinct], path)
            continue
        _crop(photos[i % len(photos)], side, rng).save(path, quality=90)
        written.append(path)
    return len(written)


def _crop(im: Image.Image, side: int, rng: random.Random) -> Image.Image:
    """A random 60-100% crop, resized to ImageNet's shapes, mirrored half the time."""
    w, h = im.size
    cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    short = int(side * rng.choice([0.666, 0.75, 0.8, 1.0]))
    size = (side, short) if rng.random() < 0.7 else (short, side)
    crop = im.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.BICUBIC)
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop

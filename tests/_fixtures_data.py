"""Data fixtures: real images on disk (foolbox's ImageNet JPEGs, Fashion-MNIST via data_prep).

- `foolbox_images`: the 20 real ImageNet JPEGs shipped with foolbox.
- `demo_data`: a small prepared Fashion-MNIST dir (data_prep.fashion_mnist), 32x32 JPEGs.
- `imagenet_tree`: a small ImageNet-style tree (train/<wnid>/, val/<wnid>/) of real photos.
- `imagenet_tree_with_bad`: the same plus a truncated JPEG, a PNG renamed .JPEG and an
  empty class folder (what real ImageNet copies contain).
- `imagenet_data`: `imagenet_tree` prepared by data_prep.imagenet (lists, dataset.json).
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

# data_prep is a top-level folder run as `python -m data_prep.x` from the repo root; under a
# bare `pytest` (no cwd on sys.path) make it importable the same way.
_REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("data_prep") is None:
    sys.path.insert(0, str(_REPO))

# Sizes of the demo_data fixture (per class): train/val from the train/test sets, and the
# search subsets taken from train.
DEMO_TRAIN_PER_CLASS, DEMO_VAL_PER_CLASS = 100, 30
DEMO_SEARCH_TRAIN_PER_CLASS, DEMO_SEARCH_VAL_PER_CLASS = 60, 20
DEMO_SIZE = 32

# The first four ImageNet wnids (labels 0..3 in the standard sorted order); the photos
# put under them are foolbox's, whose true classes differ: fine for layout and decode tests.
TREE_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")
EMPTY_WNID = "n01443600"  # sorts between the 2nd and 3rd: the empty class gets label 2
TREE_TRAIN_PER_CLASS = 10  # 5 photos, each as the original file and a mirrored re-encode
TREE_VAL_PER_CLASS = 2


@pytest.fixture(scope="session")
def foolbox_images() -> list[Path]:
    """The 20 real ImageNet JPEGs (512x512) shipped in foolbox/data (installed --no-deps)."""
    spec = importlib.util.find_spec("foolbox")
    assert spec is not None and spec.submodule_search_locations, "foolbox is missing: run scripts/setup.sh"
    files = sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("imagenet_*.jpg"))
    assert len(files) == 20, f"expected 20 foolbox ImageNet JPEGs, found {len(files)}"
    return files


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared Fashion-MNIST dir: 100 train + 30 val per class, search 60 / 20 per class, 32x32.

    Made by data_prep.fashion_mnist from the real Debian package, so it has the layout of
    docs/architecture.md section 1 (dataset.json, lists/, train/, val/, fashion_mnist.h5).
    """
    from data_prep.fashion_mnist import prepare

    out = tmp_path_factory.mktemp("demo_data") / "fashion_mnist"
    return prepare(out, size=DEMO_SIZE, seed=0, train_per_class=DEMO_TRAIN_PER_CLASS,
                   val_per_class=DEMO_VAL_PER_CLASS, search_train_per_class=DEMO_SEARCH_TRAIN_PER_CLASS,
                   search_val_per_class=DEMO_SEARCH_VAL_PER_CLASS, workers=1, quiet=True)


def build_imagenet_tree(root: Path, photos: list[Path]) -> Path:
    """Write an ImageNet-style tree of real photos under `root`: 4 classes, 10 train + 2 val each.

    Train: per class 5 photos as the original bytes and a mirrored re-encode (different
    files, so every listed path is a distinct image). Val: 2 photos per class shrunk to
    a 320 px short side, named like ImageNet's val files.
    """
    from PIL import Image, ImageOps

    assert len(photos) >= 5 * len(TREE_WNIDS)
    val_no = 0
    for c, wnid in enumerate(TREE_WNIDS):
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (root / "val" / wnid).mkdir(parents=True, exist_ok=True)
        mine = photos[5 * c: 5 * c + 5]
        for k, p in enumerate(mine):
            shutil.copyfile(p, root / "train" / wnid / f"{wnid}_{2 * k}.JPEG")
            with Image.open(p) as im:
                ImageOps.mirror(im.convert("RGB")).save(root / "train" / wnid / f"{wnid}_{2 * k + 1}.JPEG", quality=90)
        for p in mine[:TREE_VAL_PER_CLASS]:
            val_no += 1
            with Image.open(p) as im:
                im.convert("RGB").resize((320, 320)).save(root / "val" / wnid / f"ILSVRC2012_val_{val_no:08d}.JPEG",
                                                          quality=90)
    return root


def add_bad_files(root: Path, photos: list[Path], png: Path) -> dict[str, list[str]]:
    """Add what breaks naive loaders; returns the bad paths relative to root and the empty class."""
    truncated = root / "train" / TREE_WNIDS[0] / f"{TREE_WNIDS[0]}_truncated.JPEG"
    data = photos[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # a copy cut off mid-scan (interrupted rsync)
    not_jpeg = root / "train" / TREE_WNIDS[1] / f"{TREE_WNIDS[1]}_png.JPEG"
    shutil.copyfile(png, not_jpeg)  # a PNG named .JPEG, like ImageNet's n02105855_2933.JPEG
    (root / "train" / EMPTY_WNID).mkdir(parents=True, exist_ok=True)
    (root / "val" / EMPTY_WNID).mkdir(parents=True, exist_ok=True)
    return {"corrupt": [str(truncated.relative_to(root)), str(not_jpeg.relative_to(root))], "empty": [EMPTY_WNID]}


def _foolbox_png() -> Path:
    spec = importlib.util.find_spec("foolbox")
    assert spec is not None and spec.submodule_search_locations, "foolbox is missing: run scripts/setup.sh"
    return sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("cifar10_*.png"))[0]


@pytest.fixture(scope="session")
def imagenet_tree(tmp_path_factory: pytest.TempPathFactory, foolbox_images: list[Path]) -> Path:
    """A small ImageNet-style tree (4 classes; 10 train, 2 val JPEGs each), no bad files."""
    return build_imagenet_tree(tmp_path_factory.mktemp("imagenet_tree") / "imagenet", foolbox_images)


@pytest.fixture(scope="session")
def imagenet_tree_with_bad(tmp_path_factory: pytest.TempPathFactory, foolbox_images: list[Path]) -> Path:
    """`imagenet_tree` plus a truncated JPEG, a PNG renamed .JPEG and an empty class folder.

    The empty class (EMPTY_WNID) exists in train/ and val/, so it has label 2 of 5.
    """
    root = build_imagenet_tree(tmp_path_factory.mktemp("imagenet_bad") / "imagenet", foolbox_images)
    add_bad_files(root, foolbox_images, _foolbox_png())
    return root


@pytest.fixture(scope="session")
def imagenet_data(tmp_path_factory: pytest.TempPathFactory, imagenet_tree: Path) -> Path:
    """`imagenet_tree` prepared by data_prep.imagenet: all 4 classes, search 6 train + 2 val per class."""
    from data_prep.imagenet import prepare

    out = tmp_path_factory.mktemp("imagenet_data") / "imagenet_lists"
    return prepare(imagenet_tree, out, search_classes=4, search_train=24, search_val=8, seed=0, workers=1,
                   quiet=True)

"""data_prep (Fashion-MNIST and ImageNet lists) and hpcaug.data.index, on real images."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _fixtures_data import (
    DEMO_SEARCH_TRAIN_PER_CLASS,
    DEMO_SEARCH_VAL_PER_CLASS,
    DEMO_SIZE,
    DEMO_TRAIN_PER_CLASS,
    DEMO_VAL_PER_CLASS,
    EMPTY_WNID,
    TREE_TRAIN_PER_CLASS,
    TREE_VAL_PER_CLASS,
    TREE_WNIDS,
    build_imagenet_tree,
)
from PIL import Image

from data_prep import fashion_mnist as fm
from data_prep import imagenet as inet
from data_prep._lists import PrepError, atomic_dir, balanced_counts, split_two
from hpcaug.data.index import DatasetIndex, DatasetIndexError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return fm.load_source()


def _read_list(path: Path) -> list[tuple[str, int]]:
    out = []
    for line in path.read_text().splitlines():
        f, lab = line.rsplit(" ", 1)
        out.append((f, int(lab)))
    return out


def _tree_state(d: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file and dir under d."""
    return {str(p.relative_to(d)): (p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in [d, *d.rglob("*")]}


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# ---------------------------------------------------------------- Fashion-MNIST

def test_fm_full_counts_and_h5_equal_source(tmp_path: Path, source) -> None:
    """Default arguments: all 60k / 10k images; the HDF5 copy is the source, byte for byte."""
    import h5py

    out = fm.prepare(tmp_path / "fm", workers=2, quiet=True)
    idx = DatasetIndex.open(out)
    assert {s: len(idx[s]) for s in idx.splits} == {"train": 60000, "val": 10000, "search_train": 4000,
                                                     "search_val": 1000}
    for split, per in (("train", 6000), ("val", 1000), ("search_train", 400), ("search_val", 100)):
        assert np.bincount(idx[split].labels, minlength=10).tolist() == [per] * 10, split
    with h5py.File(out / "fashion_mnist.h5", "r") as h5:
        for split in ("train", "val"):
            images, labels = source[split]
            assert h5[f"{split}/images"].dtype == np.uint8 and h5[f"{split}/labels"].dtype == np.uint8
            np.testing.assert_array_equal(h5[f"{split}/images"][:], images)
            np.testing.assert_array_equal(h5[f"{split}/labels"][:], labels)
            np.testing.assert_array_equal(idx[split].labels, labels)
    assert all(os.path.isfile(p) for p in idx["train"].abs_files()[::97] + idx["val"].abs_files()[::97])
    shutil.rmtree(out)  # 70k small files: do not leave them to pytest's tmp retention


def test_fm_lists_match_source_labels(demo_data: Path, source) -> None:
    idx = DatasetIndex.open(demo_data)
    assert idx.root == demo_data and idx.classes == list(fm.CLASSES)
    sizes = {"train": DEMO_TRAIN_PER_CLASS, "val": DEMO_VAL_PER_CLASS,
             "search_train": DEMO_SEARCH_TRAIN_PER_CLASS, "search_val": DEMO_SEARCH_VAL_PER_CLASS}
    for split, per in sizes.items():
        s = idx[split]
        assert np.bincount(s.labels, minlength=10).tolist() == [per] * 10, split
        src_split = "val" if split == "val" else "train"
        for f, lab in zip(s.files, s.labels, strict=True):
            top, cls, name = f.split("/")
            n = int(name.removesuffix(".JPEG"))
            assert top == src_split and cls == fm.CLASSES[lab]
            assert source[src_split][1][n] == lab, f"{f}: label {lab}, source IDX says {source[src_split][1][n]}"
        assert len(set(s.files)) == len(s.files), f"duplicates in {split}"
        assert all(os.path.isfile(p) for p in s.abs_files())
    train, val = set(idx["train"].files), set(idx["val"].files)
    s_tr, s_va = set(idx["search_train"].files), set(idx["search_val"].files)
    assert not train & val
    assert not s_tr & s_va
    assert s_tr <= train and s_va <= train


def test_fm_images_decode_to_size_and_match_source(demo_data: Path, source) -> None:
    idx = DatasetIndex.open(demo_data)
    for split in ("train", "val"):
        s = idx[split]
        for f in s.abs_files()[::7]:
            with Image.open(f) as im:
                assert im.format == "JPEG" and im.mode == "RGB" and im.size == (DEMO_SIZE, DEMO_SIZE)
                got = np.asarray(im.convert("L"), dtype=np.float32)
            n = int(Path(f).stem)
            want = np.asarray(Image.fromarray(source[split][0][n]).resize((DEMO_SIZE, DEMO_SIZE), Image.BICUBIC),
                              dtype=np.float32)
            # JPEG q95 of the upscaled source: a few grey levels off on average; another
            # image of the same class would be tens of levels off.
            assert np.abs(got - want).mean() < 6, f
    with __import__("h5py").File(demo_data / "fashion_mnist.h5", "r") as h5:
        rows = h5["train/indices"][:]
        np.testing.assert_array_equal(h5["train/images"][:], source["train"][0][rows])
        np.testing.assert_array_equal(h5["train/labels"][:], source["train"][1][rows])
        assert [int(Path(f).stem) for f in idx["train"].files] == rows.tolist()
        np.testing.assert_array_equal(np.asarray(idx["train"].files)[h5["search_val/rows"][:]],
                                      np.asarray(idx["search_val"].files))


SMALL = dict(size=32, train_per_class=60, val_per_class=10, search_train_per_class=20,
             search_val_per_class=10, workers=1, quiet=True)


def test_fm_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = fm.prepare(tmp_path / "a", seed=3, **SMALL)
    b = fm.prepare(tmp_path / "b", seed=3, **SMALL)
    c = fm.prepare(tmp_path / "c", seed=4, **SMALL)
    for split in ("train", "val", "search_train", "search_val"):
        assert (a / "lists" / f"{split}.txt").read_bytes() == (b / "lists" / f"{split}.txt").read_bytes()
    assert (a / "lists" / "search_val.txt").read_bytes() != (c / "lists" / "search_val.txt").read_bytes()
    for f in ("train/0_tshirt_top", "val/9_ankle_boot"):
        for p in sorted((a / f).iterdir()):
            assert p.read_bytes() == (b / f / p.name).read_bytes()


def test_fm_idempotent_then_rebuild_on_new_args(tmp_path: Path, capsys) -> None:
    out = fm.prepare(tmp_path / "fm", seed=0, **{**SMALL, "quiet": False})
    before = _tree_state(out)
    time.sleep(0.01)
    fm.prepare(out, seed=0, **{**SMALL, "quiet": False})
    assert "already prepared" in capsys.readouterr().out
    assert _tree_state(out) == before, "a second run with the same arguments rewrote files"
    # A missing image makes the output incomplete: rebuild.
    victim = next((out / "train" / "3_dress").iterdir())
    victim.unlink()
    fm.prepare(out, seed=0, **SMALL)
    assert victim.is_file()
    # Different arguments: rebuilt in place, old content gone.
    fm.prepare(out, seed=0, **{**SMALL, "size": 28})
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["args"]["size"] == 28
    with Image.open(out / DatasetIndex.open(out)["val"].files[0]) as im:
        assert im.size == (28, 28)
    assert _siblings(out) == [], "temp or old dirs left beside the output"


def test_fm_missing_source_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(PrepError, match="apt-get install -y dataset-fashion-mnist"):
        fm.prepare(tmp_path / "fm", source=tmp_path / "nowhere", quiet=True)
    assert not (tmp_path / "fm").exists() and _siblings(tmp_path / "fm") == []
    r = subprocess.run([sys.executable, "-m", "data_prep.fashion_mnist", "--out", str(tmp_path / "x"),
                        "--source", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "dataset-fashion-mnist" in r.stderr and not (tmp_path / "x").exists()


def test_fm_refuses_sizes_and_foreign_dirs(tmp_path: Path) -> None:
    with pytest.raises(PrepError, match="exceeds"):
        fm.prepare(tmp_path / "fm", **{**SMALL, "search_train_per_class": 55})
    assert not (tmp_path / "fm").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(PrepError, match="did not make"):
        fm.prepare(foreign, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1


def test_fm_cli_prints_counts(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "data_prep.fashion_mnist", "--out", str(tmp_path / "fm"), "--train-per-class", "30",
           "--val-per-class", "5", "--search-train-per-class", "10", "--search-val-per-class", "5", "--size", "40"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "train 300, val 50, search_train 100, search_val 50" in r.stdout
    r2 = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r2.returncode == 0 and "already prepared" in r2.stdout


def test_fm_killed_midway_leaves_no_half_dataset(tmp_path: Path) -> None:
    """SIGKILL during the full build: no output dir; the next run cleans the temp and succeeds."""
    out = tmp_path / "fm"
    p = subprocess.Popen([sys.executable, "-m", "data_prep.fashion_mnist", "--out", str(out), "--workers", "2"],
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        tmp = tmp_path / f".fm.tmp-{socket.gethostname()}-{p.pid}"
        while time.monotonic() < deadline and p.poll() is None:
            if (tmp / "train" / "0_tshirt_top").is_dir() and any((tmp / "train" / "0_tshirt_top").iterdir()):
                break
            time.sleep(0.02)
        assert p.poll() is None, "the full build finished before it could be killed"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the whole group: main process and its pool workers
        except ProcessLookupError:
            pass
        p.wait(timeout=30)
    assert not out.exists(), "a killed build left a dataset at --out"
    assert tmp.exists()  # the half build is only in the hidden temp dir ...
    fm.prepare(out, **SMALL)
    assert not tmp.exists() and DatasetIndex.open(out)["train"].labels.size == 600  # ... which the next run removes


def test_atomic_dir_keeps_old_output_on_error(tmp_path: Path) -> None:
    out = fm.prepare(tmp_path / "fm", **SMALL)
    before = _tree_state(out)
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("crash while building")
    assert _tree_state(out) == before and _siblings(out) == []


# ---------------------------------------------------------------- balanced splits

def test_balanced_counts_water_fills() -> None:
    rng = np.random.default_rng(0)
    c = balanced_counts(100, [50, 50, 50, 5], rng)
    assert c.sum() == 100 and c[3] == 5 and c[:3].max() - c[:3].min() <= 1
    assert balanced_counts(10, [3, 3, 3, 3], rng).tolist().count(3) == 2
    with pytest.raises(PrepError, match="only 6"):
        balanced_counts(7, [3, 3], rng)


def test_paper_split_sizes_fit_imagenet_class_sizes() -> None:
    """AWS app. E: 128,000 + 50,000 from 200 classes; ImageNet classes hold 732..1300 images."""
    rng = np.random.default_rng(0)
    # Most ImageNet classes have 1300 train images, a few fewer (the smallest 732).
    caps = np.full(200, 1300)
    caps[:3] = 732
    tr, va = split_two(128_000, 50_000, caps, rng)
    assert tr.sum() == 128_000 and va.sum() == 50_000 and np.all(tr + va <= caps)
    assert va.tolist() == [250] * 200  # validation exactly balanced
    assert tr[:3].tolist() == [482] * 3  # the smallest classes give all they have ...
    assert set(tr[3:].tolist()) <= {642, 643}  # ... the others share the rest evenly
    # Any class sizes: classes not used up all get the same total (within 1), at least as
    # many as any used-up class.
    caps = rng.integers(732, 1301, size=200)
    tr, va = split_two(128_000, 50_000, caps, rng)
    tot = tr + va
    assert tr.sum() == 128_000 and va.sum() == 50_000 and np.all(tot <= caps)
    open_ = tot < caps
    assert tot[open_].max() - tot[open_].min() <= 1 and tot[~open_].max() <= tot[open_].max()
    assert va.max() - va.min() <= 1


# ---------------------------------------------------------------- ImageNet lists

def test_imagenet_bad_files_reported_and_excluded(tmp_path: Path, imagenet_tree_with_bad: Path) -> None:
    root = imagenet_tree_with_bad
    root_before = _tree_state(root)
    out = inet.prepare(root, tmp_path / "lists", search_classes=3, search_train=18, search_val=6, workers=2,
                       quiet=True)
    assert _tree_state(root) == root_before, "data_prep wrote into the ImageNet dir"
    report = json.loads((out / "corrupt_report.json").read_text())
    bad = {c["path"]: c["problem"] for c in report["corrupt"]}
    assert set(bad) == {f"train/{TREE_WNIDS[0]}/{TREE_WNIDS[0]}_truncated.JPEG",
                        f"train/{TREE_WNIDS[1]}/{TREE_WNIDS[1]}_png.JPEG"}
    assert "truncated" in bad[f"train/{TREE_WNIDS[0]}/{TREE_WNIDS[0]}_truncated.JPEG"]
    assert "PNG" in bad[f"train/{TREE_WNIDS[1]}/{TREE_WNIDS[1]}_png.JPEG"]
    assert report["empty_classes"] == {"train": [EMPTY_WNID], "val": [EMPTY_WNID]}

    idx = DatasetIndex.open(out)
    assert idx.root == root and idx.classes == sorted([*TREE_WNIDS, EMPTY_WNID])
    assert idx.classes.index(EMPTY_WNID) == 2  # the empty class keeps its place in the label order
    train, val = idx["train"], idx["val"]
    assert len(train) == TREE_TRAIN_PER_CLASS * 4 and len(val) == TREE_VAL_PER_CLASS * 4
    assert not set(bad) & set(train.files)
    for s in (train, val, idx["search_train"], idx["search_val"]):
        for f, lab in zip(s.files, s.labels, strict=True):
            assert f.split("/")[1] == idx.classes[lab]
        assert all(os.path.isfile(p) for p in s.abs_files())
    s_tr, s_va = idx["search_train"], idx["search_val"]
    assert not set(s_tr.files) & set(s_va.files)
    assert set(s_tr.files) | set(s_va.files) <= set(train.files)
    chosen = json.loads((out / "dataset.json").read_text())["search_class_labels"]
    assert len(chosen) == 3 and 2 not in chosen  # never the empty class
    assert set(s_tr.labels.tolist()) == set(s_va.labels.tolist()) == set(chosen)
    assert np.bincount(s_tr.labels)[chosen].tolist() == [6, 6, 6]
    assert np.bincount(s_va.labels)[chosen].tolist() == [2, 2, 2]


def test_imagenet_scan_modes(tmp_path: Path, imagenet_tree_with_bad: Path) -> None:
    kw = dict(search_classes=2, search_train=8, search_val=4, workers=1, quiet=True)
    full = inet.prepare(imagenet_tree_with_bad, tmp_path / "full", scan_mode="full", **kw)
    none = inet.prepare(imagenet_tree_with_bad, tmp_path / "none", scan_mode="none", **kw)
    assert len(json.loads((full / "corrupt_report.json").read_text())["corrupt"]) == 2
    assert len(DatasetIndex.open(full)["train"]) == 40
    assert len(DatasetIndex.open(none)["train"]) == 42  # no scan: bad files stay listed
    # The class subset depends on the folders only, not on the scan.
    assert (json.loads((full / "dataset.json").read_text())["search_class_labels"]
            == json.loads((none / "dataset.json").read_text())["search_class_labels"])


def test_imagenet_clean_tree_deterministic_and_idempotent(tmp_path: Path, imagenet_tree: Path, capsys) -> None:
    kw = dict(search_classes=4, search_train=24, search_val=8, workers=1)
    a = inet.prepare(imagenet_tree, tmp_path / "a", seed=0, **kw)
    b = inet.prepare(imagenet_tree, tmp_path / "b", seed=0, **kw)
    c = inet.prepare(imagenet_tree, tmp_path / "c", seed=1, **kw)
    assert json.loads((a / "corrupt_report.json").read_text())["corrupt"] == []
    for split in ("train", "val", "search_train", "search_val"):
        assert (a / "lists" / f"{split}.txt").read_bytes() == (b / "lists" / f"{split}.txt").read_bytes()
    assert (a / "lists" / "search_val.txt").read_bytes() != (c / "lists" / "search_val.txt").read_bytes()
    before = _tree_state(a)
    capsys.readouterr()
    inet.prepare(imagenet_tree, a, seed=0, **kw)
    assert "already prepared" in capsys.readouterr().out and _tree_state(a) == before


def _refusal_trees(base: Path, photos: list[Path]) -> dict[str, tuple[Path, dict, str]]:
    """name -> (root, prepare kwargs, expected message fragment)."""
    good = build_imagenet_tree(base / "good", photos)
    no_val = build_imagenet_tree(base / "no_val", photos)
    shutil.rmtree(no_val / "val")
    no_classes = base / "no_classes"
    (no_classes / "train").mkdir(parents=True)
    (no_classes / "val").mkdir()
    differ = build_imagenet_tree(base / "differ", photos)
    (differ / "train" / "n09999999").mkdir()
    small = dict(search_classes=2, search_train=4, search_val=2)
    return {
        "missing root": (base / "absent", small, "not a directory"),
        "missing val": (no_val, small, "val' is missing"),
        "no classes": (no_classes, small, "no class folders"),
        "class sets differ": (differ, small, "n09999999"),
        "too many classes": (good, {**small, "search_classes": 5}, "--search-classes 5"),
        "too many images": (good, {**small, "search_train": 20, "search_val": 1}, "--search-train"),
    }


def test_imagenet_refusals_leave_nothing(tmp_path: Path, foolbox_images: list[Path]) -> None:
    for name, (root, kw, msg) in _refusal_trees(tmp_path / "trees", foolbox_images).items():
        out = tmp_path / "out" / name.replace(" ", "_")
        with pytest.raises(PrepError, match=msg):
            inet.prepare(root, out, workers=1, quiet=True, **kw)
        assert not out.exists() and (not out.parent.exists() or _siblings(out) == []), name
    good = tmp_path / "trees" / "good"
    with pytest.raises(PrepError, match="never writes into"):
        inet.prepare(good, good / "lists", search_classes=2, search_train=4, search_val=2, quiet=True)
    assert not (good / "lists").exists()
    with pytest.raises(PrepError, match="does not contain ImageNet"):
        inet.prepare(good, good.parent, search_classes=2, search_train=4, search_val=2, quiet=True)
    assert (good / "train").is_dir()
    r = subprocess.run([sys.executable, "-m", "data_prep.imagenet", "--root", str(tmp_path / "absent"), "--out",
                        str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "train/<wnid>" in r.stderr and not (tmp_path / "o").exists()


# ---------------------------------------------------------------- DatasetIndex

def test_index_reads_imagenet_data(imagenet_data: Path, imagenet_tree: Path) -> None:
    idx = DatasetIndex.open(imagenet_data)
    assert idx.num_classes == 4 and idx.root == imagenet_tree and idx.h5_path() is None
    assert idx.list_path("search_train") == imagenet_data / "lists" / "search_train.txt"
    assert idx["val"].labels.dtype == np.int64 and sorted(set(idx["val"].labels.tolist())) == [0, 1, 2, 3]


def test_index_errors(tmp_path: Path, demo_data: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data_prep.fashion_mnist"):
        DatasetIndex.open(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetIndexError, match="no dataset.json"):
        DatasetIndex.open(tmp_path / "empty")
    with pytest.raises(DatasetIndexError, match="has no split 'search'.*train, val, search_train, search_val"):
        DatasetIndex.open(demo_data).split("search")

    def broken(name: str, edit) -> Path:
        d = tmp_path / name
        shutil.copytree(demo_data / "lists", d / "lists")
        shutil.copy(demo_data / "dataset.json", d / "dataset.json")
        meta = json.loads((d / "dataset.json").read_text())
        meta["root"] = str(demo_data)
        (d / "dataset.json").write_text(json.dumps(meta))
        edit(d)
        return d

    d = broken("badjson", lambda d: (d / "dataset.json").write_text("{not json"))
    with pytest.raises(DatasetIndexError, match="not valid JSON"):
        DatasetIndex.open(d)
    d = broken("noroot", lambda d: (d / "dataset.json").write_text(json.dumps({"lists": {}, "num_classes": 10})))
    with pytest.raises(DatasetIndexError, match="lacks root"):
        DatasetIndex.open(d)
    d = broken("short", lambda d: (d / "lists" / "val.txt").write_text(
        "".join((demo_data / "lists" / "val.txt").read_text().splitlines(keepends=True)[:-1])))
    with pytest.raises(DatasetIndexError, match="entries but dataset.json says 300"):
        DatasetIndex.open(d).split("val")
    d = broken("label", lambda d: (d / "lists" / "val.txt").write_text("val/x/1.JPEG 10\n" * 300))
    with pytest.raises(DatasetIndexError, match="labels outside 0..9"):
        DatasetIndex.open(d).split("val")
    d = broken("classes", lambda d: (d / "lists" / "classes.txt").write_text("a\nb\n"))
    with pytest.raises(DatasetIndexError, match="2 classes but dataset.json says num_classes=10"):
        DatasetIndex.open(d)
    d = broken("nolist", lambda d: (d / "lists" / "train.txt").unlink())
    with pytest.raises(DatasetIndexError, match="train.txt' is missing"):
        DatasetIndex.open(d).split("train")


def test_check_image_cases(tmp_path: Path, foolbox_images: list[Path]) -> None:
    """What the header scan accepts and rejects, on real photos cut or changed in ways copies break."""
    data = foolbox_images[3].read_bytes()
    cases = {
        "ok.JPEG": data,
        "trailing_zeros.JPEG": data + b"\0" * 100,  # padding after the end marker is harmless
        "header_only.JPEG": data[:600],
        "no_end_marker.JPEG": data[:-2],
        "empty.JPEG": b"",
        "text.JPEG": b"<html>404 Not Found</html>",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
    with Image.open(foolbox_images[3]) as im:
        im.convert("CMYK").save(tmp_path / "cmyk.JPEG")
    got = {name: inet.check_image(str(tmp_path / name), "header") for name in [*cases, "cmyk.JPEG"]}
    assert got["ok.JPEG"] == (None, None) and got["trailing_zeros.JPEG"] == (None, None)
    assert got["cmyk.JPEG"] == (None, "mode CMYK")
    assert got["header_only.JPEG"][0] is not None and got["no_end_marker.JPEG"][0].startswith("truncated")
    assert got["empty.JPEG"][0] == "empty file" and got["text.JPEG"][0] == "not a JPEG (not an image)"
    # A full decode also catches a cut-off file.
    assert inet.check_image(str(tmp_path / "no_end_marker.JPEG"), "full")[0] is not None
    assert inet.check_image(str(tmp_path / "ok.JPEG"), "full") == (None, None)


def test_jpeg_tree_is_imagenet_shaped_and_lists_like_imagenet(tmp_path: Path, foolbox_images: list[Path]) -> None:
    """data_prep.jpeg_tree (the loader benchmark's and the GPU smoke's tree): ImageNet-shaped
    JPEGs from the photos, `distinct` of them encoded and the rest linked, listed in full by
    data_prep.imagenet."""
    from data_prep.jpeg_tree import wnids, write_jpeg_tree

    photos = []
    for f in foolbox_images[:3]:
        with Image.open(f) as im:
            photos.append(im.convert("RGB"))
    root = tmp_path / "tree"
    assert write_jpeg_tree(root, photos, 20, classes=4, side=200, distinct=6) == 6
    files = sorted((root / "train").glob("*/*.JPEG"))
    assert len(files) == 20 and {f.parent.name for f in files} == set(wnids(4))
    assert len({f.stat().st_ino for f in files}) == 6  # the rest are hard links
    for f in files:
        with Image.open(f) as im:
            assert im.format == "JPEG" and max(im.size) == 200 and 133 <= min(im.size) <= 200, (f, im.size)
    assert sorted(p.name for p in (root / "val").iterdir()) == wnids(4)
    again = tmp_path / "again"
    write_jpeg_tree(again, photos, 20, classes=4, side=200, distinct=6)
    assert all(f.read_bytes() == (again / f.relative_to(root)).read_bytes() for f in files)  # seeded
    index = DatasetIndex.open(inet.prepare(root, tmp_path / "prepared", search_classes=4, search_train=4,
                                           search_val=4, scan_mode="none", quiet=True))
    assert len(index.split("train").files) == 20 and index.num_classes == 4

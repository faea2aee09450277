"""ImageNet (standard class-folder layout) -> file lists for the loaders; never writes into ImageNet.

    python -m data_prep.imagenet --root IMAGENET --out DIR [--search-classes 200]
        [--search-train 128000] [--search-val 50000] [--seed 0]
        [--scan header|full|none] [--workers N]

IMAGENET holds `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` (val sorted into class folders).
DIR gets `lists/{classes,train,val,search_train,search_val}.txt` (paths relative to
IMAGENET), `dataset.json` (root = the absolute IMAGENET path) and `corrupt_report.json`.

Labels are the index of the wnid in the sorted class list (the standard order), also for
the search lists. The search subset follows AWS appendix E: a seeded random class subset,
`--search-train` train images and a disjoint `--search-val` validation split, both taken
from ImageNet's train set, class-balanced where the class sizes allow.

Before listing, every file is checked (`--scan header`: PIL open + verify and the JPEG end
marker after the scan data; `full`: a full decode too; `none`: no check). Unreadable,
truncated and non-JPEG files are reported in corrupt_report.json and left out of the lists.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from data_prep._lists import (
    PrepError,
    Progress,
    already_prepared,
    atomic_dir,
    dataset_meta,
    exit_status,
    seeded_rng,
    split_two,
    write_classes,
    write_json,
    write_list,
)

SCAN_MODES = ("header", "full", "none")
IMAGE_SUFFIXES = (".jpeg", ".jpg")  # ImageNet uses .JPEG; matched case-insensitively
# Paper values (AWS appendix E, "Reduced ImageNet"): 128,000 train and 50,000 validation
# images split from train. The class count was lost from the text: 200 random classes
# (our choice) need 640 + 250 images per class, which every ImageNet class has (>= 732).
DEFAULT_SEARCH_CLASSES = 200
DEFAULT_SEARCH_TRAIN = 128_000
DEFAULT_SEARCH_VAL = 50_000
_RNG_CLASSES, _RNG_COUNTS, _RNG_FILES = 1, 2, 3
_TAIL = 4096  # bytes at the end of a file searched for the JPEG end marker


# ---------------------------------------------------------------- discovery

def _class_dirs(d: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))


def _images_in(d: Path) -> tuple[list[str], list[str]]:
    """(image file names, other file names) in one class folder, sorted."""
    images, other = [], []
    for e in os.scandir(d):
        if e.name.startswith(".") or not e.is_file():
            continue
        (images if e.name.lower().endswith(IMAGE_SUFFIXES) else other).append(e.name)
    return sorted(images), sorted(other)


def discover(root: Path) -> tuple[list[str], dict[str, list[list[str]]], list[str]]:
    """Check the layout; return (classes, {split: per-class lists of root-relative paths}, ignored files).

    Raises PrepError (nothing is written) for a missing root, a missing train/ or val/, no
    classes, or train and val class sets that differ.
    """
    if not root.is_dir():
        raise PrepError(f"--root {str(root)!r} is not a directory; point it at the ImageNet dir "
                        "that holds train/<wnid>/*.JPEG and val/<wnid>/*.JPEG")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            hint = (" (val/ must be sorted into class folders val/<wnid>/; ImageNet's flat val folder "
                    "needs the usual valprep.sh step first)" if split == "val" else "")
            raise PrepError(f"{str(root / split)!r} is missing: --root must hold train/ and val/{hint}")
    classes = _class_dirs(root / "train")
    if not classes:
        raise PrepError(f"{str(root / 'train')!r} has no class folders; expected train/<wnid>/*.JPEG")
    val_classes = _class_dirs(root / "val")
    if val_classes != classes:
        only_t = sorted(set(classes) - set(val_classes))
        only_v = sorted(set(val_classes) - set(classes))
        raise PrepError(f"train/ and val/ have different class folders: only in train: {only_t[:10]}"
                        f"{' ...' if len(only_t) > 10 else ''} ({len(only_t)}), only in val: {only_v[:10]}"
                        f"{' ...' if len(only_v) > 10 else ''} ({len(only_v)}); labels must mean the same class "
                        "in both: fix the folders (an empty folder is fine) and run again")
    files: dict[str, list[list[str]]] = {}
    ignored: list[str] = []
    for split in ("train", "val"):
        files[split] = []
        for c in classes:
            imgs, other = _images_in(root / split / c)
            files[split].append([f"{split}/{c}/{n}" for n in imgs])
            ignored.extend(f"{split}/{c}/{n}" for n in other)
    return classes, files, ignored


# ---------------------------------------------------------------- scanning

def check_image(path: str, mode: str = "header") -> tuple[str | None, str | None]:
    """(problem, note) for one file: problem is None when loaders can read it as a JPEG.

    header: the JPEG start bytes, PIL open + verify (headers), and the end marker FFD9
    after the start of the scan data (a cut-off copy lacks it). full: also decode it all.
    note: something legal but unusual (a CMYK JPEG) worth a line in the report.
    """
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return "empty file", None
            if fh.read(2) != b"\xff\xd8":
                fh.seek(0)
                try:
                    with Image.open(fh) as im:
                        kind = im.format
                except Exception:
                    kind = "not an image"
                return f"not a JPEG ({kind})", None
            fh.seek(0)
            with Image.open(fh) as im:
                if im.format != "JPEG":
                    return f"not a JPEG ({im.format})", None
                # Greyscale is common and every decoder handles it; CMYK and the like are rare
                # and some GPU decoders fall back to the CPU for them: worth a note.
                note = None if im.mode in ("RGB", "L") else f"mode {im.mode}"
                scan_start = int(im.tile[0][2]) if im.tile else 0
                if mode == "full":
                    im.load()  # raises on truncated or undecodable data
                else:
                    im.verify()
            fh.seek(max(scan_start, size - _TAIL))
            if b"\xff\xd9" not in fh.read():
                # In entropy-coded data 0xFF is always stuffed, so FFD9 there means the real end.
                return "truncated (no JPEG end marker)", note
    except Exception as e:  # corrupt files raise OSError, SyntaxError, struct.error, ...
        return f"unreadable ({type(e).__name__}: {e})", None
    return None, note


def _check_chunk(job: tuple[str, list[str], str]) -> list[tuple[str | None, str | None]]:
    root, rels, mode = job
    return [check_image(os.path.join(root, r), mode) for r in rels]


def scan(root: Path, rels: list[str], mode: str, workers: int) -> Iterator[tuple[str, str | None, str | None]]:
    """Yield (rel, problem, note) for every file, in order, checking in `workers` processes."""
    chunk = 256
    jobs = [(str(root), rels[s:s + chunk], mode) for s in range(0, len(rels), chunk)]
    it: Iterable[list[tuple[str | None, str | None]]]
    if workers > 1 and len(jobs) > 1:
        pool = ProcessPoolExecutor(workers)
        it = pool.map(_check_chunk, jobs)
    else:
        pool = None
        it = map(_check_chunk, jobs)
    try:
        for job, results in zip(jobs, it, strict=True):
            for rel, (problem, note) in zip(job[1], results, strict=True):
                yield rel, problem, note
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


# ---------------------------------------------------------------- preparation

def prepare(root: str | os.PathLike[str], out: str | os.PathLike[str], *,
            search_classes: int = DEFAULT_SEARCH_CLASSES, search_train: int = DEFAULT_SEARCH_TRAIN,
            search_val: int = DEFAULT_SEARCH_VAL, seed: int = 0, scan_mode: str = "header",
            workers: int | None = None, force: bool = False, quiet: bool = False) -> Path:
    """Write the lists for ImageNet at `root` into `out` (kept if already made with these args)."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    root_p = Path(root).expanduser().absolute()
    out_p = Path(out).expanduser().absolute()
    if scan_mode not in SCAN_MODES:
        raise PrepError(f"--scan must be one of {', '.join(SCAN_MODES)}, got {scan_mode!r}")
    if search_classes < 1 or search_train < 1 or search_val < 1:
        raise PrepError("--search-classes, --search-train and --search-val must be >= 1, got "
                        f"{search_classes}, {search_train}, {search_val}")
    if root_p.is_dir() and out_p.resolve().is_relative_to(root_p.resolve()):
        raise PrepError(f"--out {str(out_p)!r} is inside --root {str(root_p)!r}; data_prep never writes into "
                        "ImageNet: choose an --out outside it")
    if root_p.resolve().is_relative_to(out_p.resolve()):
        # Replacing --out would replace ImageNet with it.
        raise PrepError(f"--root {str(root_p)!r} is inside --out {str(out_p)!r}; choose an --out that does not "
                        "contain ImageNet")
    args = {"root": str(root_p), "search_classes": search_classes, "search_train": search_train,
            "search_val": search_val, "seed": seed, "scan": scan_mode}
    if not force and already_prepared(out_p, args):
        say(f"already prepared: {out_p} (same arguments, complete output; nothing rewritten; --force rescans)")
        return out_p

    t0 = time.perf_counter()
    classes, files, ignored = discover(root_p)
    n_cls = len(classes)
    raw_train = np.array([len(f) for f in files["train"]])
    nonempty = np.flatnonzero(raw_train > 0)
    # Refuse impossible sizes before the long scan (checked again on the scanned counts).
    if search_classes > len(nonempty):
        raise PrepError(f"--search-classes {search_classes} is more than the {len(nonempty)} train classes "
                        f"with images (of {n_cls}); lower it")
    # The class subset depends only on the folders, not on the scan, so every --scan mode
    # picks the same classes for a seed.
    chosen = np.sort(seeded_rng(seed, _RNG_CLASSES).choice(nonempty, size=search_classes, replace=False))
    if search_train + search_val > int(raw_train[chosen].sum()):
        raise PrepError(f"--search-train + --search-val = {search_train + search_val} is more than the "
                        f"{int(raw_train[chosen].sum())} train images of the {search_classes} chosen classes; "
                        "lower them or raise --search-classes")

    # Scan every file once; the lists keep only the good ones.
    rels = [r for split in ("train", "val") for per in files[split] for r in per]
    corrupt: list[dict[str, str]] = []
    notes: list[dict[str, str]] = []
    bad: set[str] = set()
    if scan_mode != "none":
        n_workers = workers or len(os.sched_getaffinity(0))
        prog = Progress(f"scan ({scan_mode})", len(rels), quiet=quiet)
        for k, (rel, problem, note) in enumerate(scan(root_p, rels, scan_mode, n_workers), 1):
            if problem:
                corrupt.append({"path": rel, "problem": problem})
                bad.add(rel)
            if note:
                notes.append({"path": rel, "note": note})
            prog.update(k, f"corrupt {len(corrupt)}")
        prog.close(len(rels), f"corrupt {len(corrupt)}")
    good = {split: [[r for r in per if r not in bad] for per in files[split]] for split in ("train", "val")}
    empty = {split: [classes[c] for c in range(n_cls) if not good[split][c]] for split in ("train", "val")}

    caps = np.array([len(good["train"][c]) for c in chosen])
    if search_train + search_val > int(caps.sum()):
        raise PrepError(f"after leaving out {len(corrupt)} corrupt files the {search_classes} chosen classes have "
                        f"{int(caps.sum())} usable train images, fewer than --search-train + --search-val = "
                        f"{search_train + search_val}; lower them")
    n_tr, n_va = split_two(search_train, search_val, caps, seeded_rng(seed, _RNG_COUNTS))
    rng = seeded_rng(seed, _RNG_FILES)
    search: dict[str, tuple[list[str], list[int]]] = {"search_train": ([], []), "search_val": ([], [])}
    for c, a, b in zip(chosen, n_tr, n_va, strict=True):
        # One seeded permutation per class, cut in two: disjoint by construction.
        perm = [good["train"][c][i] for i in rng.permutation(len(good["train"][c]))]
        for split, picked in (("search_train", sorted(perm[:a])), ("search_val", sorted(perm[a:a + b]))):
            search[split][0].extend(picked)
            search[split][1].extend([int(c)] * len(picked))

    with atomic_dir(out_p) as tmp:
        write_classes(tmp / "lists" / "classes.txt", classes)
        counts: dict[str, int] = {}
        for split in ("train", "val"):
            fl = [r for per in good[split] for r in per]
            lab = [c for c in range(n_cls) for _ in good[split][c]]
            counts[split] = write_list(tmp / "lists" / f"{split}.txt", fl, lab)
        for split, (fl, lab) in search.items():
            counts[split] = write_list(tmp / "lists" / f"{split}.txt", fl, lab)
        report = {"root": str(root_p), "scan": scan_mode, "files_checked": len(rels) if scan_mode != "none" else 0,
                  "corrupt": corrupt, "empty_classes": empty, "notes": notes, "ignored_non_jpeg_names": ignored}
        write_json(tmp / "corrupt_report.json", report)
        per_class = {"search_train": [int(n_tr.min()), int(n_tr.max())],
                     "search_val": [int(n_va.min()), int(n_va.max())]}
        meta = dataset_meta(
            name="imagenet", root=str(root_p), classes=classes, lists=counts, seed=seed,
            source="ImageNet (ILSVRC-2012) class folders", args=args,
            search_class_labels=[int(c) for c in chosen], search_per_class_min_max=per_class,
            corrupt_report="corrupt_report.json", excluded=len(corrupt))
        write_json(tmp / "dataset.json", meta)  # written last: its presence marks a complete dir
    dt = time.perf_counter() - t0
    say(f"prepared ImageNet lists in {out_p} in {dt:.1f} s: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f"; {n_cls} classes ({search_classes} in the search subset)")
    if corrupt or any(empty.values()):
        say(f"left out {len(corrupt)} corrupt file(s); empty classes: train {empty['train']}, val {empty['val']}; "
            f"see {out_p / 'corrupt_report.json'}")
    return out_p


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_prep.imagenet", description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="ImageNet dir with train/<wnid>/ and val/<wnid>/ (read only)")
    ap.add_argument("--out", required=True, help="output dir for the lists (config data.dir)")
    ap.add_argument("--search-classes", type=int, default=DEFAULT_SEARCH_CLASSES,
                    help="classes in the search subset (paper: lost in extraction; our choice 200)")
    ap.add_argument("--search-train", type=int, default=DEFAULT_SEARCH_TRAIN,
                    help="search train images (paper: 128,000)")
    ap.add_argument("--search-val", type=int, default=DEFAULT_SEARCH_VAL,
                    help="search validation images, split from train (paper: 50,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scan", choices=SCAN_MODES, default="header",
                    help="check files: header (fast), full (decode), none")
    ap.add_argument("--workers", type=int, default=None, help="scan processes (default: all cores)")
    ap.add_argument("--force", action="store_true", help="rebuild even if --out was made with the same arguments")
    a = ap.parse_args(argv)
    return exit_status(lambda: prepare(a.root, a.out, search_classes=a.search_classes, search_train=a.search_train,
                                       search_val=a.search_val, seed=a.seed, scan_mode=a.scan, workers=a.workers,
                                       force=a.force))


if __name__ == "__main__":
    sys.exit(main())

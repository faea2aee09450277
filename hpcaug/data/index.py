"""Read a prepared dataset directory (the data_prep output, docs/architecture.md section 1).

```
D/dataset.json        {"name", "root", "num_classes", "lists": {"train": 60000, ...}, "seed", ...}
D/lists/classes.txt   line i = the class name (ImageNet wnid) of label i
D/lists/<split>.txt   "<image path relative to root> <label>" per line (DALI file_list format)
```
`DatasetIndex.open(D)` checks this layout and gives the image root, the class names and,
per split, the file paths and labels. Every loader (DALI, torchvision fallback) reads its
lists through here so that they all agree on paths and labels.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DatasetIndex", "DatasetIndexError", "SplitList", "PREPARE_HINT"]

PREPARE_HINT = (
    "prepare it with `python -m data_prep.fashion_mnist --out DIR` (the demo data) or "
    "`python -m data_prep.imagenet --root IMAGENET --out DIR` (see docs/data_prep.md)"
)


class DatasetIndexError(ValueError):
    """A prepared dataset directory is malformed or lacks what was asked for."""


@dataclass(frozen=True)
class SplitList:
    """One split: `files[i]` (relative to `root`, as in the list file) has label `labels[i]`."""

    name: str
    root: Path
    files: list[str]
    labels: np.ndarray  # int64 [n]
    list_path: Path

    def __len__(self) -> int:
        return len(self.files)

    def abs_files(self) -> list[str]:
        """The files as absolute paths (root joined in front)."""
        root = str(self.root)
        return [os.path.join(root, f) for f in self.files]


@dataclass
class DatasetIndex:
    """A prepared dataset: image root, class names, and the split lists (read lazily)."""

    dir: Path
    root: Path
    classes: list[str]
    meta: dict[str, Any]
    _cache: dict[str, SplitList] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> DatasetIndex:
        """Check `directory` and read its dataset.json and class list."""
        d = Path(directory).expanduser().absolute()
        if not d.is_dir():
            raise FileNotFoundError(f"prepared dataset directory {str(d)!r} does not exist; {PREPARE_HINT}")
        meta_path = d / "dataset.json"
        if not meta_path.is_file():
            raise DatasetIndexError(f"{str(d)!r} has no dataset.json, so it is not a prepared dataset "
                                    f"(or its preparation did not finish); {PREPARE_HINT}")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetIndexError(f"{str(meta_path)!r} is not valid JSON ({e}); prepare the dataset again: "
                                    f"{PREPARE_HINT}") from e
        if not isinstance(meta, dict):
            raise DatasetIndexError(f"{str(meta_path)!r} must hold a JSON object; {PREPARE_HINT}")
        missing = [k for k in ("root", "num_classes", "lists") if k not in meta]
        if missing or not isinstance(meta.get("lists"), dict):
            raise DatasetIndexError(f"{str(meta_path)!r} lacks {', '.join(missing) or 'a lists mapping'}; "
                                    f"prepare the dataset again: {PREPARE_HINT}")
        root = Path(meta["root"])
        # "." (Fashion-MNIST) means the images sit inside D itself.
        root = root if root.is_absolute() else (d / root)
        root = Path(os.path.normpath(root))
        if not root.is_dir():
            raise DatasetIndexError(f"image root {str(root)!r} named in {str(meta_path)!r} does not exist "
                                    "(was the image directory moved? prepare the dataset again with the new --root)")
        classes_path = d / "lists" / "classes.txt"
        if not classes_path.is_file():
            raise DatasetIndexError(f"{str(classes_path)!r} is missing; prepare the dataset again: {PREPARE_HINT}")
        classes = classes_path.read_text().split("\n")
        if classes and classes[-1] == "":
            classes.pop()
        if len(classes) != int(meta["num_classes"]):
            raise DatasetIndexError(f"{str(classes_path)!r} has {len(classes)} classes but dataset.json says "
                                    f"num_classes={meta['num_classes']}; prepare the dataset again")
        return cls(dir=d, root=root, classes=classes, meta=meta)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.dir.name))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def splits(self) -> list[str]:
        """The split names dataset.json lists: train, val, search_train, search_val, then any others."""
        known = [s for s in ("train", "val", "search_train", "search_val") if s in self.meta["lists"]]
        return known + sorted(s for s in self.meta["lists"] if s not in known)

    def h5_path(self) -> Path | None:
        """The HDF5 copy of the images (Fashion-MNIST only), or None."""
        name = self.meta.get("h5")
        return (self.dir / name) if name else None

    def list_path(self, split: str) -> Path:
        """Path of lists/<split>.txt (for DALI's readers.file(file_list=...))."""
        self._check_split(split)
        p = self.dir / "lists" / f"{split}.txt"
        if not p.is_file():
            raise DatasetIndexError(f"{str(p)!r} is missing although dataset.json lists split {split!r}; "
                                    f"prepare the dataset again: {PREPARE_HINT}")
        return p

    def split(self, split: str) -> SplitList:
        """Read lists/<split>.txt: files (relative to root) and int64 labels; cached."""
        if split in self._cache:
            return self._cache[split]
        path = self.list_path(split)
        files: list[str] = []
        labels: list[int] = []
        with open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\n")
                if not line:
                    continue
                # rpartition: the label is the last field (DALI's file_list format)
                f, sep, lab = line.rpartition(" ")
                if not sep or not f or not lab.lstrip("-").isdigit():
                    raise DatasetIndexError(f"{str(path)}:{lineno}: expected '<path> <label>', got {line!r}")
                files.append(f)
                labels.append(int(lab))
        arr = np.asarray(labels, dtype=np.int64)
        expected = self.meta["lists"][split]
        if isinstance(expected, int) and expected != len(files):
            raise DatasetIndexError(f"{str(path)!r} has {len(files)} entries but dataset.json says {expected} "
                                    "(truncated or edited list?); prepare the dataset again")
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_classes):
            raise DatasetIndexError(f"{str(path)!r} has labels outside 0..{self.num_classes - 1} "
                                    f"(min {arr.min()}, max {arr.max()})")
        out = SplitList(name=split, root=self.root, files=files, labels=arr, list_path=path)
        self._cache[split] = out
        return out

    def __getitem__(self, split: str) -> SplitList:
        return self.split(split)

    def _check_split(self, split: str) -> None:
        if split not in self.meta["lists"]:
            raise DatasetIndexError(
                f"dataset {str(self.dir)!r} has no split {split!r}; it has {', '.join(self.splits) or 'none'}. "
                "data_prep writes train, val, search_train and search_val: prepare the dataset again with "
                "`python -m data_prep.fashion_mnist` or `python -m data_prep.imagenet` (docs/data_prep.md), "
                "or set data.train_list / data.val_list to one of the splits above")

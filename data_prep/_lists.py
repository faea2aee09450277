"""What both preparers share: list files, dataset.json, balanced splits, atomic output.

The layout (docs/architecture.md section 1) is written only here, so the Fashion-MNIST and
the ImageNet preparers cannot drift apart.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
CREATED_BY = "data_prep"
SPLITS = ("train", "val", "search_train", "search_val")


class PrepError(RuntimeError):
    """A preparation refused to run; the message says how to fix the input."""


def exit_status(prepare_call: Callable[[], object]) -> int:
    """A data_prep command's exit status: 0, or 2 after a one-line `error:` for a refusal."""
    try:
        prepare_call()
    except PrepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def write_list(path: Path, files: Sequence[str], labels: Sequence[int] | np.ndarray) -> int:
    """Write '<path relative to root> <label>' lines (DALI readers.file file_list format)."""
    if len(files) != len(labels):
        raise ValueError(f"{len(files)} files but {len(labels)} labels for {path}")
    for f in files:
        # DALI splits a file_list line at whitespace; a newline would also break the format.
        if "\n" in f or f != f.strip():
            raise PrepError(f"file name {f!r} has a newline or edge whitespace; rename it before preparing")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.writelines(f"{f} {int(lab)}\n" for f, lab in zip(files, labels, strict=True))
    return len(files)


def write_classes(path: Path, classes: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{c}\n" for c in classes))


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def dataset_meta(*, name: str, root: str, classes: Sequence[str], lists: Mapping[str, int], seed: int,
                 source: str, args: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The dataset.json object; `args` is what decides whether a later run may reuse the output."""
    return {"name": name, "root": root, "num_classes": len(classes), "lists": dict(lists), "seed": seed,
            "source": source, "args": dict(args), "format_version": FORMAT_VERSION,
            "created_by": CREATED_BY, **extra}


def balanced_counts(total: int, caps: Sequence[int] | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split `total` over classes as evenly as their sizes `caps` allow (water filling).

    Every class gets min(cap, level) for one common level; the few left-over units go one
    each to seeded random classes that still have room. Raises if sum(caps) < total.
    """
    caps = np.asarray(caps, dtype=np.int64)
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if caps.sum() < total:
        raise PrepError(f"asked for {total} images but only {int(caps.sum())} are available")
    if total == 0 or len(caps) == 0:
        return np.zeros(len(caps), dtype=np.int64)
    # Largest level L with sum(min(caps, L)) <= total, by bisection over 0..max(cap).
    lo, hi = 0, int(caps.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(caps, mid).sum() <= total:
            lo = mid
        else:
            hi = mid - 1
    counts = np.minimum(caps, lo)
    rest = total - int(counts.sum())
    if rest:
        room = np.flatnonzero(caps > counts)  # all have cap > lo here, so +1 fits
        counts[rng.choice(room, size=rest, replace=False)] += 1
    return counts


def split_two(n_a: int, n_b: int, caps: Sequence[int] | np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-class counts for two disjoint subsets (e.g. search train + search val) of one pool.

    The union is balanced first, then b inside it, so b is balanced and a is as balanced
    as the class sizes allow.
    """
    both = balanced_counts(n_a + n_b, caps, rng)
    b = balanced_counts(n_b, both, rng)
    return both - b, b


def seeded_rng(seed: int, purpose: int) -> np.random.Generator:
    """One independent stream per purpose, so changing one subset never reshuffles another."""
    return np.random.default_rng([seed, purpose])


# ---------------------------------------------------------------- atomic output directory

def read_meta(out: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((out / "dataset.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def lists_complete(out: Path, meta: Mapping[str, Any]) -> bool:
    """Every list dataset.json names exists with the line count it records."""
    if not (out / "lists" / "classes.txt").is_file():
        return False
    for split, n in meta.get("lists", {}).items():
        p = out / "lists" / f"{split}.txt"
        try:
            with open(p, "rb") as fh:
                if sum(1 for _ in fh) != n:
                    return False
        except OSError:
            return False
    return True


def already_prepared(out: Path, args: Mapping[str, Any],
                     extra_check: Callable[[Path, dict[str, Any]], bool] | None = None) -> bool:
    """True if `out` holds a complete output made with exactly these args."""
    meta = read_meta(out)
    if meta is None or meta.get("created_by") != CREATED_BY or meta.get("format_version") != FORMAT_VERSION:
        return False
    if meta.get("args") != json.loads(json.dumps(dict(args))):  # compare as JSON (tuples -> lists)
        return False
    if not lists_complete(out, meta):
        return False
    return extra_check(out, meta) if extra_check else True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temp_name(out: Path, kind: str) -> Path:
    # The host is in the name: on a shared file system only this host can tell whether
    # the pid that made a temp dir is still alive.
    return out.parent / f".{out.name}.{kind}-{socket.gethostname()}-{os.getpid()}"


def _clean_stale_temps(out: Path) -> None:
    """Remove temp dirs that a killed earlier run on this host (dead pid) left beside `out`."""
    prefix = f".{out.name}.tmp-{socket.gethostname()}-"
    for p in out.parent.glob(f"{prefix}*"):
        try:
            pid = int(p.name[len(prefix):])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def check_out_dir(out: Path) -> None:
    """Refuse to replace a directory data_prep did not make (someone's data could be there)."""
    if out.exists() and not out.is_dir():
        raise PrepError(f"--out {str(out)!r} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        meta = read_meta(out)
        if meta is None or meta.get("created_by") != CREATED_BY:
            raise PrepError(f"--out {str(out)!r} is a non-empty directory that data_prep did not make; "
                            "refusing to replace it: choose an empty or new --out")


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temp dir beside `out`; on success it replaces `out`, on any error it is removed.

    The new output is renamed into place only when complete, so readers see either the old
    dataset or the new one, never a half-written one. Beside `out` (same file system) so
    the rename is atomic.
    """
    out = out.absolute()
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_temps(out)
    tmp = _temp_name(out, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if out.exists():
            # A directory cannot be renamed over a non-empty one: move the old aside first.
            old = _temp_name(out, "old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class Progress:
    """A one-line progress report on stderr (rewritten in place on a terminal)."""

    def __init__(self, label: str, total: int, every_s: float = 1.0, quiet: bool = False) -> None:
        self.label, self.total, self.every_s, self.quiet = label, total, every_s, quiet
        self.t0 = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()
        if not self.tty:
            self.every_s = max(every_s, 15.0)  # logs (SLURM .out files): a line every 15 s

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self.last < self.every_s):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        pct = 100.0 * done / max(self.total, 1)
        line = f"{self.label}: {done}/{self.total} ({pct:.0f}%) {rate:.0f}/s {note}".rstrip()
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self, done: int, note: str = "") -> None:
        self.update(done, note, force=True)
        if self.tty and not self.quiet:
            print(file=sys.stderr, flush=True)

"""Checkpoints: atomic writes (temp file + rename) and `weights_only` loads.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts so that
`torch.load(weights_only=True)` can read it (no pickled code runs on load).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from hpcaug._atomic import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

PathLike = Union[str, "os.PathLike[str]"]


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically; call it on rank 0 only.

    The file is written next to its destination and renamed over it, so a run killed
    mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (`weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; train first or fix the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors: the file holds objects weights_only refuses
        raise RuntimeError(f"cannot load checkpoint {str(path)!r} with weights_only=True ({e}); "
                           "it must hold only tensors, numbers, strings, lists and dicts") from e


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, CUDA) as weights_only-safe values."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # legacy=True: the MT19937 tuple
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x

"""Data fixtures: real images on disk (foolbox's ImageNet JPEGs, Fashion-MNIST via data_prep)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def foolbox_images() -> list[Path]:
    """The 20 real ImageNet JPEGs (512x512) shipped in foolbox/data (installed --no-deps)."""
    spec = importlib.util.find_spec("foolbox")
    assert spec is not None and spec.submodule_search_locations, "foolbox is missing: run scripts/setup.sh"
    files = sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("imagenet_*.jpg"))
    assert len(files) == 20, f"expected 20 foolbox ImageNet JPEGs, found {len(files)}"
    return files

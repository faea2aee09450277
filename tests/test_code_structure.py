"""The package's shape, checked from its source: the layering, short functions, light commands.

Layers, lowest first (docs/architecture.md): the base modules (hpcaug._atomic, config,
policy_names) <- ops <- data <- train <- search <- submit / report / status. A module imports
its own layer or lower ones, never a higher one: at module level, inside functions and under
TYPE_CHECKING alike.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "hpcaug"
LAYERS = {"hpcaug._atomic": 0, "hpcaug.config": 0, "hpcaug.policy_names": 0, "hpcaug": 0,
          "hpcaug.ops": 1, "hpcaug.data": 2, "hpcaug.train": 3, "hpcaug.search": 4,
          "hpcaug.submit": 5, "hpcaug.report": 5, "hpcaug.status": 5}
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    """The layer of an hpcaug module (its longest listed prefix); None outside hpcaug."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in LAYERS:
            return LAYERS[name]
    return None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved; for
    `from X import y` both X and X.y (y may be a submodule)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def _upward_imports(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        here = _layer(_module_name(path))
        assert here is not None, f"{path}: no layer; add its package to LAYERS"
        for line, target in _imports(path):
            there = _layer(target)
            if there is not None and there > here:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target} (layer {there} > {here})")
    return bad


def test_no_module_imports_a_higher_layer() -> None:
    bad = _upward_imports(PKG)
    assert not bad, "upward imports (move the code down a layer, or pass it in):\n" + "\n".join(bad)


def test_the_layering_check_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a relative and an absolute upward import, one inside a function."""
    pkg = tmp_path / "hpcaug"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ops" / "__init__.py").write_text("from ..search import aws\n")
    (pkg / "ops" / "table.py").write_text("def f() -> None:\n    from hpcaug.train.loop import train\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    bad = _upward_imports(pkg)
    assert any("ops/__init__.py:1 imports hpcaug.search" in b for b in bad), bad
    assert any("ops/table.py:2 imports hpcaug.train.loop" in b for b in bad), bad


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(long)


# A light command must not pay for what it does not use: torch takes seconds to import,
# torchvision and DALI seconds more (the inside-function imports that spare them say so).
LIGHT = [
    ("import hpcaug.submit", {"torch", "torchvision", "submitit", "nvidia.dali", "matplotlib"}),  # --help
    ("import hpcaug.config", {"torch", "torchvision", "submitit", "nvidia.dali"}),
    ("import hpcaug.status", {"torchvision", "submitit", "nvidia.dali", "matplotlib", "hpcaug.train"}),
    ("import hpcaug.report", {"torchvision", "nvidia.dali", "hpcaug.train", "hpcaug.data"}),
    ("import hpcaug.data", {"nvidia.dali"}),
]


@pytest.mark.parametrize("code,absent", LIGHT, ids=[c for c, _ in LIGHT])
def test_light_imports(code: str, absent: set[str]) -> None:
    probe = f"import sys; {code}; print(' '.join(sorted(m for m in {sorted(absent)!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`{code}` imported {out.stdout.strip()}"

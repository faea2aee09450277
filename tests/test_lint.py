"""scripts/lint.sh (run by scripts/test.sh before pytest) fails on what the pyproject.toml
configuration is meant to catch, and passes on clean code.

Each case runs the real script on a small tree with this repo's pyproject.toml: an `hpcaug`
package (mypy's `files`) holding one module.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CLEAN = '''"""A clean module."""
from __future__ import annotations

import json
from pathlib import Path


def dump(path: Path, data: dict[str, int]) -> None:
    path.write_text(json.dumps(data))
'''

# (name, module text, what the output must name)
BAD = [
    ("unused import", CLEAN.replace("import json\n", "import json\nimport os\n"), "F401"),
    ("unused variable", CLEAN.replace("    path.write_text", "    unused = 1\n    path.write_text"), "F841"),
    ("import order",
     CLEAN.replace("import json\nfrom pathlib import Path\n", "from pathlib import Path\nimport json\n"), "I001"),
    ("line length", CLEAN + "\n\nX = '" + "x" * 130 + "'\n", "E501"),
    ("mutable default", CLEAN + "\n\ndef f(x: list[int] = []) -> list[int]:\n    return x\n", "B006"),
    ("old typing",
     CLEAN.replace("from pathlib import Path\n", "from pathlib import Path\nfrom typing import Optional\n")
     + "\n\ndef g(x: Optional[int]) -> int | None:\n    return x\n", "UP045"),
    ("missing annotation", CLEAN + "\n\ndef h(x):\n    return x\n", "no-untyped-def"),
    ("wrong type", CLEAN + "\n\ndef k() -> int:\n    return 'one'\n", "return-value"),
]


def _lint(tmp_path: Path, module: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "hpcaug").mkdir()
    (tmp_path / "hpcaug" / "__init__.py").write_text("")
    (tmp_path / "hpcaug" / "mod.py").write_text(module)
    return subprocess.run([str(REPO / "scripts" / "lint.sh"), str(tmp_path)], capture_output=True, text=True,
                          timeout=600)


def test_clean_code_passes(tmp_path: Path) -> None:
    res = _lint(tmp_path, CLEAN)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("module,code", [(m, c) for _, m, c in BAD], ids=[n for n, _, _ in BAD])
def test_lint_fails_naming_the_problem(tmp_path: Path, module: str, code: str) -> None:
    res = _lint(tmp_path, module)
    assert res.returncode != 0 and code in res.stdout, res.stdout + res.stderr


def test_the_test_command_runs_lint_and_fails_with_it() -> None:
    """scripts/test.sh runs lint.sh before pytest and turns a passing pytest into a failure
    when lint failed (running test.sh here would start the SLURM cluster inside a test)."""
    text = (REPO / "scripts" / "test.sh").read_text()
    assert text.index("./scripts/lint.sh") < text.index("-m pytest")
    tail = text[text.index("-m pytest"):]
    assert 'if [ "$lint_rc" != 0 ]' in tail and "rc=1" in tail

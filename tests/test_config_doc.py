"""docs/config.md matches hpcaug/config.py: every section and field is documented, in the code's
order, with its default; a documented range is the one the code checks (a value just outside
it is refused with that range in the message) and every documented choice loads."""
from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from hpcaug.config import Config

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"
_ROW = re.compile(r"\| `(\w+)` \| `([^`]*)` \| (.*?) \| .+ \|")
_RANGE = re.compile(r"`((?:>=|>) \S+|[\[(]\S+, \S+[\])])`")


def _documented() -> dict[str, dict[str, tuple[str, str]]]:
    """section ('' = top level) -> key -> (default cell, range cell), in the doc's order."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    section = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            m = re.match(r"## `(\w+)`", line)
            section = m[1] if m else ("" if line == "## Top level" else None)
        elif line.startswith("### "):
            section = None  # sub-sections hold other tables
        elif section is not None and (m := _ROW.fullmatch(line)):
            out.setdefault(section, {})[m[1]] = (m[2], m[3])
    return out


def _code() -> dict[str, dict[str, Any]]:
    cfg = Config()
    out: dict[str, dict[str, Any]] = {"": {}}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            out[f.name] = {g.name: getattr(value, g.name) for g in fields(value)}
        else:
            out[""][f.name] = value
    return out


def _render(v: Any) -> str:
    """A default as the doc writes it (YAML-like)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(float(f"{v:.12g}"))  # 57.120000000000005 -> 57.12, 5.0 -> 5.0, 1e-05 -> 1e-05
    if isinstance(v, tuple):
        return "[" + ", ".join(_render(x) for x in v) + "]"
    return '""' if v == "" else str(v)


def _outside(spec: str) -> float:
    """A value just outside a range written as the config's checks write it."""
    if spec.startswith(">="):
        return float(spec[3:]) - 1
    if spec.startswith(">"):
        return float(spec[2:])
    lo, hi = (float(x) for x in spec[1:-1].split(", "))
    return hi + 1 if spec.endswith("]") else hi


def _key(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def test_every_section_and_field_is_documented_in_order_with_its_default() -> None:
    doc, code = _documented(), _code()
    assert list(doc) == list(code), "docs/config.md sections (## `name`) must be the Config sections, in order"
    for section, values in code.items():
        assert list(doc[section]) == list(values), f"docs/config.md, section {section or 'Top level'}: fields"
        for key, value in values.items():
            assert doc[section][key][0] == _render(value), f"docs/config.md: default of {_key(section, key)}"


CASES = [(s, k, r) for s, keys in _documented().items() for k, (_, r) in keys.items()]


@pytest.mark.parametrize("section, key, cell", CASES, ids=[_key(s, k) for s, k, _ in CASES])
def test_a_documented_range_or_choice_is_the_codes(section: str, key: str, cell: str) -> None:
    default = getattr(getattr(Config(), section) if section else Config(), key)
    full = _key(section, key)
    if (m := _RANGE.fullmatch(cell)) is not None:  # a numeric range: the code refuses just outside it, naming it
        spec = m[1]
        bad = _outside(spec)
        bad_value: Any = [bad] * len(default) if isinstance(default, tuple) else bad
        with pytest.raises(ValueError) as e:
            Config().replace(**{full: bad_value})
        assert f"{full} must be {'in ' if spec[0] in '[(' else ''}{spec}" in str(e.value), str(e.value)
    elif re.fullmatch(r"`[^`]+`(, `[^`]+`)+", cell):  # choices: each loads, anything else is refused
        for choice in re.findall(r"`([^`]+)`", cell):
            value: Any = {"true": True, "false": False}.get(choice, choice)
            assert getattr(getattr(Config().replace(**{full: value}), section), key) == value
        with pytest.raises(ValueError, match=re.escape(full)):
            Config().replace(**{full: "not-a-choice"})
    else:
        assert cell == "any" or full == "augment.policy", f"{full}: range cell {cell!r} is no range, choices or 'any'"

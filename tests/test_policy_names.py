"""Policy names (hpcaug.policy_names): every accepted name round-trips and builds its policy;
every malformed one is refused, naming what is accepted, by the grammar, load_policy, the
config (augment.policy) and both CLIs' --policy, before anything runs."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpcaug.config import AugmentConfig, load_config
from hpcaug.ops.policy import NoPolicy, Policy, RandAugment, SubPolicyPolicy, TrivialAugment, UniformAWS, load_policy
from hpcaug.ops.table import NUM_BINS
from hpcaug.policy_names import _OLD, FAMILIES, accepted, form, parse_policy_name, policy_arg

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"

ACCEPTED: dict[str, Policy] = {
    "none": NoPolicy(), "uniform": UniformAWS(), "trivialaugment": TrivialAugment(),
    "autoaugment-imagenet": SubPolicyPolicy.autoaugment_imagenet(), "randaugment-n2-m9": RandAugment(2, 9),
    "randaugment-n1-m0": RandAugment(1, 0), "randaugment-n3-m5": RandAugment(3, 5),
    "randaugment-n4-m9": RandAugment(4, 9),
}
# malformed name -> what its message must say (besides naming what is accepted)
MALFORMED: dict[str, str] = {
    "randaugment-n2-m99": "m=99 is out of range", "randaugment-n0-m9": "n=0 is out of range",
    "randaugment-n5-m9": "n=5 is out of range",
    "randaugment-x2": "part 'x2'", "randaugment-n2-m9-extra": "part 'extra'", "randaugment-m9-n2": "part 'm9'",
    "randaugment-n02-m9": "part 'n02'", "randaugment-n1.5-m9": "part 'n1.5'", "randaugment-n-1-m9": "part 'n'",
    "randaugment-n２-m9": "part 'n２'", "randaugment-n2-m9 ": "part 'm9 '", "randaugment-": "part ''",
    "randaugment-n2": "m missing", "randaugment": "n and m missing", "trivialaugment-n1": "takes no parameters",
    "uniform-x": "takes no parameters", "none-": "takes no parameters",
    "autoaugment-imagenet-v0": "takes no parameters", "autoaugment": "unknown policy 'autoaugment'",
    "autoaugment_imagenet": "spelled 'autoaugment-imagenet'", "RandAugment-n2-m9": "lower case",
    " uniform": "unknown policy", "": "unknown policy ''", "rand-m9-n2": "unknown policy",
}


def _names_what_is_accepted(msg: str) -> bool:
    return accepted() in msg or "randaugment is written randaugment-n<N>-m<M> (n: " in msg or "; write '" in msg


# ---------------------------------------------------------------------------------- accepted
@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_an_accepted_name_round_trips_and_builds_its_policy(name: str) -> None:
    parsed = parse_policy_name(name)
    assert str(parsed) == name and parse_policy_name(str(parsed)) == parsed
    assert load_policy(name) == ACCEPTED[name]
    assert AugmentConfig(policy=name).policy == name
    assert load_config(DEMO, [f"augment.policy={name}"]).augment.policy == name
    assert policy_arg(name) == name


def test_every_family_is_covered_and_randaugment_round_trips_every_bin() -> None:
    assert {parse_policy_name(n).family for n in ACCEPTED} == set(FAMILIES)
    for n in (1, 2, 3):
        for m in range(NUM_BINS):
            name = f"randaugment-n{n}-m{m}"
            pol = load_policy(name)
            assert isinstance(pol, RandAugment) and (pol.n, pol.m) == (n, m)
            assert str(parse_policy_name(name)) == name


def test_a_policy_file_is_a_spec_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "ra.json"
    RandAugment(3, 4).save(path)
    assert load_policy(path) == load_policy(str(path)) == RandAugment(3, 4)
    assert AugmentConfig(policy=str(path)).policy == str(path)
    with pytest.raises(ValueError, match="not found"):
        load_policy(tmp_path / "missing.json")


# --------------------------------------------------------------------------------- malformed
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_name_is_refused_naming_what_is_accepted(name: str) -> None:
    for refuse in (parse_policy_name, load_policy):
        with pytest.raises(ValueError) as e:
            refuse(name)
        assert MALFORMED[name] in str(e.value) and _names_what_is_accepted(str(e.value)), str(e.value)
    with pytest.raises(ValueError) as e:
        AugmentConfig(policy=name)
    assert str(e.value).startswith("augment.policy: ") and MALFORMED[name] in str(e.value), str(e.value)
    with pytest.raises(ValueError, match="^augment.policy: "):
        load_config(DEMO, [f"augment.policy={name!r}"])  # quoted: YAML would strip the spaces
    with pytest.raises(argparse.ArgumentTypeError) as a:
        policy_arg(name)
    assert MALFORMED[name] in str(a.value) and _names_what_is_accepted(str(a.value))


@pytest.mark.parametrize("name", ["randaugment-n2-m99", "randaugment-x2", "trivialaugment-n1", "autoaugment_imagenet"])
def test_both_clis_refuse_a_malformed_policy_before_anything_runs(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpcaug.submit import main as submit_main
    from hpcaug.train.__main__ import main as train_main

    for main, args in ((train_main, ["--config", str(DEMO), "--out", str(tmp_path / "out")]),
                       (submit_main, ["--stage", "final", "--config", str(DEMO), "--executor", "inline",
                                      "--set", f"run_dir={tmp_path / 'out'}"])):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main([*args, "--policy", name])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "argument --policy: " in err and MALFORMED[name] in err, err
        assert not (tmp_path / "out").exists()
    # the config's key, through the submit CLI: refused with its name, exit status 2, nothing created
    rc = submit_main(["--stage", "final", "--config", str(DEMO), "--executor", "inline",
                      "--set", f"run_dir={tmp_path / 'out'}", f"augment.policy={name}"])
    err = capsys.readouterr().err
    assert rc == 2 and "augment.policy: " in err and MALFORMED[name] in err, err
    assert not (tmp_path / "out").exists()


def test_the_clis_take_an_accepted_name(tmp_path: Path) -> None:
    from hpcaug.submit import build_parser
    from hpcaug.train.__main__ import main as train_main

    for name in ACCEPTED:
        assert build_parser().parse_args(["--policy", name]).policy == name
        # past argparse, the unknown key stops the run before it starts
        with pytest.raises(ValueError, match="unknown config key"):
            train_main(["--config", str(DEMO), "--out", str(tmp_path / "out"), "--policy", name, "--set", "nokey=1"])


# ------------------------------------------------------------------- old keys, configs, imports
def test_the_old_randaugment_keys_name_the_new_spelling(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="augment.policy: randaugment-n3-m9"):
        load_config(DEMO, ["augment.randaugment_n=3"])
    old = tmp_path / "old.yaml"
    old.write_text("augment:\n  policy: randaugment\n  randaugment_n: 1\n  randaugment_m: 5\n")
    with pytest.raises(ValueError, match="augment.randaugment_n / augment.randaugment_m are gone.*randaugment-n1-m5"):
        load_config(old)


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_names_a_policy_that_loads(config: str) -> None:
    cfg = load_config(REPO / "configs" / config)
    assert isinstance(load_policy(cfg.augment.policy), Policy)


def test_checking_a_name_imports_no_torch() -> None:
    code = ("import sys; from hpcaug.config import AugmentConfig; AugmentConfig(policy='randaugment-n2-m9'); "
            "assert 'torch' not in sys.modules, 'the config imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_docs_name_only_accepted_policies() -> None:
    """A policy name written in README.md or docs/*.md parses (or is a family's written form,
    randaugment-n<N>-m<M>); an earlier or malformed spelling only in a paragraph that says so."""
    token = re.compile(r"`([a-z][a-z0-9_<>-]*)`")
    forms = {form(f) for f in FAMILIES}
    bad = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for para in re.split(r"\n\s*\n", doc.read_text()):
            if any(w in para.lower() for w in ("refused", "earlier", "malformed")):
                continue
            for name in token.findall(para):
                is_policy = name in _OLD or any(name == f or name.startswith(f + "-") for f in FAMILIES)
                if is_policy and name not in forms and _parses(name) is not None:
                    bad.append(f"{doc.relative_to(REPO)}: `{name}`: {_parses(name)}")
    assert not bad, "\n".join(bad)


def _parses(name: str) -> str | None:
    try:
        parse_policy_name(name)
    except ValueError as e:
        return str(e).split(";")[0]
    return None

"""An AWS search refuses a config whose fine-tunes validate fewer epochs than aws.reward_top_k
(train.val_every applies to fine-tunes too; the reward would silently average fewer accuracies),
when its run dir opens; a plain training may still validate once (train.val_every 0)."""
from __future__ import annotations

from pathlib import Path

import pytest

from hpcaug.config import check_aws_search, load_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"


@pytest.mark.parametrize("every, epochs, validated", [
    (1, 4, [0, 1, 2, 3]), (2, 4, [1, 3]), (3, 4, [2, 3]), (5, 4, [3]), (0, 4, [3]), (0, 1, [0]), (2, 3, [1, 2])])
def test_the_validation_rule(every: int, epochs: int, validated: list[int]) -> None:
    """Epoch e (0-based) validates when e + 1 is a multiple of val_every or e is the last; 0 = the last only."""
    train = load_config(DEMO, [f"train.val_every={every}"]).train
    assert [e for e in range(epochs) if train.validates_after(e, epochs)] == validated
    assert train.validated_epochs(epochs) == len(validated)


def test_a_search_whose_fine_tunes_validate_too_rarely_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpcaug.search import aws
    from hpcaug.submit import main

    sets = [f"run_dir={tmp_path / 'run'}", "aws.finetune_epochs=3", "aws.reward_top_k=2", "train.val_every=0"]
    cfg = load_config(DEMO, sets)  # loads: a plain training may validate once
    with pytest.raises(ValueError) as e:
        aws.open_run(cfg)
    msg = str(e.value)
    for key in ("train.val_every=0", "aws.finetune_epochs=3", "aws.reward_top_k=2", "validates only 1 time"):
        assert key in msg, msg
    assert not (tmp_path / "run").exists()
    # the CLI: a usage error (exit 2) naming the keys, no run dir, nothing run
    rc = main(["--stage", "update", "--config", str(DEMO), "--executor", "inline", "--set", *sets])
    assert rc == 2 and "aws.reward_top_k=2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sets", [
    ["aws.finetune_epochs=3", "aws.reward_top_k=1", "train.val_every=0"],  # the last epoch is enough for k = 1
    ["aws.finetune_epochs=4", "aws.reward_top_k=2", "train.val_every=2"],  # epochs 2 and 4
    ["aws.finetune_epochs=4", "aws.reward_top_k=2", "train.val_every=3"],  # epochs 3 and 4
    ["aws.finetune_epochs=3", "aws.reward_top_k=3", "train.val_every=1"],
])
def test_fine_tunes_that_validate_often_enough_open_a_run(tmp_path: Path, sets: list[str]) -> None:
    from hpcaug.search import aws

    rd = aws.open_run(load_config(DEMO, [f"run_dir={tmp_path / 'run'}", *sets]))
    assert rd.config_path.is_file()


@pytest.mark.parametrize("name", ["demo.yaml", "fmnist_quality.yaml", "imagenet_resnet50_aws.yaml"])
def test_the_search_configs_pass_and_a_final_training_may_validate_once(name: str) -> None:
    """The shipped search configs pass; benchmarks/_quality.py's final trainings set train.val_every 0
    with cfg.replace (which re-validates) on a config whose aws section wants k = 2: that still loads."""
    cfg = load_config(REPO / "configs" / name)
    check_aws_search(cfg)
    once = cfg.replace(**{"train.val_every": 0, "train.seed": 1})
    assert once.train.validated_epochs(once.train.epochs) == 1

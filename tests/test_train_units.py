"""Training engine, single process: models, lr schedule, checkpoints, SLURM parsing, the loop
(N x M batch, choice counts, resume after a crash gives the same weights as no crash)."""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hpcaug.config import Config
from hpcaug.train import TrainHooks, build_model, load_checkpoint, save_checkpoint, train
from hpcaug.train.checkpoint import rng_state, set_rng_state
from hpcaug.train.dist import SingleDist
from hpcaug.train.job_env import SlurmLaunch, expand_counts, expand_hostlist, slurm_launch_info
from hpcaug.train.loop import LRSchedule, scaled_lr
from hpcaug.train.stages import CheckpointableTraining, run_final
from hpcaug.train.synthetic import SyntheticLoader


def _cfg(**over: Any) -> Config:
    base = {"train.model": "tiny_resnet", "data.batch_size": 8, "train.warmup_epochs": 0.5, "train.lr": 0.4,
            "train.log_interval": 100}
    base.update(over)
    return Config().replace(**base)


class _Choices:
    def __init__(self, n: int) -> None:
        self.num_choices = n


def _loaders(copies: int = 1, steps: int = 3) -> tuple[SyntheticLoader, SyntheticLoader]:
    return (SyntheticLoader(8, steps, copies=copies, num_classes=4, num_choices=5, image_size=16),
            SyntheticLoader(10, 2, num_classes=4, image_size=16, total=17))


def test_models_build_and_shapes() -> None:
    x = torch.randn(2, 3, 32, 32)
    assert build_model("tiny_resnet", 10)(x).shape == (2, 10)
    assert build_model("resnet18", 7)(x).shape == (2, 7)
    assert build_model("wrn28_10", 10).eval()(x[:1]).shape == (1, 10)
    r200 = build_model("resnet200", 1000)
    assert [len(getattr(r200, f"layer{i}")) for i in range(1, 5)] == [3, 24, 36, 3]
    assert 64e6 < sum(p.numel() for p in r200.parameters()) < 65e6  # ResNet-200: 64.7M parameters
    with pytest.raises(ValueError, match="train.model must be one of"):
        build_model("resnet1000", 10)


def test_lr_schedule_and_linear_scaling() -> None:
    s = LRSchedule(peak=1.0, total_steps=100, warmup_steps=10, kind="cosine")
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0) and s(55) == pytest.approx(0.5) and s(100) == pytest.approx(0.0)
    assert LRSchedule(0.3, 100, 0, "constant")(77) == 0.3
    cfg = _cfg(**{"data.batch_size": 128, "train.lr": 0.1, "train.lr_ref_batch": 256})
    assert scaled_lr(cfg, None, world=64, copies=4) == pytest.approx(0.1 * 128 * 64 / 256)  # EB keeps the N lr
    assert scaled_lr(cfg.replace(**{"train.scale_lr_with_copies": True}), 0.2, 2, 4) == pytest.approx(0.2 * 4)


def test_checkpoint_atomic_weights_only_and_rng(tmp_path: Path) -> None:
    p = tmp_path / "ck" / "checkpoint.pt"
    save_checkpoint(p, {"w": torch.arange(3), "epoch": 2, "rng": rng_state()})
    assert load_checkpoint(p)["epoch"] == 2
    assert [f.name for f in p.parent.iterdir()] == ["checkpoint.pt"]  # no temp file left behind
    saved = load_checkpoint(p)["rng"]  # went through torch.save / weights_only
    draws = (torch.rand(3), random.random(), float(np.random.rand()))
    set_rng_state(saved)
    again = (torch.rand(3), random.random(), float(np.random.rand()))
    assert torch.equal(draws[0], again[0]) and draws[1:] == again[1:]
    torch.save({"obj": _Choices(3)}, tmp_path / "bad.pt")  # a pickled class: weights_only refuses it
    with pytest.raises(RuntimeError, match="weights_only"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="train first"):
        load_checkpoint(tmp_path / "missing.pt")


def test_slurm_env_parsing() -> None:
    assert expand_counts("2(x3),1") == [2, 2, 2, 1]
    assert "n1" in expand_hostlist("n[1-2]") and "gpu07" in expand_hostlist("n[1-2],gpu07")
    env = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "5", "SLURM_LOCALID": "0",
           "SLURM_NODEID": "1", "SLURM_STEP_TASKS_PER_NODE": "3,2", "SLURM_STEP_NODELIST": "n[1-2]",
           "SLURM_JOB_ID": "7"}
    info = slurm_launch_info(env)
    assert isinstance(info, SlurmLaunch) and (info.rank, info.size, info.local_size) == (3, 5, 2)
    assert info.cross(0) == (1, 2) and info.cross(2) == (-1, 1)  # local rank 2 exists on node 0 only
    assert slurm_launch_info({"SLURM_PROCID": "0"}) is None  # an sbatch script body is not a step


class _Spy(TrainHooks):
    """Records what the loop hands to the hooks; can crash the run at a given global step."""

    def __init__(self, crash_at: int = 0) -> None:
        self.rows: list[int] = []
        self.copy_ids: list[torch.Tensor] = []
        self.crash_at = crash_at
        self.seen = 0

    def on_step(self, per_sample_loss: torch.Tensor, batch: Any) -> None:
        self.seen += 1
        self.rows.append(per_sample_loss.numel())
        self.copy_ids.append(batch.copy_ids)
        if self.crash_at and self.seen == self.crash_at:
            raise KeyboardInterrupt("simulated kill")

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]


def test_enlarged_batch_counts_and_resume_epochs(tmp_path: Path) -> None:
    tl, vl = _loaders(copies=4)
    spy = _Spy()
    r = train(_cfg(), tmp_path, [_Choices(5)] * 4, epochs=2, hooks=spy, dist=SingleDist(),
              train_loader=tl, val_loader=vl)
    assert spy.rows == [8 * 4] * 6  # N x M rows every step; iterations per epoch unchanged
    assert spy.copy_ids[0].tolist() == [0, 1, 2, 3] * 8
    assert int(r.choice_counts.sum()) == 6 * 32 and r.choice_counts.shape == (5,)
    assert [h["train_samples"] for h in r.history] == [96, 96] and r.history[-1]["val_samples"] == 17
    assert r.steps == 6 and (tmp_path / "metrics.jsonl").is_file()
    # a second call with more epochs continues from the checkpoint
    r2 = train(_cfg(), tmp_path, [_Choices(5)] * 4, epochs=3, dist=SingleDist(), train_loader=tl, val_loader=vl)
    assert r2.steps == 9 and [h["epoch"] for h in r2.history] == [0, 1, 2]
    assert int(r2.choice_counts.sum()) == 9 * 32


@pytest.mark.parametrize("every,validated", [(0, [3]), (2, [1, 3]), (1, [0, 1, 2, 3])])
def test_val_every_validates_those_epochs_and_the_last(tmp_path: Path, every: int, validated: list[int]) -> None:
    tl, vl = _loaders(copies=1)
    r = train(_cfg().replace(**{"train.val_every": every}), tmp_path, [_Choices(5)], epochs=4, dist=SingleDist(),
              train_loader=tl, val_loader=vl)
    assert [h["epoch"] for h in r.history if "val_top1" in h] == validated
    assert all("train_loss" in h for h in r.history) and r.history[-1]["val_samples"] == 17


def test_crash_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    cfg = _cfg(**{"train.checkpoint_every_steps": 2})
    ref = train(cfg, tmp_path / "ref", [_Choices(5)], epochs=2, dist=SingleDist(), train_loader=_loaders()[0],
                val_loader=_loaders()[1])
    with pytest.raises(KeyboardInterrupt):  # dies in step 5 (epoch 2); last checkpoint: step 4
        train(cfg, tmp_path / "run", [_Choices(5)], epochs=2, hooks=_Spy(crash_at=5), dist=SingleDist(),
              train_loader=_loaders()[0], val_loader=_loaders()[1])
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 1, 4)
    got = train(cfg, tmp_path / "run", [_Choices(5)], epochs=2, dist=SingleDist(), train_loader=_loaders()[0],
                val_loader=_loaders()[1])
    assert got.steps == ref.steps == 6 and len(got.history) == len(ref.history) == 2
    assert torch.equal(got.choice_counts, ref.choice_counts)
    for a, b in zip(got.history, ref.history, strict=True):
        assert a["train_samples"] == b["train_samples"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    wa = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    wb = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["model"]
    for k in wb:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5), k


def test_schedule_span_continues_one_schedule(tmp_path: Path) -> None:
    """A run of epochs 2..4 of a 4-epoch schedule (the AWS fine-tune under finetune_schedule:
    continue) steps through the same lrs as the last two epochs of the whole schedule, from the
    other run's weights and without a second warm-up."""
    cfg = _cfg(**{"train.warmup_epochs": 1.0})
    whole = train(cfg, tmp_path / "whole", [_Choices(5)], epochs=4, dist=SingleDist(), train_loader=_loaders()[0],
                  val_loader=_loaders()[1])
    first = train(cfg, tmp_path / "first", [_Choices(5)], epochs=2, schedule_span=(0, 4), dist=SingleDist(),
                  train_loader=_loaders()[0], val_loader=_loaders()[1])
    rest = train(cfg, tmp_path / "rest", [_Choices(5)], epochs=2, schedule_span=(2, 4), init_from=first.checkpoint,
                 dist=SingleDist(), train_loader=_loaders()[0], val_loader=_loaders()[1])
    lrs = [h["lr"] for h in whole.history]
    assert [h["lr"] for h in first.history] == pytest.approx(lrs[:2])
    assert [h["lr"] for h in rest.history] == pytest.approx(lrs[2:])
    assert rest.steps == 6  # its own steps: the weights came from `first`, the counter did not
    with pytest.raises(ValueError, match="not inside a schedule of 3 epochs"):
        train(cfg, tmp_path / "bad", [_Choices(5)], epochs=2, schedule_span=(2, 3), dist=SingleDist(),
              train_loader=_loaders()[0], val_loader=_loaders()[1])


def test_checkpointable_requeues_same_call() -> None:
    job = CheckpointableTraining(run_final)
    sub = job.checkpoint("cfg", "runs/x", "uniform")
    assert sub.function is job and sub.args == ("cfg", "runs/x", "uniform")


def test_train_errors_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="yields no batches"):
        train(_cfg(), tmp_path, [], epochs=1, dist=SingleDist(), train_loader=SyntheticLoader(8, 0),
              val_loader=SyntheticLoader(8, 1))
    with pytest.raises(FileNotFoundError, match="policy.json"):
        run_final(_cfg(), tmp_path, "nowhere/policy.json", dist=SingleDist())
    assert math.isfinite(scaled_lr(_cfg(), None, 1, 1))


def test_fp16_images_need_amp_at_config_load() -> None:
    """data.fp16 without train.amp would send float16 images into float32 weights on CUDA."""
    with pytest.raises(ValueError, match="data.fp16: true needs train.amp: true"):
        Config().replace(**{"data.fp16": True, "train.amp": False})
    assert Config().replace(**{"data.fp16": True, "train.amp": True}).data.fp16
    with pytest.raises(ValueError, match="train.amp_dtype must be"):
        Config().replace(**{"train.amp_dtype": "float8"})
    with pytest.raises(ValueError, match="dist.compression must be"):
        Config().replace(**{"dist.compression": "int8"})


def test_channels_last_images_are_not_copied() -> None:
    """A batch already in channels_last (the GPU loaders' layout) goes to the model as it is."""
    from hpcaug.train.step import prepare_images

    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert prepare_images(x, torch.device("cpu"), channels_last=True).data_ptr() == x.data_ptr()
    y = torch.randn(4, 3, 8, 8)  # NCHW: one conversion
    z = prepare_images(y, torch.device("cpu"), channels_last=True)
    assert z.is_contiguous(memory_format=torch.channels_last) and torch.equal(z, y)
    assert prepare_images(x.half(), torch.device("cpu"), channels_last=False).dtype == torch.float32


def test_micro_batches_needed_for_the_rows_of_a_pass() -> None:
    from hpcaug.train.memory import micro_batches_needed
    from hpcaug.train.step import rows_advice

    gib, mib = float(1 << 30), float(1 << 20)
    # 1,024 rows at 100 MiB each with 10 GiB fixed on 73.6 GiB usable: two passes of 512 rows fit
    assert micro_batches_needed(1024, 10 * gib, 100 * mib, 73.6 * gib) == 2
    assert micro_batches_needed(256, 10 * gib, 100 * mib, 73.6 * gib) == 1
    assert micro_batches_needed(8, 80 * gib, 100 * mib, 73.6 * gib) == 0  # not even one row
    msg = rows_advice(1024, 1, "CUDA ran out of memory")
    assert "1024 rows per GPU" in msg and "train.micro_batches" in msg and "data.batch_size" in msg


def test_progress_reads_the_loss_only_at_log_intervals(tmp_path: Path) -> None:
    """Each float() of a device tensor is a host sync; the loop hands the loss over every step."""
    from hpcaug.train.progress import Progress

    class Loss:
        reads = 0

        def __float__(self) -> float:
            Loss.reads += 1
            return 1.0

    p = Progress(tmp_path, True, log_interval=5, world=1)
    p.start_epoch(0, 1, 12, 0)
    for i in range(1, 13):
        p.step(i, i, Loss(), 0.1, 8)  # type: ignore[arg-type]
    p.close()
    assert Loss.reads == 3  # steps 5, 10 and the epoch's last (12)


def test_train_synthetic_runs_the_real_loop_and_resumes(tmp_path: Path) -> None:
    """The entry point for device smoke checks: N steps on in-memory data, micro-batches and
    resume included (on CPU here; `device="cuda"` on a GPU node)."""
    from hpcaug.train.synthetic import train_synthetic

    cfg = _cfg(**{"data.image_size": 16, "train.micro_batches": 2, "augment.copies": 2})
    r = train_synthetic(cfg, tmp_path, steps=3, num_classes=4)
    assert r.steps == 3 and r.history[0]["train_samples"] == 3 * 8 * 2
    assert int(r.choice_counts.sum()) == 3 * 8 * 2
    r2 = train_synthetic(cfg, tmp_path, steps=3, epochs=2, num_classes=4)  # continues from the checkpoint
    assert r2.steps == 6 and len(r2.history) == 2

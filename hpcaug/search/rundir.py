"""The AWS run directory (docs/architecture.md section 5): paths, atomic writes, state queries.

Layout (R = cfg.run_path):
    R/config.json                      the config the run was started with
    R/shared/checkpoint.pt, history.json, done.json
    R/rounds/<r>/theta.pt              theta used by round r (round 0: zeros; round r>0: update r-1)
    R/rounds/<r>/ppo_state.pt          Adam state + baseline the update of round r starts from
    R/rounds/<r>/results/<traj>.json   one per finetune task (reward, accuracies, choice counts)
    R/rounds/<r>/finetune/<traj>/      that task's training dir (checkpoint deleted once done)
    R/rounds/<r>/update.json           rewards, baseline, entropy, PPO stats (update r is done)
    R/final/...                        the final training (train.stages.run_final)
    R/policy.json                      the searched policy (after the last update)
    R/jobs/<key>.json                  SLURM job ids the submitter recorded (resume, no duplicates)
    R/logs/                            submitit logs

Every file is written atomically (temp file in the same directory + os.replace), so a reader
sees either nothing or a whole file, and a killed writer leaves no half file behind.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from hpcaug._atomic import atomic_write, atomic_write_bytes
from hpcaug.config import Config, to_dict

# Config keys that may differ between the run's first start and a resume: they change where
# and how jobs run, not what the search computes. Everything else must match.
RESUMABLE_KEYS = (
    "cluster.",
    "run_dir",
    "data.workers",
    "train.log_interval",
    "aws.rounds",  # more rounds extend a finished search; fewer stop it earlier
    "aws.quorum",  # lowering it lets a round with lost trajectories go on
)


def format_ranges(ids: Sequence[int]) -> str:
    """Trajectory ids in SLURM array syntax: [0, 1, 2, 5] -> '0-2,5'."""
    ids = sorted(ids)
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out) or "none"


def write_json(path: Path, obj: Any) -> None:
    """Atomically write obj as indented JSON."""
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    atomic_write_bytes(path, data)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_pt(path: Path, obj: Any) -> None:
    """Atomically torch.save obj (tensors, dicts of tensors and plain values)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def read_pt(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ and that a resume may not change, with both values."""
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS):
            continue
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            diffs.append(f"{key}: run has {a.get(key, '<missing>')!r}, config has {b.get(key, '<missing>')!r}")
    return diffs


class RunDir:
    """Paths and state of one AWS search; every stage and the submitter go through this."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # ---- paths ----
    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def shared_dir(self) -> Path:
        return self.root / "shared"

    @property
    def shared_done(self) -> Path:
        return self.shared_dir / "done.json"

    @property
    def shared_checkpoint(self) -> Path:
        return self.shared_dir / "checkpoint.pt"

    @property
    def final_dir(self) -> Path:
        return self.root / "final"

    @property
    def final_done(self) -> Path:
        return self.final_dir / "done.json"

    @property
    def policy_path(self) -> Path:
        return self.root / "policy.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def round_dir(self, r: int) -> Path:
        return self.root / "rounds" / str(r)

    def theta_path(self, r: int) -> Path:
        return self.round_dir(r) / "theta.pt"

    def ppo_state_path(self, r: int) -> Path:
        return self.round_dir(r) / "ppo_state.pt"

    def result_path(self, r: int, traj: int) -> Path:
        return self.round_dir(r) / "results" / f"{traj}.json"

    def finetune_dir(self, r: int, traj: int) -> Path:
        return self.round_dir(r) / "finetune" / str(traj)

    def update_path(self, r: int) -> Path:
        return self.round_dir(r) / "update.json"

    # ---- creation and the config guard ----
    def init(self, cfg: Config, num_params: int) -> None:
        """Create the run dir for cfg, or check that an existing one was started with a compatible config.

        Raises ValueError naming the differing keys when the run was started with another config.
        Writes round 0's theta (zeros: the uniform policy) if it is not there yet.
        """
        new = to_dict(cfg)
        if self.config_path.exists():
            diffs = config_differences(read_json(self.config_path), new)
            if diffs:
                raise ValueError(
                    f"run dir {self.root} was started with a different config:\n  " + "\n  ".join(diffs)
                    + "\nUse the original config (or --set the keys back), or start a new run with "
                    "--set run_dir=<new dir> (or a new `name:`).")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(self.config_path, new)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if not self.theta_path(0).exists():
            write_pt(self.theta_path(0), {"theta": torch.zeros(num_params), "round": 0,
                                           "parametrisation": cfg.aws.parametrisation})

    def check_exists(self) -> None:
        if not self.config_path.exists():
            raise ValueError(f"{self.root} is not an AWS run dir (no config.json): "
                             "run `--stage shared` or `--stage search` first")

    # ---- state ----
    def theta(self, r: int) -> torch.Tensor:
        p = self.theta_path(r)
        if not p.exists():
            hint = "run --stage shared/search first" if r == 0 else f"run `--stage update --round {r - 1}` first"
            raise FileNotFoundError(f"round {r} has no theta yet ({p} missing): {hint}")
        return read_pt(p)["theta"]

    def results(self, r: int) -> dict[int, dict[str, Any]]:
        """All finished trajectories of round r: {traj: result}. Unreadable files are skipped."""
        out: dict[int, dict[str, Any]] = {}
        d = self.round_dir(r) / "results"
        for p in sorted(d.glob("*.json")) if d.exists() else []:
            if p.name.startswith("."):
                continue
            try:
                out[int(p.stem)] = read_json(p)
            except (ValueError, OSError):
                continue
        return out

    def has_result(self, r: int, traj: int) -> bool:
        return self.result_path(r, traj).exists()

    def update_done(self, r: int) -> bool:
        return self.update_path(r).exists()

    def rounds_done(self) -> int:
        """Number of consecutive rounds 0..k-1 whose update has run."""
        r = 0
        while self.update_done(r):
            r += 1
        return r

    # ---- job records (written by the submitter) ----
    def job_record_path(self, key: str) -> Path:
        return self.jobs_dir / f"{key}.json"

    def record_job(self, key: str, job_id: str, **extra: Any) -> None:
        write_json(self.job_record_path(key), {"job_id": str(job_id), **extra})

    def recorded_job(self, key: str) -> dict[str, Any] | None:
        p = self.job_record_path(key)
        return read_json(p) if p.exists() else None

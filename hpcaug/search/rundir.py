"""The AWS run directory (docs/architecture.md section 5): paths, atomic writes, state queries.

Layout (R = cfg.run_path); `RunDir` names each path once, everything else asks it:
    R/config.json                      the run's config (a resume rewrites the keys it may change)
    R/shared/checkpoint.pt, history.json, done.json
    R/rounds/<r>/theta.pt              theta used by round r (round 0: zeros; round r>0: update r-1)
    R/rounds/<r>/ppo_state.pt          Adam state + baseline the update of round r starts from
    R/rounds/<r>/results/<traj>.json   one per finetune task (reward, accuracies, choice counts)
    R/rounds/<r>/late/<traj>.json      a result that arrived after the round's update: kept, not counted
    R/rounds/<r>/finetune/<traj>/      that task's training dir (checkpoint deleted once done)
    R/rounds/<r>/update.json           rewards, baseline, entropy, PPO stats (update r is done)
    R/final/...                        the final training (train.stages.run_final)
    R/policy.json, search_state.json   the searched policy (after each update) and where it came from
    R/jobs/<key>/<job id>.json         every SLURM submission of a step (resume, no duplicates, status)
    R/jobs/<key>.json                  (run dirs from before jobs/<key>/: the step's one record, read as one)
    R/logs/                            submitit logs
    R/report/                          hpcaug.report's output
    R/advaa/checkpoint.pt              an AdvAA run (instead of shared/ and rounds/): its training,
    R/advaa/epochs.jsonl               one record per epoch (policies, losses, rewards, entropy),
    R/advaa/last_policies.json         the last recorded epoch's M policies

Every file is written atomically (temp file in the same directory + os.replace), so a reader
sees either nothing or a whole file, and a killed writer leaves no half file behind.
hpcaug.search.runview reads a whole run dir at once (report, status, the CLI's progress).
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def format_duration(s: float) -> str:
    """Seconds for people: '42.0 s', '12.5 min', '3.20 h'."""
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def quorum_size(quorum: float, per_round: int) -> int:
    """Results a round's update needs: ceil(aws.quorum x aws.trajectories_per_round), at least 1."""
    return max(1, math.ceil(quorum * per_round - 1e-9))


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


# Config fields added after run dirs were started with hpcaug: a run dir without the key ran
# with this value (any other missing key ran with the field's default).
LEGACY_VALUES = {"aws.trajectory": "per_image"}


def _current_spellings(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened config.json with values hpcaug has renamed since written as they are now:
    augment.policy autoaugment_imagenet -> autoaugment-imagenet, and randaugment (n and m from
    augment.randaugment_n / randaugment_m, defaults 2 and 9) -> randaugment-n<N>-m<M>
    (hpcaug/policy_names.py refuses the old spellings in a config)."""
    policy = flat.get("augment.policy")
    if policy == "autoaugment_imagenet":
        return {**flat, "augment.policy": "autoaugment-imagenet"}
    if policy == "randaugment":
        n, m = flat.get("augment.randaugment_n", 2), flat.get("augment.randaugment_m", 9)
        return {**flat, "augment.policy": f"randaugment-n{n}-m{m}"}
    return flat


def is_resumable(key: str) -> bool:
    """Whether a resume may change the dotted config key (RESUMABLE_KEYS)."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ and that a resume may not change, with both values.

    A key the run has but hpcaug no longer knows is ignored (nothing reads it); a key the run
    lacks (added since) counts as its LEGACY_VALUES entry or the field's default; a value
    spelled as hpcaug spelled it before counts as its current spelling (_current_spellings)."""
    a, b = _current_spellings(_flatten(old)), _flatten(new)
    defaults = _flatten(to_dict(Config()))
    diffs = []
    for key in sorted(b):
        if is_resumable(key):
            continue
        was = a[key] if key in a else LEGACY_VALUES.get(key, defaults.get(key, "<missing>"))
        if was != b[key]:
            diffs.append(f"{key}: run has {was!r}{'' if key in a else ' (before the key existed)'}, "
                         f"config has {b[key]!r}")
    return diffs


class RunDir:
    """The layout of one search's run directory: every path is a name here, and the stages, the
    submitter and the readers (hpcaug.search.runview: report, status, progress) go through it."""

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
    def shared_history(self) -> Path:
        return self.shared_dir / "history.json"

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
    def search_state_path(self) -> Path:
        return self.root / "search_state.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def advaa_dir(self) -> Path:
        """An AdvAA run's records and checkpoint (hpcaug.search.advaa) instead of shared/ and rounds/."""
        return self.root / "advaa"

    @property
    def advaa_records(self) -> Path:
        """One JSON line per finished AdvAA epoch, oldest first."""
        return self.advaa_dir / "epochs.jsonl"

    @property
    def advaa_policies(self) -> Path:
        """The last recorded epoch's M policies (JSON)."""
        return self.advaa_dir / "last_policies.json"

    def read_advaa_records(self) -> list[dict[str, Any]]:
        """The per-epoch records of an AdvAA run, oldest first ([] before the first epoch ends)."""
        path = self.advaa_records
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def checkpoint_in(self, stage_dir: Path) -> Path:
        """The checkpoint train() keeps in a stage's directory while it runs."""
        from hpcaug.train.loop import CHECKPOINT_NAME  # the training loop names it; imported when asked for

        return stage_dir / CHECKPOINT_NAME

    @property
    def rounds_dir(self) -> Path:
        return self.root / "rounds"

    def round_dir(self, r: int) -> Path:
        return self.rounds_dir / str(r)

    def theta_path(self, r: int) -> Path:
        return self.round_dir(r) / "theta.pt"

    def ppo_state_path(self, r: int) -> Path:
        return self.round_dir(r) / "ppo_state.pt"

    def results_dir(self, r: int) -> Path:
        return self.round_dir(r) / "results"

    def result_path(self, r: int, traj: int) -> Path:
        return self.results_dir(r) / f"{traj}.json"

    def late_dir(self, r: int) -> Path:
        """Results that arrived after their round's update: kept, shown, never counted."""
        return self.round_dir(r) / "late"

    def late_path(self, r: int, traj: int) -> Path:
        return self.late_dir(r) / f"{traj}.json"

    def finetune_dir(self, r: int, traj: int) -> Path:
        return self.round_dir(r) / "finetune" / str(traj)

    def update_path(self, r: int) -> Path:
        return self.round_dir(r) / "update.json"

    def update_lock_path(self, r: int) -> Path:
        return self.round_dir(r) / ".update.lock"

    def job_records_dir(self, key: str) -> Path:
        return self.jobs_dir / key

    def legacy_job_record_path(self, key: str) -> Path:
        """jobs/<key>.json: the one record per step of run dirs from before jobs/<key>/ (read, never written)."""
        return self.jobs_dir / f"{key}.json"

    # ---- creation and the config guard ----
    def init(self, cfg: Config, num_params: int, *, record_config: bool = True) -> None:
        """Create the run dir for cfg, or check that an existing one was started with a compatible config.

        Raises ValueError naming the differing keys when the run was started with another config.
        A resume that passes the check rewrites config.json with cfg (record_config), so status,
        report and progress read the aws.rounds, aws.quorum and cluster.* the run goes on with,
        and config.json stays a valid --config (old spellings written as they are now). A job
        that may run after a later resume (it carries the config of its submission) passes
        record_config=False. Writes round 0's theta (zeros: the uniform policy) if it is not there yet.
        """
        new = json.loads(json.dumps(to_dict(cfg)))  # as config.json holds it (tuples as lists)
        if self.config_path.exists():
            old = read_json(self.config_path)
            diffs = config_differences(old, new)
            if diffs:
                raise ValueError(
                    f"run dir {self.root} was started with a different config:\n  " + "\n  ".join(diffs)
                    + "\nUse the original config (or --set the keys back), or start a new run with "
                    "--set run_dir=<new dir> (or a new `name:`).")
            if record_config and old != new:
                # the check passed: new differs in keys a resume may change, keys added or dropped
                # since the run started, and old spellings only
                write_json(self.config_path, new)
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

    def round_indices(self) -> list[int]:
        """The rounds that have a directory, in order."""
        d = self.rounds_dir
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []

    def results(self, r: int) -> dict[int, dict[str, Any]]:
        """All finished trajectories of round r: {traj: result}. Unreadable files are skipped."""
        return _read_dir(self.results_dir(r))

    def late_results(self, r: int) -> dict[int, dict[str, Any]]:
        """Trajectories of round r whose result came after the round's update (not counted)."""
        return _read_dir(self.late_dir(r))

    @contextmanager
    def update_lock(self, r: int) -> Iterator[None]:
        """An exclusive flock on round r: its update and the results written into it take turns,
        so a result is either counted by the update or recorded as late, never lost between."""
        path = self.update_lock_path(r)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def write_result(self, r: int, traj: int, result: dict[str, Any]) -> bool:
        """Write a fine-tune's result into round r; False when the round was updated meanwhile:
        then it goes to late/<traj>.json (kept and shown by status and report, not counted)."""
        with self.update_lock(r):
            late = self.update_done(r)
            write_json(self.late_path(r, traj) if late else self.result_path(r, traj), result)
        return not late

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

    # ---- job records (written by the submitter; every submission is kept) ----
    def record_job(self, key: str, job_id: str, **extra: Any) -> None:
        """Record a submission of step `key` (shared, finetune-R, update-R, final, advaa): one file
        per submission under jobs/<key>/, so a resubmission never hides the earlier ones."""
        write_json(self.job_records_dir(key) / f"{job_id}.json",
                   {"job_id": str(job_id), "submitted": time.time(), **extra})

    def job_records(self, key: str) -> list[dict[str, Any]]:
        """Every submission of step `key`, oldest first (a legacy jobs/<key>.json is one of them;
        a record of the same job under jobs/<key>/ replaces it)."""
        found = [*_read_dir_any(self.legacy_job_record_path(key)), *_read_dir_any(self.job_records_dir(key))]
        recs = {str(v["job_id"]): v for v in found if isinstance(v, dict) and "job_id" in v}
        return sorted(recs.values(), key=lambda v: (float(v.get("submitted", 0.0)), int(v["job_id"]) if
                                                    str(v["job_id"]).isdigit() else 0))

    def withdraw_job(self, key: str, job_id: str, reason: str) -> None:
        """Mark a recorded submission as cancelled by the submitter itself (its tasks are not failures)."""
        rec = next(r for r in self.job_records(key) if str(r["job_id"]) == str(job_id))
        write_json(self.job_records_dir(key) / f"{job_id}.json", {**rec, "withdrawn": reason})

    def recorded_job(self, key: str) -> dict[str, Any] | None:
        """The latest submission of step `key`, None if it was never submitted."""
        recs = self.job_records(key)
        return recs[-1] if recs else None

    def all_job_records(self) -> dict[str, list[dict[str, Any]]]:
        """{step key: its submissions, oldest first} for every step ever submitted."""
        d = self.jobs_dir
        # jobs/<key>/ and legacy jobs/<key>.json files
        keys = {p.stem if p.suffix == ".json" else p.name for p in d.iterdir()} if d.is_dir() else set()
        return {k: recs for k in sorted(keys) if not k.startswith(".") and (recs := self.job_records(k))}


def _read_dir_any(d: Path) -> list[Any]:
    """The readable JSON files of a directory, or the one file `d` (hidden temp files and
    unreadable ones skipped)."""
    out = []
    for p in [d] if d.is_file() else sorted(d.glob("*.json")) if d.is_dir() else []:
        if p.name.startswith("."):
            continue
        try:
            out.append(read_json(p))
        except (ValueError, OSError):
            continue
    return out


def _read_dir(d: Path) -> dict[int, dict[str, Any]]:
    """{int(stem): content} of a directory of <traj>.json files; unreadable files are skipped."""
    out: dict[int, dict[str, Any]] = {}
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        if p.name.startswith(".") or not p.stem.isdigit():
            continue
        try:
            v = read_json(p)
        except (ValueError, OSError):
            continue
        if isinstance(v, dict):
            out[int(p.stem)] = v
    return out

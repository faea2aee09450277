"""A run dir read at once, read-only: the one model that report, status and the CLI's progress use.

    run = read_run("runs/demo")          # AWSRun or AdvAARun; ValueError for anything else
    run.rounds[r].results / .update / .theta / .late, run.shared, run.final, run.jobs

Paths come from `RunDir` (hpcaug.search.rundir); this module never writes. Every JSON file is
exposed as the dict the stage wrote (extra keys pass through), a missing or unreadable file as
None (a partial run), and thetas are loaded only when asked for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hpcaug.search.rundir import RunDir, quorum_size, read_json, read_pt

__all__ = ["RoundState", "AWSRun", "AdvAARun", "read_run"]


def _read(path: Path) -> Any | None:
    """JSON content, or None when the file is missing or unreadable (a partial run)."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@dataclass
class RoundState:
    """What the run dir holds about AWS round `index` (any part may be missing in a partial run)."""

    index: int
    theta_path: Path
    theta_mtime: float | None = None  # None: no theta.pt (yet)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # traj -> results/<traj>.json
    result_mtimes: dict[int, float] = field(default_factory=dict)
    late: dict[int, dict[str, Any]] = field(default_factory=dict)  # traj -> late/<traj>.json (not counted)
    late_mtimes: dict[int, float] = field(default_factory=dict)
    update: dict[str, Any] | None = None  # update.json (None until update `index` ran)
    update_mtime: float | None = None
    _theta: Any = field(default=None, repr=False)

    @property
    def theta(self) -> torch.Tensor | None:
        """theta.pt of the round (the policy it sampled from), float64; None if it is not there yet."""
        if self._theta is None and self.theta_mtime is not None:
            try:
                self._theta = read_pt(self.theta_path)["theta"].detach().double()
            except Exception:  # noqa: BLE001  a theta being replaced: treat as not there yet
                return None
        return self._theta

    @property
    def updated(self) -> bool:
        return self.update is not None

    @property
    def rewards(self) -> list[float]:
        """The round's rewards: update.json's once updated, else those of the results so far."""
        if self.update is not None:
            return [float(x) for x in self.update["rewards"]]
        return [float(v["reward"]) for _, v in sorted(self.results.items())]

    @property
    def uncounted(self) -> dict[int, dict[str, Any]]:
        """Results the round's update did not count: late ones, and (runs from before late/ existed)
        result files the update's trajectory list leaves out."""
        out = dict(self.late)
        if self.update is not None:
            counted = set(self.update.get("trajectories") or [])
            out.update({t: v for t, v in self.results.items() if t not in counted})
        return dict(sorted(out.items()))


@dataclass
class _Run:
    """What every run dir read has: its layout, its config.json, its SLURM submissions."""

    rd: RunDir
    config: dict[str, Any]
    jobs: dict[str, list[dict[str, Any]]]  # step key -> every SLURM submission of it, oldest first
    config_mtime: float

    @property
    def root(self) -> Path:
        return self.rd.root

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.root.name))

    def latest_job(self, key: str) -> dict[str, Any] | None:
        recs = self.jobs.get(key) or []
        return recs[-1] if recs else None


@dataclass
class AWSRun(_Run):
    """An AWS search run dir, read once."""

    rounds: list[RoundState] = field(default_factory=list)  # every round with a theta, a result or an update
    shared: dict[str, Any] | None = None  # shared/done.json
    final: dict[str, Any] | None = None  # final/done.json
    shared_mtime: float | None = None
    final_mtime: float | None = None
    kind: str = "aws"

    @property
    def parametrisation(self) -> str:
        return str(self.config.get("aws", {}).get("parametrisation", "joint"))

    @property
    def design(self) -> str:
        """What a fine-tune evaluates: 'op_set K=16' or 'per_image' (run dirs from before the key: per_image)."""
        a = self.config.get("aws", {})
        kind = str(a.get("trajectory", "per_image"))
        return f"op_set K={a.get('ops_per_trajectory')}" if kind == "op_set" else kind

    @property
    def planned_rounds(self) -> int:
        return int(self.config.get("aws", {}).get("rounds", 0))

    @property
    def trajectories_per_round(self) -> int:
        return int(self.config.get("aws", {}).get("trajectories_per_round", 1))

    @property
    def quorum(self) -> int:
        """Results a round's update needs (aws.quorum x trajectories per round)."""
        return quorum_size(float(self.config.get("aws", {}).get("quorum", 1.0)), self.trajectories_per_round)

    @property
    def rounds_done(self) -> int:
        """Consecutive updated rounds 0..k-1 (as RunDir.rounds_done counts them)."""
        k = 0
        for r in self.rounds:
            if r.index != k or r.update is None:
                break
            k += 1
        return k

    @property
    def current(self) -> RoundState | None:
        """The first round not updated yet, if the search has one left (it may have no file yet)."""
        k = self.rounds_done
        if k >= self.planned_rounds:
            return None
        return self.round(k)

    def round(self, r: int) -> RoundState:
        """Round r's state (an empty one when nothing of it exists yet)."""
        return next((s for s in self.rounds if s.index == r), RoundState(r, self.rd.theta_path(r)))

    def round_trajectories(self, r: int) -> range:
        t = self.trajectories_per_round
        return range(r * t, (r + 1) * t)

    def thetas(self) -> list[tuple[int, torch.Tensor]]:
        """(round, theta) for every round whose theta.pt exists."""
        return [(r.index, th) for r in self.rounds if (th := r.theta) is not None]

    def stage_started(self, which: str) -> str:
        """'started (a checkpoint is there, not done)', 'started (not done)' or 'not started' for
        shared / final (a stage without its done.json)."""
        d = self.rd.shared_dir if which == "shared" else self.rd.final_dir
        return _dir_progress(d, self.rd.checkpoint_in(d))

    def round_start(self, r: int) -> float | None:
        """When round r could start: shared/done.json for round 0, else update r-1 (file timestamps)."""
        if r == 0:
            return self.shared_mtime
        prev = next((s for s in self.rounds if s.index == r - 1), None)
        if prev is not None and prev.update_mtime is not None:
            return prev.update_mtime
        return self.round(r).theta_mtime

    def round_durations(self) -> list[tuple[int, float]]:
        """(round, seconds from the file that started it to its update.json) for updated rounds
        (file modification times: the stages do not record them)."""
        out = []
        for r in self.rounds:
            start = self.round_start(r.index)
            if r.update_mtime is not None and start is not None and r.update_mtime >= start:
                out.append((r.index, r.update_mtime - start))
        return out


@dataclass
class AdvAARun(_Run):
    """An AdvAA run dir, read once."""

    records: list[dict[str, Any]] = field(default_factory=list)  # the epoch records (RunDir.read_advaa_records)
    records_mtime: float | None = None
    kind: str = "advaa"

    @property
    def planned_epochs(self) -> int:
        return int(self.config.get("train", {}).get("epochs", 0))

    def stage_started(self) -> str:
        return _dir_progress(self.rd.advaa_dir, self.rd.checkpoint_in(self.rd.advaa_dir))


def _dir_progress(d: Path, checkpoint: Path) -> str:
    if checkpoint.exists():
        return "started (a checkpoint is there, not done)"
    if d.is_dir() and any(d.iterdir()):
        return "started (not done)"
    return "not started"


def _not_a_run(root: Path, why: str) -> ValueError:
    return ValueError(f"{root} is not an hpcaug run dir ({why}). Pass the run_dir of a search: the directory "
                      "`python -m hpcaug.submit --stage search --config C` writes (default runs/<name>, with "
                      "config.json and rounds/ for AWS, advaa/epochs.jsonl for AdvAA)")


def _read_round(rd: RunDir, r: int) -> RoundState:
    st = RoundState(r, rd.theta_path(r), theta_mtime=_mtime(rd.theta_path(r)))
    st.results = {t: v for t, v in rd.results(r).items() if "reward" in v}
    st.result_mtimes = {t: _mtime(rd.result_path(r, t)) or 0.0 for t in st.results}
    st.late = rd.late_results(r)
    st.late_mtimes = {t: _mtime(rd.late_path(r, t)) or 0.0 for t in st.late}
    st.update = _read(rd.update_path(r))
    st.update_mtime = _mtime(rd.update_path(r)) if st.update is not None else None
    return st


def read_run(run_dir: str | os.PathLike[str]) -> AWSRun | AdvAARun:
    """Read an AWS or AdvAA run dir; ValueError (saying what to pass) for anything else."""
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise _not_a_run(rd.root, "no such directory")
    config = _read(rd.config_path)
    if not isinstance(config, dict):
        raise _not_a_run(rd.root, "no readable config.json")
    jobs, config_mtime = rd.all_job_records(), _mtime(rd.config_path) or 0.0
    if rd.advaa_dir.is_dir():
        return AdvAARun(rd, config, jobs, config_mtime, records=rd.read_advaa_records(),
                        records_mtime=_mtime(rd.advaa_records))
    if not rd.rounds_dir.is_dir() and not rd.shared_dir.is_dir():
        raise _not_a_run(rd.root, "config.json but neither rounds/ nor shared/ nor advaa/")
    rounds = [st for st in (_read_round(rd, r) for r in rd.round_indices())
              if st.theta_mtime is not None or st.results or st.late or st.update is not None]
    return AWSRun(rd, config, jobs, config_mtime, rounds=rounds, shared=_read(rd.shared_done),
                  final=_read(rd.final_done), shared_mtime=_mtime(rd.shared_done), final_mtime=_mtime(rd.final_done))

"""Every SLURM query of hpcaug: one set of job states, squeue / sacct / scontrol calls, one poller.

- `JobState` and the state sets: what each SLURM state word means to a search (waiting,
  running, completed, failed), written once for the follower, the submitter and the status.
- `queue_states(ids)`: squeue, the live queue (what is pending or running now); the
  submitter (reuse a queued job) and the follower use it.
- `accounting_states(ids)`: sacct, every job's last state also after it left the queue
  (the status: which tasks failed, which completed).
- `accounting_runs(ids)` / `account(records)`: sacct --duplicates, every run of every job, a
  requeued job's earlier runs included (status and the report's GPU-hours count all of them).
- `QueueWatcher`: one backed-off poller (as submitit's InfoWatcher): squeue at most every
  2 s at first, then less often the longer the chain runs (up to once a minute), so a
  search of hundreds of rounds does not load the controller.
- `cancel`, `release`, `add_dependency(job, dep)`: the changes the submitter makes to queued jobs.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("hpcaug.search")

# SLURM job state words (squeue and sacct print the same ones), by what they mean here.
WAITING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"})
RUNNING_STATES = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
                            "RESIZING"})
ALIVE_STATES = WAITING_STATES | RUNNING_STATES  # still in the queue: it may yet run (again)
FAILED_STATES = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                           "DEADLINE", "REVOKED"})  # ended without doing its work
COMPLETED_STATE = "COMPLETED"


@dataclass(frozen=True)
class JobState:
    """One job (or array task, '123_4') as squeue or sacct reports it."""

    job_id: str
    state: str  # first word of the state ('CANCELLED by 0' -> 'CANCELLED')
    reason: str = ""  # squeue: why it is pending (e.g. Dependency, JobHeldUser, BeginTime)
    name: str = ""  # squeue: the job name
    exit_code: str = ""  # sacct
    elapsed_s: float = 0.0  # sacct: run time of this job (of this run, with accounting_runs)

    @property
    def task(self) -> int | None:
        """The array task index of '123_4', None for a plain job or a whole array."""
        m = re.fullmatch(r"\d+_(\d+)", self.job_id)
        return int(m.group(1)) if m else None

    @property
    def array_id(self) -> str:
        return self.job_id.split("_")[0]

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES

    @property
    def waiting(self) -> bool:
        return self.state in WAITING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def completed(self) -> bool:
        return self.state == COMPLETED_STATE


def parse_elapsed(text: str) -> float:
    """sacct's Elapsed ('[D-]HH:MM:SS' or 'MM:SS') in seconds; 0 for an empty or odd field."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.\d+)?", text.strip())
    if not m:
        return 0.0
    d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)


def _expand_array(job_id: str) -> list[str]:
    """'123_[4-7%2]' (a pending array remainder) -> ['123_4', ..., '123_7']; other ids unchanged."""
    m = re.fullmatch(r"(\d+)_\[([0-9,\-:]+)(?:%\d+)?\]", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split(","):
        rng, _, step = part.partition(":")
        a, _, b = rng.partition("-")
        out += [f"{m.group(1)}_{k}" for k in range(int(a), int(b or a) + 1, int(step or 1))]
    return out


# ---------------------------------------------------------------- squeue: the live queue
def parse_squeue(text: str) -> dict[str, JobState]:
    """`squeue -h -r -o %i|%F|%T|%r|%j` -> {id: JobState}. Array tasks appear as '123_4' and their
    array as '123' (with the state of a task still alive, if any)."""
    out: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 4)
        if len(parts) != 5:
            continue
        jid, array_id, state, reason, name = parts
        state = (state.split() or [""])[0]
        for j in _expand_array(jid):
            out[j] = JobState(j, state, reason, name)
        if array_id != jid and (array_id not in out or state in ALIVE_STATES):
            out[array_id] = JobState(array_id, state, reason, name)
    return out


def queue_states(job_ids: Sequence[str], retry_s: float = 120.0) -> dict[str, JobState]:
    """{id: JobState} of the jobs squeue still knows (a finished job leaves it after MinJobAge).
    A controller that does not answer (restart, failover) is retried for `retry_s` seconds."""
    if not job_ids:
        return {}
    cmd = ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(sorted(set(job_ids))), "-o", "%i|%F|%T|%r|%j"]
    t0 = time.time()
    while True:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0 or "Invalid job id" in proc.stderr:
            return parse_squeue(proc.stdout)
        if time.time() - t0 > retry_s:
            raise RuntimeError(f"squeue failed for {retry_s:.0f} s: {proc.stderr.strip()} "
                               "(is SLURM_CONF set and slurmctld up?)")
        log.warning("squeue failed (%s): retrying", proc.stderr.strip())
        time.sleep(5)


# ---------------------------------------------------------------- sacct: the accounting database
_SACCT_FIELDS = "JobID,State,ExitCode,Elapsed,JobName"


def parse_sacct(text: str) -> dict[str, JobState]:
    """`sacct -n -P -X -o JobID,State,ExitCode,Elapsed,JobName` -> {job id: JobState} (the last
    row of each id); a pending array remainder ('123_[4-7%2]') becomes one entry per task."""
    return {s.job_id: s for s in _sacct_rows(text)}


def _sacct_rows(text: str) -> list[JobState]:
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        state = (parts[1].split() or [""])[0]
        code = parts[2] if len(parts) > 2 else ""
        elapsed = parse_elapsed(parts[3]) if len(parts) > 3 else 0.0
        name = parts[4] if len(parts) > 4 else ""
        rows += [JobState(j, state, name=name, exit_code=code, elapsed_s=elapsed) for j in _expand_array(parts[0])]
    return rows


def _sacct(job_ids: Sequence[str], extra: Sequence[str], timeout: float) -> str:
    if shutil.which("sacct") is None:
        raise RuntimeError("sacct is not on PATH")
    cmd = ["sacct", "-n", "-P", "-X", *extra, "-o", _SACCT_FIELDS, "-j", ",".join(sorted(set(job_ids)))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"sacct did not answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"sacct failed: {proc.stderr.strip() or proc.returncode} (is SLURM_CONF set and "
                           "slurmdbd running?)")
    return proc.stdout


def accounting_states(job_ids: Sequence[str], timeout: float = 15.0) -> dict[str, JobState]:
    """The last state of each job (array jobs expand to their tasks), also after it left the queue.
    RuntimeError says why SLURM did not answer."""
    return parse_sacct(_sacct(job_ids, [], timeout)) if job_ids else {}


def accounting_runs(job_ids: Sequence[str], timeout: float = 15.0) -> list[JobState]:
    """Every run of the jobs (sacct --duplicates), oldest first: a job requeued twice gives three
    rows, the earlier ones in state REQUEUED (or PREEMPTED / NODE_FAIL) with their own elapsed time."""
    return _sacct_rows(_sacct(job_ids, ["-D"], timeout)) if job_ids else []


@dataclass
class Accounting:
    """sacct's view of the jobs a run recorded: every run of every job and array task."""

    runs: list[JobState]  # oldest first

    @property
    def states(self) -> dict[str, JobState]:
        """The current (last) run of each job id / array task."""
        return {s.job_id: s for s in self.runs}

    def rows(self, job_id: str) -> list[JobState]:
        """The current state of a job, or of each task of an array job, in task order."""
        st = self.states
        if job_id in st:
            return [st[job_id]]
        return sorted((s for s in st.values() if s.array_id == job_id and s.task is not None),
                      key=lambda s: s.task or 0)

    def runs_of(self, job_id: str) -> list[JobState]:
        """Every run of a job or of its array tasks (requeued runs included)."""
        return [s for s in self.runs if s.job_id == job_id or (s.array_id == job_id and s.task is not None)]

    def knows(self, job_id: str) -> bool:
        return bool(self.rows(job_id))


def account(records: dict[str, list[dict[str, Any]]], timeout: float = 15.0) -> Accounting:
    """sacct --duplicates for every recorded submission ({step key: [record]}; a record has
    job_id and the job name it was submitted with). Rows of another job that has the same id
    (a SLURM whose ids started again) are dropped by that name. RuntimeError if sacct fails."""
    names = {str(r["job_id"]): r.get("name") for recs in records.values() for r in recs}
    runs = accounting_runs(list(names), timeout)
    return Accounting([s for s in runs if names.get(s.array_id) in (None, s.name)])


# ---------------------------------------------------------------- changing queued jobs
def cancel(job_ids: Sequence[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], check=False, capture_output=True)


def release(job_ids: Sequence[str]) -> None:
    """Let held jobs (sbatch --hold) start."""
    if job_ids:
        subprocess.run(["scontrol", "release", ",".join(job_ids)], check=True, capture_output=True)


def add_dependency(job_id: str, dependency: str) -> bool:
    """Make a pending job also wait for `dependency` ('afterany:123'); False when the job is no
    longer pending (it started or ended), so the dependency could not be added.

    `scontrol update Dependency=` replaces the list: the job's remaining dependencies (squeue
    %E, satisfied ones already dropped) are kept."""
    proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T|%E"], capture_output=True, text=True)
    state, _, deps = proc.stdout.strip().partition("|")
    if proc.returncode != 0 or state not in WAITING_STATES:
        return False
    keep = [re.sub(r"\((un)?fulfilled\)$", "", d) for d in deps.split(",") if d and d != "(null)"]
    for _ in range(2):
        new = ",".join([*keep, dependency])
        upd = subprocess.run(["scontrol", "update", f"JobId={job_id}", f"Dependency={new}"], capture_output=True,
                             text=True)
        if upd.returncode == 0:
            return True
        # a kept dependency on a job the controller has forgotten (ended long ago) is refused: keep
        # only those on jobs still in the queue
        known = queue_states([m.group(1) for d in keep if (m := re.search(r":(\d+)", d))])
        keep = [d for d in keep if (m := re.search(r":(\d+)", d)) and m.group(1) in known]
    log.warning("could not add %s to job %s: %s", dependency, job_id, upd.stderr.strip())
    return False


# ---------------------------------------------------------------- the poller
class QueueWatcher:
    """Live states of a set of jobs, asking squeue at most every `delay` seconds.

    The delay starts at `min_s` and grows with the time the watcher has run (half of it, as
    submitit's InfoWatcher does) up to `max_s`; `states(force=True)` asks at once (e.g. when
    the run dir shows that a step finished)."""

    def __init__(self, job_ids: Sequence[str], min_s: float = 2.0, max_s: float = 60.0) -> None:
        self.job_ids = list(dict.fromkeys(job_ids))
        self.min_s, self.max_s = min_s, max_s
        self._start = time.monotonic()
        self._last = float("-inf")
        self._states: dict[str, JobState] = {}
        self.calls = 0

    @property
    def delay(self) -> float:
        return min(self.max_s, max(self.min_s, (time.monotonic() - self._start) / 2))

    def states(self, force: bool = False) -> dict[str, JobState]:
        if force or time.monotonic() - self._last >= self.delay:
            self._states = queue_states(self.job_ids)
            self._last = time.monotonic()
            self.calls += 1
        return self._states

    def any_alive(self) -> bool:
        return any(self._states[j].alive for j in self.job_ids if j in self._states)

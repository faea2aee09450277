"""Turning AWS stages into jobs: array specs, the plan of a (resumed) search, executors, following a chain.

A plan is the ordered list of steps still to do, read from the run dir's state:
    shared -> [finetune r (array of missing trajectories) -> update r] x rounds -> final
Executors:
- slurm:  every step is submitted up front through submitit with SLURM dependencies
          (finetune r: afterok on what writes theta r; update r: afterany on its array, so a failed
          or cancelled task cannot stall the round; final: afterok on the last update), all with
          --kill-on-invalid-dep=yes so nothing pends forever behind a failed job. A job still in
          the queue from an earlier submission (recorded in R/jobs/) is reused, not duplicated (a
          fine-tune array for the trajectories whose tasks are still queued), and waited for when
          a new step needs what it writes. A submission that fails partway cancels the jobs it had
          queued. SLURM itself is asked only through hpcaug.search.queue.
- local:  submitit's LocalExecutor, one step after the other (it has no dependencies), one task
          per job: its tasks would not form a Horovod group.
- inline: the same functions in this process, one after the other (demo, debugging).
"""
from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import submitit

from hpcaug.config import Config
from hpcaug.search import aws, queue
from hpcaug.search.rundir import RunDir, format_ranges

log = logging.getLogger("hpcaug.search")


# ---------------------------------------------------------------- array specs
_ARRAY_SYNTAX = ("SLURM array syntax is comma-separated ids (>= 0) or ranges START-END[:STEP], then an "
                 "optional %K throttle, e.g. 0-499%20, 0,3,5-7 or 0-15:4")
_ARRAY_PART = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")


def parse_array(spec: str) -> tuple[list[int], int]:
    """'0-499%20' -> (ids, throttle); also '3', '0-3,8,10-11', '0-15:4'. Throttle 0 = none."""
    body, pct, throttle = (x.strip() for x in spec.partition("%"))
    if pct and not throttle.isdigit():
        raise ValueError(f"--array {spec!r}: the throttle after % must be a whole number, got {throttle!r}; "
                         f"{_ARRAY_SYNTAX}")
    if pct and int(throttle) < 1:
        raise ValueError(f"--array {spec!r}: the %K throttle must be >= 1 (leave it out for no limit)")
    ids: list[int] = []
    for part in (p.strip() for p in body.split(",")):
        m = _ARRAY_PART.fullmatch(part)
        if not m:
            raise ValueError(f"--array {spec!r}: {_array_part_error(part)}; {_ARRAY_SYNTAX}")
        a = int(m[1])
        b = a if m[2] is None else int(m[2])
        step = 1 if m[3] is None else int(m[3])
        if b < a:
            raise ValueError(f"--array {spec!r}: range {part} is empty (END < START)")
        if step < 1:
            raise ValueError(f"--array {spec!r}: range {part} has step {step}; the :STEP must be >= 1")
        ids.extend(range(a, b + 1, step))
    return sorted(set(ids)), int(throttle or 0)


def _array_part_error(part: str) -> str:
    if not part:
        return "an empty element (two commas, or a comma at an end)"
    if part.startswith("-"):
        return f"{part!r} is negative: array ids are >= 0"
    if part.count("-") > 1:
        return f"{part!r} has {part.count('-')} '-': a range is START-END[:STEP], one '-'"
    return f"{part!r} is not an id or a range START-END[:STEP]"


def split_by_round(ids: Sequence[int], per_round: int) -> dict[int, list[int]]:
    """Trajectory ids -> {round: ids} with round = id // per_round, rounds in order."""
    out: dict[int, list[int]] = {}
    for i in sorted(ids):
        out.setdefault(i // per_round, []).append(i)
    return out


def check_array(cfg: Config, ids: Sequence[int]) -> None:
    """Array ids must lie in 0 .. rounds x trajectories_per_round - 1."""
    n = cfg.aws.rounds * cfg.aws.trajectories_per_round
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise ValueError(f"--array names trajectory {bad[-1]} but aws.rounds={cfg.aws.rounds} x "
                         f"aws.trajectories_per_round={cfg.aws.trajectories_per_round} allows ids 0-{n - 1}: "
                         "shrink the array or raise aws.rounds (--set aws.rounds=N)")


# ---------------------------------------------------------------- plan
@dataclass
class Step:
    """One job to run: kind in shared | finetune | update | final."""

    kind: str
    round: int = -1
    trajectories: list[int] = field(default_factory=list)
    policy: str | None = None  # final: a policy spec instead of the run's policy.json

    @property
    def key(self) -> str:
        return self.kind if self.round < 0 else f"{self.kind}-{self.round}"

    def describe(self) -> str:
        if self.kind == "finetune":
            return f"finetune round {self.round}: trajectories {format_ranges(self.trajectories)}"
        return self.kind if self.round < 0 else f"{self.kind} round {self.round}"


def missing_trajectories(cfg: Config, rd: RunDir, r: int, ids: Sequence[int] | None = None) -> list[int]:
    ids = aws.round_trajectories(cfg, r) if ids is None else ids
    return [t for t in ids if not rd.has_result(r, t)]


def plan_search(cfg: Config, rd: RunDir, with_final: bool = True) -> list[Step]:
    """Everything a search still has to do, skipping finished stages, rounds and trajectories."""
    steps: list[Step] = []
    if not rd.shared_done.exists():
        steps.append(Step("shared"))
    for r in range(cfg.aws.rounds):
        if rd.update_done(r):
            continue
        todo = missing_trajectories(cfg, rd, r)
        if todo:
            steps.append(Step("finetune", r, todo))
        steps.append(Step("update", r))
    if with_final and not rd.final_done.exists():
        steps.append(Step("final"))
    return steps


def plan_finetune(cfg: Config, rd: RunDir, ids: Sequence[int]) -> list[Step]:
    """Per-round arrays of the given trajectory ids, chained through the updates between them."""
    by_round = split_by_round(ids, cfg.aws.trajectories_per_round)
    steps: list[Step] = []
    rounds = list(by_round)
    for i, r in enumerate(rounds):
        if rd.update_done(r):
            log.warning("round %d is already updated: skipping its trajectories %s", r, format_ranges(by_round[r]))
            continue
        todo = missing_trajectories(cfg, rd, r, by_round[r])
        skipped = sorted(set(by_round[r]) - set(todo))
        if skipped:
            log.info("round %d: trajectories %s already have results: skipped", r, format_ranges(skipped))
        if todo:
            steps.append(Step("finetune", r, todo))
        if i + 1 < len(rounds):  # the next array needs theta of the next round
            steps.append(Step("update", r))
    return steps


# ---------------------------------------------------------------- executors
def _stage_call(step: Step, cfg: Config, run_dir: str) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    if step.kind == "shared":
        return [(aws.run_shared, (cfg, run_dir))]
    if step.kind == "finetune":
        return [(aws.run_finetune, (cfg, run_dir, t)) for t in step.trajectories]
    if step.kind == "update":
        return [(aws.run_update, (cfg, run_dir, step.round))]
    if step.kind == "final":
        return [(aws.run_final, (cfg, run_dir, step.policy))]
    if step.kind == "advaa":
        # advaa and hpcaug.train.stages load the training stack (torchvision, the loaders, ~2 s):
        # imported when a step runs, not by hpcaug.report, which imports this module for stage_resources
        from hpcaug.search.advaa import run_advaa

        return [(run_advaa, (cfg, run_dir))]
    raise ValueError(step.kind)


def _job_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The train helper's Checkpointable wrapper: on timeout/preemption submitit requeues the same
    call, and the stage resumes from its own checkpoint (every stage is idempotent)."""
    from hpcaug.train.stages import CheckpointableTraining  # the training stack: see _stage_call

    return CheckpointableTraining(fn)


def run_inline(cfg: Config, rd: RunDir, steps: Sequence[Step], progress: Callable[[Step], None] | None = None) -> None:
    """Run the steps in this process, in order. A failing finetune task is logged and skipped (the
    update then needs its quorum, as on SLURM); any other failure stops the chain."""
    check_steps(cfg, rd, steps)
    for step in steps:
        log.info("== %s", step.describe())
        for fn, args in _stage_call(step, cfg, str(rd.root)):
            if step.kind == "finetune":
                try:
                    fn(*args)
                except Exception:  # noqa: BLE001  like afterany: the round goes on without it
                    log.error("finetune %s failed (the update needs a quorum):\n%s", args[-1], traceback.format_exc())
            else:
                fn(*args)
        if progress:
            progress(step)


def job_name(cfg: Config, step: Step) -> str:
    return f"{cfg.name}-{step.key}"


def stage_resources(kind: str, nodes: int, gpus_per_node: int, finetune_gpus: int) -> tuple[int, int]:
    """(nodes, GPUs per node) one job of a stage holds: shared, final and advaa span
    cluster.nodes x cluster.gpus_per_node (Horovod), a fine-tune one node with
    cluster.finetune_gpus, the update one CPU. The submitter asks SLURM for this; the report's
    GPU-hours count it."""
    if kind in ("shared", "final", "advaa"):
        return nodes, gpus_per_node
    if kind == "finetune":
        return 1, finetune_gpus
    return 1, 0


def srun_args(cpus_per_task: int, gpus_per_node: int) -> list[str]:
    """The arguments submitit's srun needs beyond its own (slurm/_srun.sh gives the sbatch
    scripts' srun the same): the job's CPUs per task (from Slurm 22.05 srun does not take them
    from sbatch, and every rank would get one core for its loader and torch threads), each rank
    on its own cores, one failing rank ending the step (no rank left hanging in a collective),
    and with GPUs the ones closest to a rank's cores."""
    args = [f"--cpus-per-task={cpus_per_task}", "--cpu-bind=cores", "--kill-on-bad-exit=1"]
    if gpus_per_node > 0:
        args.append("--gpu-bind=closest")
    return args


def make_executor(cfg: Config, rd: RunDir, kind: str, step: Step, cluster: str) -> Any:
    """A submitit executor with the cluster.* parameters of this step kind."""
    c = cfg.cluster
    ex = submitit.AutoExecutor(folder=str(rd.logs_dir / "%j"), cluster=cluster)
    nodes, gpus = stage_resources(step.kind, c.nodes, c.gpus_per_node, c.finetune_gpus)
    timeout = {"shared": c.time_shared, "finetune": c.time_finetune, "update": c.time_update,
               "final": c.time_final, "advaa": c.time_final}[step.kind]
    ntasks = max(1, gpus)
    if cluster == "local":
        # submitit's LocalExecutor starts its tasks without srun: they would not form a Horovod
        # group but run the stage N times into one directory. One task (one GPU at most) instead.
        nodes, ntasks, gpus = 1, 1, min(gpus, 1)
    params: dict[str, Any] = {"timeout_min": timeout, "name": job_name(cfg, step)}
    if step.kind == "update":  # the PPO step: one CPU
        params.update(nodes=1, tasks_per_node=1, cpus_per_task=1)
    else:
        params.update(nodes=nodes, tasks_per_node=ntasks, cpus_per_task=c.cpus_per_task)
        if gpus > 0:
            params["gpus_per_node"] = gpus
    if c.mem_gb > 0:
        params["mem_gb"] = c.mem_gb
    if cluster == "slurm":
        # the requeue signal (--signal=USR2@lead) comes at most a tenth of the time limit before the
        # end: submitit's fixed 90 s would fire at once in a short job and requeue it forever
        from hpcaug.train.stages import requeue_signal_lead_s  # the training stack: see _stage_call

        params["slurm_signal_delay_s"] = requeue_signal_lead_s(timeout)
        params["slurm_srun_args"] = srun_args(params["cpus_per_task"], params.get("gpus_per_node", 0))
        for key, val in (("slurm_partition", c.partition), ("slurm_account", c.account),
                         ("slurm_qos", c.qos), ("slurm_constraint", c.constraint)):
            if val:
                params[key] = val
        if c.setup:
            params["slurm_setup"] = list(c.setup)
    ex.update_parameters(**params)
    return ex


@dataclass
class Submitted:
    step: Step
    job_id: str  # the SLURM job id (for arrays: the array job id)
    reused: bool = False


@dataclass
class Queued:
    """A recorded submission still in the queue; for a fine-tune array, the trajectories whose
    tasks are still pending or running (the ones it will yet deliver)."""

    job_id: str
    trajectories: list[int]


class SubmissionFailed(RuntimeError):
    """sbatch (or a change to a queued job) failed partway through a chain; the jobs the
    submission had queued before were cancelled (the message says which)."""


def queued_jobs(rd: RunDir, keys: Iterable[str]) -> dict[str, list[Queued]]:
    """{step key: its recorded submissions still in the queue, oldest first}, for `keys`.

    Every submission of a step counts, not only the latest. A withdrawn one does not, nor an id
    squeue now shows under another job name (a cluster whose ids started again), nor an array
    none of whose tasks is alive; an array covers only the trajectories of its alive tasks."""
    recs = {k: [r for r in rd.job_records(k) if not r.get("withdrawn")] for k in dict.fromkeys(keys)}
    states = queue.queue_states([str(r["job_id"]) for rs in recs.values() for r in rs])
    out: dict[str, list[Queued]] = {}
    for key, rs in recs.items():
        for rec in rs:
            jid = str(rec["job_id"])
            st = states.get(jid)
            if st is None or not st.alive or rec.get("name") not in (None, st.name):
                continue
            trajectories = [int(t) for t in rec.get("trajectories") or []]
            if key.startswith("finetune-"):
                tasks = {s.task: s.alive for s in states.values() if s.array_id == jid and s.task is not None}
                if tasks:  # (an array of one task is submitted as a plain job: submitit)
                    trajectories = [t for i, t in enumerate(trajectories) if tasks.get(i)]
                if not trajectories:
                    continue
            out.setdefault(key, []).append(Queued(jid, trajectories))
    return out


def _writer_of_theta(r: int) -> str:
    """The step that writes what a fine-tune or update of round r reads: the shared weights for
    round 0, theta r (update r-1) after it."""
    return "shared" if r == 0 else f"update-{r - 1}"


def _prerequisites(steps: Sequence[Step]) -> list[str]:
    """The step keys the steps' jobs may have to wait for, or (finetune r: update r) have to
    change, planned or not: shared/update r-1 and the round's update or fine-tune arrays."""
    keys: list[str] = []
    for s in steps:
        keys.append(s.key)
        if s.kind == "finetune":
            keys += [_writer_of_theta(s.round), f"update-{s.round}"]
        elif s.kind == "update":
            keys += [_writer_of_theta(s.round), f"finetune-{s.round}"]
    return list(dict.fromkeys(keys))


def check_steps(cfg: Config, rd: RunDir, steps: Sequence[Step], queued: Collection[str] = ()) -> None:
    """Refuse (ValueError, before anything runs or is submitted) a step of a round past
    aws.rounds, and a fine-tune or update of round r > 0 without theta r whose update r-1 is
    neither done, nor planned before it, nor still in the queue (`queued`: step keys)."""
    planned: set[str] = set()
    for s in steps:
        if s.round >= cfg.aws.rounds:
            raise ValueError(f"{s.describe()}: round {s.round} is past the search: aws.rounds={cfg.aws.rounds} "
                             f"has rounds 0-{cfg.aws.rounds - 1}; raise aws.rounds (--set aws.rounds=N) to search "
                             "further")
        src = _writer_of_theta(s.round)
        if (s.kind in ("finetune", "update") and s.round > 0 and not rd.theta_path(s.round).exists()
                and src not in planned and src not in queued):
            raise ValueError(f"{s.describe()}: round {s.round} has no theta yet (update {s.round - 1} writes it, and "
                             "it has not run, is not queued and is not part of this submission): run `--stage "
                             f"update --round {s.round - 1}` first, or `--stage search` for the rounds in order")
        planned.add(s.key)


def submit_slurm(cfg: Config, rd: RunDir, steps: Sequence[Step], throttle: int = 0) -> list[Submitted]:
    """Submit all steps up front with dependencies; reuse a recorded job that is still queued.

    What a step waits for may also be a job still queued from an earlier submission (theta's
    update, the round's fine-tune arrays). A queued fine-tune array is reused for the
    trajectories it still covers; the others get a new array. A new array of a round whose
    update job is still queued from an earlier submission is added to that update's
    dependencies, so the update counts it; if that update has already started, the array is
    withdrawn: its results would come after the update. If a submission fails partway, the jobs
    this call had queued are cancelled and withdrawn (SubmissionFailed says which)."""
    queued = queued_jobs(rd, _prerequisites(steps))
    check_steps(cfg, rd, steps, set(queued))
    sub = _Submission(cfg, rd, throttle, queued)
    for step in steps:
        try:
            sub.add(step)
        except BaseException as e:  # also Ctrl-C: no half chain left queued
            sub.cancel_new(step, e)
            raise
    return sub.out


class _Submission:
    """One submit_slurm call: what is queued (pending: step key -> job ids, from this call or
    reused), what it submitted itself (new), the Submitted list it returns (out)."""

    def __init__(self, cfg: Config, rd: RunDir, throttle: int, queued: dict[str, list[Queued]]) -> None:
        self.cfg, self.rd, self.throttle, self.queued = cfg, rd, throttle, queued
        # prerequisites that are not done yet and still queued count as pending from the start
        self.pending: dict[str, list[str]] = {
            k: [q.job_id for q in qs] for k, qs in queued.items()
            if k.startswith("finetune-") or not step_done(cfg, rd, _step_of_key(k))}
        self.new: list[tuple[str, str]] = []
        self.out: list[Submitted] = []

    def add(self, step: Step) -> None:
        alive = self.queued.get(step.key, [])
        if step.kind != "finetune":  # (every queued array of a round stays pending: its update waits for it)
            self.pending.pop(step.key, None)  # the job reused below, or the new one
            if alive:
                self._reuse(step, alive[-1].job_id)
            else:
                self._submit(step)
            return
        covered: set[int] = set()
        for q in alive:  # every queued array of the round, for the planned trajectories it covers
            mine = [t for t in q.trajectories if t in step.trajectories and t not in covered]
            if mine:
                covered.update(mine)
                self._reuse(Step("finetune", step.round, mine), q.job_id)
        rest = [t for t in step.trajectories if t not in covered]
        if rest:
            self._submit(Step("finetune", step.round, rest))

    def _reuse(self, step: Step, job_id: str) -> None:
        log.info("%s: job %s is still queued: reused", step.describe(), job_id)
        if job_id not in self.pending.setdefault(step.key, []):
            self.pending[step.key].append(job_id)
        self.out.append(Submitted(step, job_id, reused=True))

    def _submit(self, step: Step) -> None:
        deps = _dependencies(step, self.pending)
        upd = self.queued.get(f"update-{step.round}") if step.kind == "finetune" else None
        if upd:
            job_id = _submit_before_update(self.cfg, self.rd, step, deps, self.throttle, upd[-1].job_id, self.new)
            if job_id is None:
                return
        else:
            job_id = _submit_step(self.cfg, self.rd, step, deps, self.throttle, self.new)
            log.info("%s: submitted job %s%s", step.describe(), job_id, f" ({', '.join(deps)})" if deps else "")
        self.pending.setdefault(step.key, []).append(job_id)
        self.out.append(Submitted(step, job_id))

    def cancel_new(self, failed: Step, error: BaseException) -> None:
        """Cancel and withdraw every job this call submitted (reused ones stay), then raise
        SubmissionFailed saying which (the caller re-raises `error` itself if it is no Exception)."""
        why = f"submitting {failed.describe()} failed: {str(error).strip() or type(error).__name__}"
        queue.cancel([job_id for _, job_id in self.new])
        for key, job_id in self.new:
            self.rd.withdraw_job(key, job_id, why)
        done = ", ".join(f"{k} (job {j})" for k, j in self.new)
        kept = ", ".join(f"{s.step.key} (job {s.job_id})" for s in self.out if s.reused)
        msg = (f"{why}\n" + (f"cancelled {done}, which this submission had queued before (recorded as withdrawn)"
                             if done else "this submission had queued no job yet")
               + (f"; left queued (submitted before): {kept}" if kept else "")
               + ". Fix the cause and rerun the same command: it submits what is missing.")
        if isinstance(error, Exception):
            raise SubmissionFailed(msg) from error
        log.error("%s", msg)  # Ctrl-C and the like: the caller re-raises it


def _step_of_key(key: str) -> Step:
    kind, _, r = key.partition("-")
    return Step(kind, int(r) if r else -1)


def _submit_before_update(cfg: Config, rd: RunDir, step: Step, deps: list[str], throttle: int,
                          update_job: str, new: list[tuple[str, str]]) -> str | None:
    """Submit a fine-tune array held, make the round's queued update job wait for it too, then
    release it; None (and the array withdrawn, never run) when the update has already started."""
    job_id = _submit_step(cfg, rd, step, deps, throttle, new, hold=True)
    if queue.add_dependency(update_job, f"afterany:{job_id}"):
        queue.release([job_id])
        log.info("%s: submitted job %s%s; the round's queued update (job %s) now waits for it too",
                 step.describe(), job_id, f" ({', '.join(deps)})" if deps else "", update_job)
        return job_id
    queue.cancel([job_id])
    why = f"update {step.round} (job {update_job}) has already started"
    rd.withdraw_job(step.key, job_id, why)
    new.remove((step.key, job_id))
    log.warning("%s: not submitted: %s, their results would come after it and not count. Rerun this command "
                "once it has ended (if it fails its quorum, the rerun resubmits them)", step.describe(), why)
    return None


def _dependencies(step: Step, pending: dict[str, list[str]]) -> list[str]:
    """SLURM dependencies of a step on the jobs queued before it (see the module docstring)."""
    def on(kind: str, key: str) -> list[str]:
        return [f"{kind}:{':'.join(pending[key])}"] if pending.get(key) else []

    if step.kind == "finetune":
        return on("afterok", _writer_of_theta(step.round))
    if step.kind == "update":
        return on("afterany", f"finetune-{step.round}") + on("afterok", _writer_of_theta(step.round))
    if step.kind == "final":
        updates = sorted((int(k.split("-")[1]), k) for k in pending if k.startswith("update-") and pending[k])
        return on("afterok", updates[-1][1] if updates else "shared")
    return []


def _submit_step(cfg: Config, rd: RunDir, step: Step, deps: list[str], throttle: int,
                 new: list[tuple[str, str]], hold: bool = False) -> str:
    """sbatch one step through submitit (a finetune step as one array); record it (and in `new`,
    the submissions of this submit_slurm call); -> job id."""
    ex = make_executor(cfg, rd, "slurm", step, "slurm")
    extra: dict[str, Any] = {"hold": True} if hold else {}
    if deps:
        extra.update({"dependency": ",".join(deps), "kill-on-invalid-dep": "yes"})
    par = throttle or cfg.cluster.array_parallelism
    ex.update_parameters(slurm_additional_parameters=extra,
                         **({"slurm_array_parallelism": par} if par and step.kind == "finetune" else {}))
    calls = _stage_call(step, cfg, str(rd.root))
    if step.kind == "finetune":
        jobs = ex.map_array(_job_fn(calls[0][0]), *[list(col) for col in zip(*[a for _, a in calls], strict=True)])
        job_id = jobs[0].job_id.split("_")[0]
    else:
        job_id = ex.submit(_job_fn(calls[0][0]), *calls[0][1]).job_id
    new.append((step.key, job_id))
    rd.record_job(step.key, job_id, name=job_name(cfg, step), trajectories=step.trajectories,
                  dependency=",".join(deps))
    return job_id


def run_local(cfg: Config, rd: RunDir, steps: Sequence[Step], progress: Callable[[Step], None] | None = None) -> None:
    """submitit's LocalExecutor, one step after the other (finetune tasks of a step in parallel)."""
    check_steps(cfg, rd, steps)
    for step in steps:
        log.info("== %s (local executor)", step.describe())
        ex = make_executor(cfg, rd, "local", step, "local")
        calls = _stage_call(step, cfg, str(rd.root))
        jobs = [ex.submit(_job_fn(fn), *args) for fn, args in calls]
        for job in jobs:
            try:
                job.result()
            except Exception as e:  # noqa: BLE001
                if step.kind != "finetune":
                    raise RuntimeError(f"{step.describe()} failed; log: {job.paths.stderr}") from e
                log.error("finetune job %s failed (the update needs a quorum); log: %s", job.job_id, job.paths.stderr)
        if progress:
            progress(step)


def follow(cfg: Config, rd: RunDir, submitted: Sequence[Submitted], poll_s: float = 2.0,
           progress: Callable[[], None] | None = None, timeout_s: float | None = None) -> bool:
    """Wait until none of the chain's jobs is queued; report progress; True if the last step is done.

    The run dir is read every `poll_s` seconds (progress); SLURM is asked through one
    queue.QueueWatcher, less often the longer the chain runs, and at once when the run dir
    shows the last step done. A job pending with reason DependencyNeverSatisfied (possible only
    if --kill-on-invalid-dep was ignored by the cluster) is cancelled, so the chain never waits
    forever.
    """
    watcher = queue.QueueWatcher([s.job_id for s in submitted])
    cancelled: set[str] = set()
    t0 = time.time()
    while True:
        last_done = _last_step_done(cfg, rd, submitted)
        states = watcher.states(force=last_done)
        stuck = [j for j, s in states.items() if s.waiting and "DependencyNeverSatisfied" in s.reason
                 and j not in cancelled]
        if stuck:
            log.error("job(s) %s can never start (a dependency failed): cancelling them", ", ".join(stuck))
            queue.cancel(stuck)
            cancelled.update(stuck)
        if progress:
            progress()
        if not watcher.any_alive():
            break
        if timeout_s is not None and time.time() - t0 > timeout_s:
            return False
        time.sleep(poll_s)
    return _last_step_done(cfg, rd, submitted) if submitted else True


def _last_step_done(cfg: Config, rd: RunDir, submitted: Sequence[Submitted]) -> bool:
    """Whether the chain's last step is done (a fine-tune step may be several arrays: all of them)."""
    last = [s.step for s in submitted if submitted and s.step.key == submitted[-1].step.key]
    return bool(last) and all(step_done(cfg, rd, s) for s in last)


def step_done(cfg: Config, rd: RunDir, step: Step) -> bool:
    if step.kind == "shared":
        return rd.shared_done.exists()
    if step.kind == "update":
        return rd.update_done(step.round)
    if step.kind == "final":
        return rd.final_done.exists()
    return all(rd.has_result(step.round, t) for t in step.trajectories)

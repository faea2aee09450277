"""Where a search stands: stages, rounds and tasks done / running / failed, and an ETA.

    python -m hpcaug.status RUN_DIR [--no-slurm]

`run_status(run_dir)` reads the run dir (hpcaug.search.runview.read_run) and, when SLURM
answers, the sacct states (hpcaug.search.queue) of the job ids the submitter recorded in
RUN_DIR/jobs/<key>/ (keys: shared, finetune-<r>, update-<r>, final, advaa). Without SLURM (inline / local
executors, or a login node without sacct) it reports from the run dir alone and says so.
Every submission of a step is read and reconciled with the run dir: a trajectory with a
result is done whatever its tasks did, a job no line shows but still queued is listed, a
result that came after its round's update is shown as LATE, and a run with nothing queued
that is not finished is reported stopped, with the command that resumes it. The ETA is the
median time of the finished rounds (from file timestamps; one round slowed by a requeue
does not move it) times the rounds left; for AdvAA the mean recorded epoch time times the
epochs left.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hpcaug.search.queue import Accounting, JobState, account
from hpcaug.search.rundir import RunDir, format_duration, format_ranges
from hpcaug.search.runview import AdvAARun, AWSRun, RoundState, read_run

__all__ = ["run_status", "main"]


def _summarise(rows: list[JobState]) -> str:
    counts: dict[str, int] = {}
    for s in rows:
        counts[s.state] = counts.get(s.state, 0) + 1
    return ", ".join(f"{n} {st}" if len(rows) > 1 else st for st, n in sorted(counts.items()))


def _note(job_id: str, acct: Accounting | None) -> str:
    """'[job 812: 14 COMPLETED, 2 FAILED]' (with requeued runs counted), or '[job 812]' without sacct."""
    if acct is None:
        return f"[job {job_id}]"
    rows = acct.rows(job_id)
    if not rows:
        return f"[job {job_id}: unknown to sacct]"
    runs = acct.runs_of(job_id)
    requeues = len(runs) - len(rows)
    # after a requeue sacct shows the earlier run REQUEUED and the current one PENDING (squeue's
    # reason: BeginTime) until the hold ends
    held = " (SLURM holds a requeued job about 2 min before it may start again)" if any(
        s.waiting and any(r.job_id == s.job_id and r.state == "REQUEUED" for r in runs) for s in rows) else ""
    return f"[job {job_id}: {_summarise(rows)}" + (f"; requeued {requeues}x" if requeues else "") + f"]{held}"


def _submit_command(run: AWSRun, *args: str) -> str:
    """`python -m hpcaug.submit ARGS --config RUN/config.json --set run_dir=RUN` with RUN absolute:
    it resumes this run from any directory (a run started with run_dir "" lives under runs/<name>
    of the directory it was started from)."""
    rd = RunDir(run.rd.root.resolve())
    return shlex.join(["python", "-m", "hpcaug.submit", *args, "--config", str(rd.config_path),
                       "--set", f"run_dir={rd.root}"])


def _job_note(run: AWSRun | AdvAARun, key: str, acct: Accounting | None) -> str:
    rec = run.latest_job(key)
    if rec is None:
        return ""
    why = f" (withdrawn by the submitter: {rec['withdrawn']})" if rec.get("withdrawn") else ""
    return f"  {_note(str(rec['job_id']), acct)}{why}"


def _query(run: AWSRun | AdvAARun, slurm: bool | None) -> tuple[Accounting | None, str]:
    """(sacct's view of every recorded submission or None, a line saying where job states come from)."""
    n = sum(len(v) for v in run.jobs.values())
    if slurm is False:
        return None, "job states: not queried (--no-slurm)"
    if not n:
        if slurm:
            raise RuntimeError(f"no SLURM job ids are recorded in {run.rd.jobs_dir}: the run was not submitted "
                               "to SLURM (inline or local executor)")
        return None, "job states: none recorded (inline or local executor): from the run dir only"
    try:
        return account(run.jobs), f"job states: sacct ({n} recorded submission(s))"
    except RuntimeError as e:
        if slurm:
            raise RuntimeError(f"SLURM is not reachable: {e}") from None
        return None, f"job states: SLURM not reachable ({e}): from the run dir only"


def _task_states(run: AWSRun, r: int, acct: Accounting) -> dict[int, JobState]:
    """Round r's trajectories -> the state of the task that last tried each one, over every
    submission of finetune-r (a resubmitted trajectory has its newest task's state)."""
    out: dict[int, JobState] = {}
    for rec in run.jobs.get(f"finetune-{r}", []):
        if rec.get("withdrawn"):
            continue  # cancelled by the submitter before it ran (its round's update had started)
        trajs = list(rec.get("trajectories") or [])
        for s in acct.rows(str(rec["job_id"])):
            if s.task is not None and s.task < len(trajs):
                out[int(trajs[s.task])] = s
    return out


def _round_line(run: AWSRun, st: RoundState) -> list[str]:
    u = st.update or {}
    lost = u.get("missing") or []
    mean = sum(st.rewards) / len(st.rewards) if st.rewards else float("nan")
    line = (f"  round {st.index}: updated, {len(st.rewards)}/{run.trajectories_per_round} rewards, mean {mean:.4f}, "
            f"baseline {u.get('baseline', float('nan')):.4f}, entropy {u.get('entropy', float('nan')):.3f}")
    late = st.uncounted
    if lost:
        gone = [t for t in lost if t not in late]
        line += f"; lost trajectories {format_ranges(lost)}" + (" (failed or killed, updated without them)" if gone
                                                              else " (updated without them)")
    out = [line]
    if late:
        out.append(f"    LATE results: trajectories {format_ranges(list(late))} finished after the update: kept in "
                   f"{run.rd.late_dir(st.index)}, not counted")
    return out


def _current_round(run: AWSRun, cur: RoundState, acct: Accounting | None, stopped: bool) -> list[str]:
    """The round being searched: results so far, which trajectories are missing and why (sacct)."""
    t, quorum, r = run.trajectories_per_round, run.quorum, cur.index
    missing = [i for i in run.round_trajectories(r) if i not in cur.results]
    tasks = _task_states(run, r, acct) if acct is not None else {}
    by = {kind: [m for m in missing if m in tasks and getattr(tasks[m], kind)]
          for kind in ("failed", "running", "waiting")}
    state = ("stopped" if stopped else "waiting for the update" if not missing
             else "running" if cur.results or by["running"] else "started")
    lines = [f"  round {r}: {state}: {len(cur.results)}/{t} results (the update needs {quorum})"
             + (f"; missing {format_ranges(missing)}" if missing else "") + _job_note(run, f"finetune-{r}", acct)]
    if by["failed"]:
        can = len(cur.results) + len([m for m in missing if m not in by["failed"]])
        lines.append(f"    FAILED tasks: trajectories {format_ranges(by['failed'])}"
                     + ("" if can >= quorum else f"; the quorum ({quorum}) can no longer be met: resubmit with "
                        f"`{_submit_command(run, '--stage', 'finetune', '--round', str(r))}`"))
    for kind, word in (("running", "running"), ("waiting", "queued")):
        if by[kind]:
            lines.append(f"    {word}: trajectories {format_ranges(by[kind])}")
    note = _job_note(run, f"update-{r}", acct)
    if note:
        lines.append(f"    update {r}: {note.strip()}")
    return lines


def _stage_line(run: AWSRun, which: str, acct: Accounting | None) -> str:
    done = run.shared if which == "shared" else run.final
    wall = f" (wall {format_duration(float(done['wall_s']))})" if done and "wall_s" in done else ""
    return f"{which}: {'done' if done is not None else run.stage_started(which)}{wall}{_job_note(run, which, acct)}"


def _shown_jobs(run: AWSRun, cur: RoundState | None) -> set[str]:
    keys = ["shared", "final"] + ([f"finetune-{cur.index}", f"update-{cur.index}"] if cur is not None else [])
    return {str(rec["job_id"]) for k in keys if (rec := run.latest_job(k))}


def _other_alive(run: AWSRun, cur: RoundState | None, acct: Accounting) -> list[str]:
    """Submissions still queued or running that the lines above do not show (an earlier
    submission of a step, a fine-tune of a round already updated, a duplicate update)."""
    shown, out = _shown_jobs(run, cur), []
    for key, recs in run.jobs.items():
        for rec in recs:
            jid = str(rec["job_id"])
            rows = [s for s in acct.rows(jid) if s.alive]
            if jid in shown or not rows:
                continue
            latest = rec is recs[-1]
            out.append(f"  also in the queue: job {jid} ({key}{'' if latest else ', an earlier submission'}): "
                       f"{_summarise(rows)}")
    return out


def _is_stopped(run: AWSRun, acct: Accounting | None) -> bool:
    """Nothing of the run is queued or running (sacct knows every recorded job) and it is not finished."""
    if acct is None or not run.jobs or run.final is not None:
        return False
    ids = [str(r["job_id"]) for recs in run.jobs.values() for r in recs]
    return all(acct.knows(j) for j in ids) and not any(s.alive for j in ids for s in acct.rows(j))


def _aws_status(run: AWSRun, acct: Accounting | None, now: float) -> list[str]:
    lines = [_stage_line(run, "shared", acct), f"rounds: {run.rounds_done} of {run.planned_rounds} updated"]
    updated = [r for r in run.rounds if r.update is not None]
    if len(updated) > 6:
        lost = sum(len((r.update or {}).get("missing") or []) for r in updated[:-3])
        late = sum(len(r.uncounted) for r in updated[:-3])
        lines.append(f"  rounds {updated[0].index}-{updated[-4].index}: updated"
                     + (f", {lost} trajectories lost in all" if lost else "")
                     + (f", {late} LATE results (not counted)" if late else "") + " (see `python -m hpcaug.report`)")
        updated = updated[-3:]
    for r in updated:
        lines += _round_line(run, r)
    cur = run.current
    stopped = _is_stopped(run, acct)
    if cur is not None:
        lines += _current_round(run, cur, acct, stopped)
    lines.append(_stage_line(run, "final", acct))
    if acct is not None:
        lines += _other_alive(run, cur, acct)
    if stopped:
        lines.append(f"stopped: no job of this run is queued or running and the "
                     f"{'search' if cur is not None else 'final training'} is not finished: rerun "
                     f"`{_submit_command(run, '--stage', 'search')}` to resume")
    lines.append(_aws_eta(run, cur, now, stopped))
    return lines


def _aws_eta(run: AWSRun, cur: RoundState | None, now: float, stopped: bool) -> str:
    left = run.planned_rounds - run.rounds_done
    if left <= 0:
        return "ETA: the search is done" + ("" if run.final is not None else " (the final training is not)")
    if stopped:
        return f"ETA: none while stopped ({left} round{'s' if left != 1 else ''} left)"
    durs = sorted(d for _, d in run.round_durations())
    if not durs:
        return f"ETA: unknown until a round has finished ({left} rounds left)"
    # the median: one round slowed by a requeue (SLURM holds a requeued job ~2 min) does not move it
    typical = durs[len(durs) // 2] if len(durs) % 2 else (durs[len(durs) // 2 - 1] + durs[len(durs) // 2]) / 2
    started = run.round_start(cur.index) if cur is not None else None
    into = max(0.0, now - started) if started else 0.0
    eta = max(0.0, typical * left - min(into, typical))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now + eta))
    return (f"ETA: {left} round{'s' if left != 1 else ''} left x median round time {format_duration(typical)} "
            f"(file timestamps, {len(durs)} rounds) = about {format_duration(eta)} more, around {when}; then the "
            "final training")


def _advaa_status(run: AdvAARun, acct: Accounting | None, now: float) -> list[str]:
    n, total = len(run.records), run.planned_epochs
    state = "done" if total and n >= total else ("running or stopped" if n else run.stage_started())
    lines = [f"advaa: {n} of {total} epochs recorded: {state}" + _job_note(run, "advaa", acct)]
    if run.records:
        last = run.records[-1]
        losses = last["mean_loss"]
        lines.append(f"  last epoch {last['epoch']}: mean policy loss {sum(losses) / len(losses):.4f} "
                     f"(min {min(losses):.4f}, max {max(losses):.4f}), controller entropy {last['entropy']:.3f}")
        walls = [float(r.get("train", {}).get("epoch_time_s", 0.0)) for r in run.records]
        walls = [w for w in walls if w > 0]
        if walls and n < total:
            eta = sum(walls) / len(walls) * (total - n)
            mean = format_duration(sum(walls) / len(walls))
            lines.append(f"ETA: {total - n} epochs x mean recorded epoch time {mean} "
                         f"(training only, validation not counted) = about {format_duration(eta)} more, around "
                         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(now + eta))}")
    return lines


def run_status(run_dir: str | Path, *, slurm: bool | None = None, now: float | None = None) -> str:
    """A few lines on where the run stands. slurm: None = ask sacct if reachable, False = never, True = must."""
    run = read_run(run_dir)
    now = time.time() if now is None else now
    acct, source = _query(run, slurm)
    if isinstance(run, AWSRun):
        head = (f"run dir {run.root} (AWS search `{run.name}`, {run.design}, {run.parametrisation}, "
                f"{run.trajectories_per_round} trajectories per round)")
        body = _aws_status(run, acct, now)
    else:
        head = f"run dir {run.root} (Adversarial AutoAugment `{run.name}`)"
        body = _advaa_status(run, acct, now)
    return "\n".join([head, *body, source])


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hpcaug.status RUN_DIR`: stages, rounds and tasks done / running / failed, and an ETA."""
    ap = argparse.ArgumentParser(prog="python -m hpcaug.status", description=main.__doc__)
    ap.add_argument("run_dir", help="the run dir of a search (e.g. runs/demo)")
    ap.add_argument("--no-slurm", action="store_true", help="do not query sacct")
    args = ap.parse_args(argv)
    try:
        print(run_status(args.run_dir, slurm=False if args.no_slurm else None))
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

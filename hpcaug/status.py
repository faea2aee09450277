"""Where a search stands: stages, rounds and tasks done / running / failed, and an ETA.

    python -m hpcaug.status RUN_DIR [--no-slurm]

`run_status(run_dir)` reads the run dir (hpcaug.search.runview.read_run) and, when SLURM
answers, the sacct states (hpcaug.search.queue) of the job ids the submitter recorded in
RUN_DIR/jobs/<key>/ (keys: shared, finetune-<r>, update-<r>, final, advaa). Without SLURM (inline / local
executors, or a login node without sacct) it reports from the run dir alone and says so.
The ETA is the mean time of the finished rounds (from file timestamps) times the rounds
left; for AdvAA the mean recorded epoch time times the epochs left.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from hpcaug.search.queue import JobState, accounting_states
from hpcaug.search.rundir import format_duration, format_ranges
from hpcaug.search.runview import AdvAARun, AWSRun, RoundState, read_run

__all__ = ["run_status", "main"]


def _job_states(job_id: str, states: dict[str, JobState]) -> list[JobState]:
    """The rows of one recorded job: the job itself, or all tasks of an array job."""
    if job_id in states:
        return [states[job_id]]
    return sorted((s for k, s in states.items() if k.startswith(f"{job_id}_")), key=lambda s: s.task or 0)


def _summarise(rows: list[JobState]) -> str:
    counts: dict[str, int] = {}
    for s in rows:
        counts[s.state] = counts.get(s.state, 0) + 1
    return ", ".join(f"{n} {st}" if len(rows) > 1 else st for st, n in sorted(counts.items()))


def _job_note(run: AWSRun | AdvAARun, key: str, states: dict[str, JobState] | None) -> str:
    rec = run.latest_job(key)
    if rec is None:
        return ""
    jid = str(rec["job_id"])
    if states is None:
        return f"  [job {jid}]"
    rows = _job_states(jid, states)
    return f"  [job {jid}: {_summarise(rows) if rows else 'unknown to sacct'}]"


def _query(run: AWSRun | AdvAARun, slurm: bool | None) -> tuple[dict[str, JobState] | None, str]:
    """(states or None, a line saying where job states come from)."""
    ids = [str(recs[-1]["job_id"]) for recs in run.jobs.values()]
    if slurm is False:
        return None, "job states: not queried (--no-slurm)"
    if not ids:
        if slurm:
            raise RuntimeError(f"no SLURM job ids are recorded in {run.rd.jobs_dir}: the run was not submitted "
                               "to SLURM (inline or local executor)")
        return None, "job states: none recorded (inline or local executor): from the run dir only"
    try:
        return accounting_states(ids), f"job states: sacct ({len(ids)} recorded job(s))"
    except RuntimeError as e:
        if slurm:
            raise RuntimeError(f"SLURM is not reachable: {e}") from None
        return None, f"job states: SLURM not reachable ({e}): from the run dir only"


def _finetune_failures(run: AWSRun, r: int, states: dict[str, JobState] | None) -> tuple[list[int], list[int]]:
    """(trajectories whose task failed, trajectories whose task runs) of round r, from sacct."""
    rec = run.latest_job(f"finetune-{r}")
    if rec is None or states is None:
        return [], []
    trajs = list(rec.get("trajectories") or [])
    failed, running = [], []
    for s in _job_states(str(rec["job_id"]), states):
        k = s.task
        if k is None or k >= len(trajs):
            continue
        if s.failed:
            failed.append(int(trajs[k]))
        elif s.state == "RUNNING":
            running.append(int(trajs[k]))
    return failed, running


def _round_line(run: AWSRun, st: RoundState) -> str:
    u = st.update or {}
    lost = u.get("missing") or []
    mean = sum(st.rewards) / len(st.rewards) if st.rewards else float("nan")
    line = (f"  round {st.index}: updated, {len(st.rewards)}/{run.trajectories_per_round} rewards, mean {mean:.4f}, "
            f"baseline {u.get('baseline', float('nan')):.4f}, entropy {u.get('entropy', float('nan')):.3f}")
    if lost:
        line += f"; lost trajectories {format_ranges(lost)} (failed or killed, updated without them)"
    return line


def _aws_status(run: AWSRun, states: dict[str, JobState] | None, now: float) -> list[str]:
    t = run.trajectories_per_round
    quorum = run.quorum
    lines = [f"shared: {'done' if run.shared is not None else run.stage_started('shared')}"
             + (f" (wall {format_duration(float(run.shared['wall_s']))})" if run.shared and "wall_s" in run.shared else "")
             + _job_note(run, "shared", states)]
    done = run.rounds_done
    lines.append(f"rounds: {done} of {run.planned_rounds} updated")
    updated = [r for r in run.rounds if r.update is not None]
    if len(updated) > 6:
        lost = sum(len((r.update or {}).get("missing") or []) for r in updated[:-3])
        lines.append(f"  rounds {updated[0].index}-{updated[-4].index}: updated"
                     + (f", {lost} trajectories lost in all" if lost else "") + " (see `python -m hpcaug.report`)")
        updated = updated[-3:]
    lines += [_round_line(run, r) for r in updated]
    cur = next((r for r in run.rounds if r.update is None), None)
    if cur is not None and done < run.planned_rounds:
        ids = range(cur.index * t, (cur.index + 1) * t)
        missing = [i for i in ids if i not in cur.results]
        failed, running = _finetune_failures(run, cur.index, states)
        state = "waiting for the update" if not missing else ("running" if cur.results or running else "started")
        lines.append(f"  round {cur.index}: {state}: {len(cur.results)}/{t} results (the update needs {quorum})"
                     + (f"; missing {format_ranges(missing)}" if missing else "") + _job_note(run, f"finetune-{cur.index}", states))
        if failed:
            can = len(cur.results) + len([m for m in missing if m not in failed])
            lines.append(f"    FAILED tasks: trajectories {format_ranges(failed)}"
                         + ("" if can >= quorum else f"; the quorum ({quorum}) can no longer be met: resubmit with "
                            f"`python -m hpcaug.submit --stage finetune --round {cur.index} --config ...`"))
        if running:
            lines.append(f"    running: trajectories {format_ranges(running)}")
        note = _job_note(run, f"update-{cur.index}", states)
        if note:
            lines.append(f"    update {cur.index}:{note.strip()}")
    lines.append("final: " + ("done" if run.final is not None else run.stage_started("final"))
                 + (f" (wall {format_duration(float(run.final['wall_s']))})" if run.final and "wall_s" in run.final else "")
                 + _job_note(run, "final", states))
    lines.append(_aws_eta(run, cur, now))
    return lines


def _aws_eta(run: AWSRun, cur: RoundState | None, now: float) -> str:
    left = run.planned_rounds - run.rounds_done
    if left <= 0:
        return "ETA: the search is done" + ("" if run.final is not None else " (the final training is not)")
    durs = [d for _, d in run.round_durations()]
    if not durs:
        return f"ETA: unknown until a round has finished ({left} rounds left)"
    mean = sum(durs) / len(durs)
    started = run.round_start(cur.index) if cur is not None else None
    into = max(0.0, now - started) if started else 0.0
    eta = max(0.0, mean * left - min(into, mean))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now + eta))
    return (f"ETA: {left} round{'s' if left != 1 else ''} left x mean round time {format_duration(mean)} (file timestamps, {len(durs)} rounds) "
            f"= about {format_duration(eta)} more, around {when}; then the final training")


def _advaa_status(run: AdvAARun, states: dict[str, JobState] | None, now: float) -> list[str]:
    n, total = len(run.records), run.planned_epochs
    state = "done" if total and n >= total else ("running or stopped" if n else run.stage_started())
    lines = [f"advaa: {n} of {total} epochs recorded: {state}" + _job_note(run, "advaa", states)]
    if run.records:
        last = run.records[-1]
        losses = last["mean_loss"]
        lines.append(f"  last epoch {last['epoch']}: mean policy loss {sum(losses) / len(losses):.4f} "
                     f"(min {min(losses):.4f}, max {max(losses):.4f}), controller entropy {last['entropy']:.3f}")
        walls = [float(r.get("train", {}).get("epoch_time_s", 0.0)) for r in run.records]
        walls = [w for w in walls if w > 0]
        if walls and n < total:
            eta = sum(walls) / len(walls) * (total - n)
            lines.append(f"ETA: {total - n} epochs x mean recorded epoch time {format_duration(sum(walls) / len(walls))} "
                         f"(training only, validation not counted) = about {format_duration(eta)} more, around "
                         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(now + eta))}")
    return lines


def run_status(run_dir: str | Path, *, slurm: bool | None = None, now: float | None = None) -> str:
    """A few lines on where the run stands. slurm: None = ask sacct if reachable, False = never, True = must."""
    run = read_run(run_dir)
    now = time.time() if now is None else now
    states, source = _query(run, slurm)
    if isinstance(run, AWSRun):
        head = (f"run dir {run.root} (AWS search `{run.name}`, {run.parametrisation}, "
                f"{run.trajectories_per_round} trajectories per round)")
        body = _aws_status(run, states, now)
    else:
        head = f"run dir {run.root} (Adversarial AutoAugment `{run.name}`)"
        body = _advaa_status(run, states, now)
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

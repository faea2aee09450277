# Sourced (from the repository root) by slurm/final_train.sh and slurm/advaa_train.sh:
# requeue the job shortly before its time limit; it resumes from its checkpoint.
#
# A fixed `#SBATCH --signal=B:USR1@600` fires at once in a job whose --time is under 10
# minutes, and the requeued job gets it at once again: it requeues forever. Instead
# `requeue_timer NAME` reads the job's time limit and time left (squeue %l %L) when the job
# starts and sends this script USR1 when REQUEUE_LEAD_S seconds (default 600) are left, the
# lead capped at a tenth of the time limit (a 5-minute job: 30 s before the end), the same
# rule as hpcaug.train.stages.requeue_signal_lead_s for the submitit jobs. The calling script
# gets a USR1 trap that runs `scontrol requeue`. No timer outside SLURM or without a time limit.
# `scancel --batch --signal=USR1 JOBID` requeues a running job by hand.

# squeue's time ([D-][[HH:]MM:]SS) in seconds; fails for UNLIMITED, NOT_SET, INVALID, ...
slurm_seconds() {
  local t=$1 days=0 total=0 part
  case "$t" in "" | *[!0-9:-]*) return 1 ;; esac
  if [[ $t == *-* ]]; then days=${t%%-*}; t=${t#*-}; fi
  local IFS=:
  for part in $t; do total=$(( total * 60 + 10#$part )); done
  echo $(( days * 86400 + total ))
}

# requeue_lead_s LIMIT_S: min(REQUEUE_LEAD_S, LIMIT_S / 10), at least 1
requeue_lead_s() {
  local limit=$1 lead=$(( $1 / 10 ))
  if (( ${REQUEUE_LEAD_S:-600} < lead )); then lead=${REQUEUE_LEAD_S:-600}; fi
  if (( lead < 1 )); then lead=1; fi
  echo "$lead"
}

requeue_timer() {
  local name=$1 times limit left lead delay
  # USR1 (this timer, or a preemption notice) requeues the job; it resumes from its checkpoint
  trap "echo \"$name: time limit or preemption signal; requeueing job \${SLURM_JOB_ID:-?}\" >&2; scontrol requeue \"\$SLURM_JOB_ID\"" USR1
  if [ -z "${SLURM_JOB_ID:-}" ]; then
    return 0
  fi
  if ! times=$(squeue -h -j "$SLURM_JOB_ID" -o "%l %L" 2>/dev/null) || [ -z "$times" ]; then
    echo "$name: squeue does not show job $SLURM_JOB_ID: no requeue before the time limit" >&2
    return 0
  fi
  if ! limit=$(slurm_seconds "${times%% *}") || ! left=$(slurm_seconds "${times##* }"); then
    echo "$name: no time limit ($times): no requeue timer" >&2
    return 0
  fi
  lead=$(requeue_lead_s "$limit")
  delay=$(( left - lead ))
  if (( delay < 1 )); then delay=1; fi
  echo "$name: time limit ${limit} s, ${left} s left: requeue signal in ${delay} s (${lead} s before the end)" >&2
  # $$ is this script's shell, also inside the subshell. The timer holds none of the script's
  # output streams: a `sleep` outliving a timer killed at exit must not keep a pipe open.
  ( trap 'kill "$s" 2>/dev/null; exit 0' TERM; sleep "$delay" & s=$!; wait "$s"; kill -USR1 $$ ) \
    < /dev/null > /dev/null 2>&1 &
  REQUEUE_TIMER_PID=$!
  trap 'kill "$REQUEUE_TIMER_PID" 2>/dev/null || true' EXIT
}

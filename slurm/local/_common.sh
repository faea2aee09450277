# Shared helpers for slurm/local/{start,stop,status}.sh (sourced, not run).
# Every daemon is tracked by its pid file only: we never look processes up by name, so a
# real slurmd/mariadbd on the same host (or another user's cluster) is never touched.
BASE=${BASE:-/tmp/hpcaug-slurm}
export SLURM_CONF=$BASE/etc/slurm.conf
MSOCK=$BASE/munge/munge.socket.2

# alive PIDFILE PATTERN: the pid file names a live (non-zombie) process whose command line
# contains PATTERN (guards against a recycled pid after a reboot or an unclean stop).
alive() {
  local pid st cmd
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/stat" ] || return 1
  st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ "$st" != Z ] || return 1
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$2"* ]]
}

# stop_pid PIDFILE PATTERN: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pid() {
  local pid i
  if ! alive "$1" "$2"; then rm -f "$1"; return 0; fi
  pid=$(cat "$1"); echo "  stopping $2 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 150); do alive "$1" "$2" || break; sleep 0.1; done
  if alive "$1" "$2"; then echo "  $2 ignored SIGTERM for 15 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$1"
}

# live_clients: pids registered under $BASE/clients/ (test sessions using the cluster) that
# are still running; files of dead clients are removed.
live_clients() {
  local f pid
  for f in "$BASE"/clients/*; do
    [ -e "$f" ] || continue
    pid=$(basename "$f")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; else rm -f "$f"; fi
  done
}

# cancel_jobs SAY...: cancel every queued job, announced by `SAY... <ids>`, then wait up to 20 s
# for the queue to empty (1 if it has not). Nothing is said when the queue is empty.
cancel_jobs() {
  local jobs i
  jobs=$(squeue -h -o %A 2>/dev/null | sort -un | tr '\n' ' ')
  [ -n "${jobs// /}" ] || return 0
  "$@" "$jobs"
  scancel $jobs 2>/dev/null || true
  for i in $(seq 100); do [ -z "$(squeue -h 2>/dev/null)" ] && return 0; sleep 0.2; done
  return 1
}

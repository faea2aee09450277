#!/usr/bin/env bash
# Exit 0 when the SLURM-in-a-box under $BASE is up (slurmctld answers), 1 otherwise; prints
# each daemon's state. Quiet with -q.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/_common.sh"
QUIET=0; [ "${1:-}" = -q ] && QUIET=1
show() { [ "$QUIET" = 1 ] || echo "$@"; }
for pair in munge/munged.pid:munged db/mysqld.pid:mariadbd run/slurmdbd.pid:slurmdbd run/slurmctld.pid:slurmctld; do
  if alive "$BASE/${pair%%:*}" "${pair#*:}"; then show "${pair#*:}: running"; else show "${pair#*:}: stopped"; fi
done
for pf in "$BASE"/run/slurmd-*.pid; do
  [ -e "$pf" ] || continue
  n=$(basename "$pf" .pid); n=${n#slurmd-}
  if alive "$pf" "slurmd -N $n"; then show "slurmd $n: running"; else show "slurmd $n: stopped"; fi
done
alive "$BASE/run/slurmctld.pid" slurmctld && [ -f "$SLURM_CONF" ] && scontrol ping >/dev/null 2>&1 || exit 1
show "SLURM_CONF=$SLURM_CONF"

#!/usr/bin/env bash
# Stop the SLURM-in-a-box daemons started by slurm/local/start.sh, by their pid files only.
#   stop.sh              cancel jobs, stop slurmd's, slurmctld, slurmdbd, mariadbd, munged (state kept)
#   stop.sh --if-unused  do nothing while another registered client ($BASE/clients/<pid>) is alive
#   stop.sh --purge      stop, then delete all state (the next start begins from scratch)
# Idempotent: stopping a stopped cluster is a no-op.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/_common.sh"
PURGE=0; IF_UNUSED=0
for a in "$@"; do
  case $a in
    --purge) PURGE=1 ;;
    --if-unused) IF_UNUSED=1 ;;
    *) echo "usage: $0 [--if-unused] [--purge]" >&2; exit 2 ;;
  esac
done
[ -d "$BASE" ] || { echo "slurm-local: nothing under $BASE"; exit 0; }
exec 9>"$BASE/.lock"
flock -w 300 9 || { echo "slurm-local: $BASE/.lock held for 300 s; not stopping" >&2; exit 1; }
if [ "$IF_UNUSED" = 1 ]; then
  users=$(live_clients | tr '\n' ' ')
  if [ -n "${users// /}" ]; then echo "slurm-local: still used by pid(s) $users; left running"; exit 0; fi
fi
echo "slurm-local: stopping the cluster under $BASE"
# 1. cancel jobs so that no job step outlives its slurmd
alive "$BASE/run/slurmctld.pid" slurmctld && cancel_jobs echo "  cancelling jobs:"
# 2. daemons in reverse start order
for pf in "$BASE"/run/slurmd-*.pid; do [ -e "$pf" ] && stop_pid "$pf" slurmd; done
stop_pid "$BASE/run/slurmctld.pid" slurmctld   # saves its state on SIGTERM
stop_pid "$BASE/run/slurmdbd.pid" slurmdbd
stop_pid "$BASE/db/mysqld.pid" mariadbd        # SIGTERM = clean InnoDB shutdown
stop_pid "$BASE/munge/munged.pid" munged
if [ "$PURGE" = 1 ]; then
  echo "  purging $BASE"
  rm -rf "$BASE"/{etc,run,log,state,munge,db,clients,env.sh}
fi
echo "slurm-local: stopped"

# Sourced (from the repository root) by slurm/final_train.sh and slurm/advaa_train.sh:
# `rank_srun NAME CMD...` starts one task per GPU (the job's --ntasks-per-node) running CMD,
# in the background, and prints the srun line it runs.
#
# - --cpus-per-task: from Slurm 22.05 srun no longer takes the job's --cpus-per-task, so
#   without it every rank gets ONE core for its DALI threads, reader threads and torch
#   (hpcaug then also sets torch to one thread). Passed on from SLURM_CPUS_PER_TASK.
# - --cpu-bind=cores: each rank on its own cores (CPU_BIND overrides, e.g. none).
# - --gpu-bind=closest when the job has GPUs: each rank sees the GPUs nearest its cores and
#   takes GPU local_rank modulo their number (GPU_BIND overrides, e.g. none, single:1).
# - --kill-on-bad-exit=1: one rank failing stops every rank (no hung collectives).
# - SRUN_MPI=pmix (or pmi2): an MPI build of Horovod; default: gloo, rendezvous on rank 0.

rank_srun_args() {
  local args=(--kill-on-bad-exit=1)
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
    args+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
  fi
  args+=(--cpu-bind="${CPU_BIND:-cores}")
  if [ "${SLURM_GPUS_ON_NODE:-0}" != 0 ] || [ -n "${GPU_BIND:-}" ]; then
    args+=(--gpu-bind="${GPU_BIND:-closest}")
  fi
  [ -n "${SRUN_MPI:-}" ] && args+=(--mpi="$SRUN_MPI")
  printf '%s\n' "${args[@]}"
}

rank_srun() {
  local name=$1; shift
  local args
  mapfile -t args < <(rank_srun_args)
  echo "$name: srun ${args[*]} $*" >&2
  srun "${args[@]}" "$@" &
}

#!/usr/bin/env bash
# Final / production training: train a network from scratch with a policy (a searched
# runs/<search>/policy.json or a baseline name) as ONE multi-node Horovod job. Every task of
# the srun step is one Horovod rank (one GPU); rank 0 logs and writes RUN_DIR/final/
# (checkpoint.pt, metrics.jsonl, tb/, train.json). docs/training.md explains the loop.
#
#   sbatch slurm/final_train.sh CONFIG POLICY [section.key=value ...]
#   sbatch slurm/final_train.sh configs/imagenet_resnet50_final.yaml runs/imagenet_resnet50_aws/policy.json
#   sbatch slurm/final_train.sh configs/imagenet_resnet50_final.yaml autoaugment-imagenet augment.copies=4
#   sbatch --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 slurm/final_train.sh configs/demo.yaml uniform
#
# Knobs:
#   CONFIG (1st argument)  YAML config. data.batch_size = N images per GPU; augment.copies = M
#                (the N x M enlarged batch: 4 = AWS's EB for ResNet-50); aws.final_epochs
#                (the final stage's length; train.epochs is not used here), train.lr
#                (per train.lr_ref_batch images, scaled linearly with the global batch
#                nodes x ntasks-per-node x N), train.warmup_epochs, train.label_smoothing.
#   POLICY (2nd argument)  a policy .json file or a name: none, uniform, trivialaugment,
#                autoaugment-imagenet, randaugment-n<N>-m<M> (e.g. randaugment-n2-m9; docs/config.md).
#   further arguments      config overrides (section.key=value), e.g. aws.final_epochs=90.
#   RUN_DIR      run directory (default: the config's run_dir, else runs/<name>).
#   HPCAUG_SETUP a shell file sourced first (module load ..., source .venv/bin/activate).
#   PYTHON       the interpreter (default: python).
#   REQUEUE_LEAD_S  requeue this many seconds before the time limit (default 600, at most a tenth of it).
#   Horovod / NCCL variables pass through: HOROVOD_GLOO_IFACE (gloo-only builds: the network
#   interface between nodes, detected if unset), NCCL_SOCKET_IFNAME, HPCAUG_RENDEZVOUS_PORT
#   (port of the gloo rendezvous rank 0 hosts; default derived from the job id).
#   An MPI build of Horovod: set SRUN_MPI=pmix (or pmi2) so srun wires up MPI instead.
#   CPU_BIND / GPU_BIND  srun --cpu-bind (default cores) / --gpu-bind (default closest, only when
#                the job has GPUs). srun gets --cpus-per-task from the job (Slurm >= 22.05 does
#                not pass it on by itself): slurm/_srun.sh.
# The #SBATCH lines below match configs/imagenet_resnet50_final.yaml (8 nodes x 8 GPUs x 128
# images = 8192 per step); command-line sbatch flags override them.
#
# Time limit: REQUEUE_LEAD_S seconds (default 600) before the end, capped at a tenth of the
# --time limit (so a 5-minute job is signalled 30 s before its end, never at once), a timer
# (slurm/_requeue.sh) sends this script USR1; the trap requeues the job (--requeue), which
# resumes from RUN_DIR/final/checkpoint.pt: weights, optimizer, AMP scaler, epoch and step,
# RNG states and the loader position. `scancel --batch --signal=USR1 JOBID` requeues it now.
# Set train.checkpoint_every_steps on preemptible queues so a kill loses at most that many steps.
#SBATCH --job-name=hpcaug-final
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=10
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-final-%j.out
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: sbatch slurm/final_train.sh CONFIG POLICY [section.key=value ...]" >&2
  exit 2
fi
CONFIG=$1; POLICY=$2; shift 2
[ -f "$CONFIG" ] || { echo "final_train.sh: config $CONFIG not found; submit from the repository root" >&2; exit 2; }
case "$POLICY" in
  *.json) [ -f "$POLICY" ] || { echo "final_train.sh: policy file $POLICY not found" >&2; exit 2; } ;;
esac
if [ -n "${HPCAUG_SETUP:-}" ]; then
  # shellcheck disable=SC1090
  source "$HPCAUG_SETUP"
fi
PYTHON=${PYTHON:-python}
args=(--stage final --config "$CONFIG" --policy "$POLICY" --executor inline)
[ -n "${RUN_DIR:-}" ] && args+=(--set "run_dir=$RUN_DIR")
[ $# -gt 0 ] && args+=(--set "$@")

# requeue on USR1, sent REQUEUE_LEAD_S (600) s before the time limit, at most a tenth of it (slurm/_requeue.sh)
source slurm/_requeue.sh || { echo "final_train.sh: slurm/_requeue.sh not found in $(pwd); submit from the repository root" >&2; exit 2; }
requeue_timer final_train.sh

# One task per GPU with its CPUs bound and its GPU(s) nearest (slurm/_srun.sh says why);
# --kill-on-bad-exit stops every rank when one fails. hpcaug.train.dist sees the srun step
# and starts Horovod (gloo rendezvous hosted by rank 0, or MPI with SRUN_MPI).
source slurm/_srun.sh
rank_srun final_train.sh "$PYTHON" -m hpcaug.submit "${args[@]}"
wait $!   # returns early when USR1 arrives; the trap then requeues

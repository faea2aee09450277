#!/usr/bin/env bash
# Adversarial AutoAugment on a SLURM cluster: ONE multi-node job that trains the target
# network and the LSTM policy controller together (docs/advaa.md). Every task of the srun
# step is one Horovod rank (one GPU); rank 0 samples the M policies each epoch and writes
# the records and checkpoints under RUN_DIR/advaa/.
#
#   sbatch slurm/advaa_train.sh                                  # ImageNet, 8 nodes x 8 GPUs
#   CONFIG=configs/demo_advaa.yaml sbatch --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 \
#       slurm/advaa_train.sh train.epochs=2                      # any key=value overrides the config
#
# Knobs (environment, read when the job starts):
#   CONFIG        YAML config (default configs/imagenet_resnet50_advaa.yaml). Its advaa.* fields
#                 are the controller (M = advaa.num_policies, must equal augment.copies), train.*
#                 the target network, data.batch_size = N images per GPU.
#   RUN_DIR       run directory (default: the config's run_dir, else runs/<name>).
#   HPCAUG_SETUP  a shell file sourced first (module load ..., source .venv/bin/activate).
#   PYTHON        the interpreter (default: python).
#   REQUEUE_LEAD_S  requeue this many seconds before the time limit (default 600, at most a tenth of it).
#   SRUN_MPI      pmix / pmi2 for an MPI build of Horovod (default: gloo, rendezvous on rank 0).
#   CPU_BIND / GPU_BIND  srun --cpu-bind (default cores) / --gpu-bind (default closest, only when
#                 the job has GPUs). srun gets --cpus-per-task from the job (Slurm >= 22.05 does
#                 not pass it on by itself): slurm/_srun.sh.
#   Horovod / NCCL variables pass through: HOROVOD_GLOO_IFACE (the network interface between
#   nodes, detected if unset), NCCL_SOCKET_IFNAME, HPCAUG_RENDEZVOUS_PORT (default derived
#   from the job id).
# The #SBATCH lines below match the ImageNet config (64 GPUs x 32 images = 2048, table 7);
# command-line sbatch flags override them. The global batch is nodes x ntasks-per-node x
# data.batch_size images (x M augmented copies); the lr scales with it (train.lr_ref_batch).
#
# Time limit: REQUEUE_LEAD_S seconds (default 600) before the end, capped at a tenth of the
# --time limit (so a 5-minute job is signalled 30 s before its end, never at once), a timer
# (slurm/_requeue.sh) sends this script USR1; it requeues the job, which resumes from
# RUN_DIR/advaa/checkpoint.pt (target network, optimiser, loader position, controller and its
# Adam state). `scancel --batch --signal=USR1 JOBID` requeues it now. Set
# train.checkpoint_every_steps on preemptible queues so a kill loses at most that many steps.
#SBATCH --job-name=hpcaug-advaa
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=10
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-advaa-%j.out
set -euo pipefail

CONFIG=${CONFIG:-configs/imagenet_resnet50_advaa.yaml}
[ -f "$CONFIG" ] || { echo "advaa_train.sh: config $CONFIG not found; submit from the repository root or set CONFIG=" >&2; exit 2; }
if [ -n "${HPCAUG_SETUP:-}" ]; then
  # shellcheck disable=SC1090
  source "$HPCAUG_SETUP"
fi
PYTHON=${PYTHON:-python}
args=(--config "$CONFIG")
[ -n "${RUN_DIR:-}" ] && args+=(--run-dir "$RUN_DIR")

# requeue on USR1, sent REQUEUE_LEAD_S (600) s before the time limit, at most a tenth of it (slurm/_requeue.sh)
source slurm/_requeue.sh || { echo "advaa_train.sh: slurm/_requeue.sh not found in $(pwd); submit from the repository root" >&2; exit 2; }
requeue_timer advaa_train.sh

# One task per GPU with its CPUs bound and its GPU(s) nearest (slurm/_srun.sh says why);
# --kill-on-bad-exit stops every rank when one fails. hpcaug.train.dist sees the srun step
# and starts Horovod (gloo rendezvous hosted by rank 0, or MPI with SRUN_MPI).
source slurm/_srun.sh
rank_srun advaa_train.sh "$PYTHON" -m hpcaug.search.advaa "${args[@]}" "$@"
wait $!   # returns early when USR1 arrives; the trap then requeues

#!/usr/bin/env bash
# The whole AWS search from one small CPU job (docs/search.md):
#
#   sbatch slurm/aws_search.sh                                         # configs/imagenet_resnet50_aws.yaml
#   sbatch slurm/aws_search.sh configs/demo.yaml --set aws.rounds=2    # any hpcaug.submit flags after the config
#
# Submit from the repository root. This job runs `python -m hpcaug.submit --stage search`,
# which validates the config, submits the whole chain up front with SLURM dependencies
#     shared -> [finetune array (round r) -> update r (afterany)] x aws.rounds -> final
# (every dependent with --kill-on-invalid-dep=yes), then follows it and prints progress here
# (slurm-aws-search-<jobid>.out). This driver does no training: if it ends (time limit, scancel)
# the chain keeps running; submit it again to follow it, or to resume a chain that died: it
# skips finished stages, rounds and trajectories and reuses jobs still in the queue.
#
# Knobs. The GPU jobs' resources come from the config's `cluster:` section (or --set):
#   cluster.partition / account / qos / constraint   where the stage jobs go ("" = cluster default)
#   cluster.nodes, cluster.gpus_per_node             shared and final stages: nodes x GPUs, one
#                                                    Horovod rank per GPU (srun, gloo or NCCL)
#   cluster.finetune_gpus                            GPUs of one finetune array task (1 trajectory)
#   cluster.cpus_per_task, cluster.mem_gb            per rank / task (mem 0 = partition default)
#   aws.trajectories_per_round (T), aws.rounds       array size per round, number of rounds; the
#                                                    arrays hold T tasks; ids r*T..r*T+T-1
#   cluster.array_parallelism                        %K throttle: finetune tasks running at once
#   cluster.time_shared/finetune/update/final        time limits in minutes (shared and final
#                                                    requeue and resume from their checkpoint)
#   aws.quorum                                       fraction of a round's tasks the update needs
#   cluster.setup                                    shell lines the stage jobs run first
#                                                    (module load ..., source .venv/bin/activate)
# Environment: PYTHON (default .venv/bin/python if present, else python3); HPCAUG_SETUP, a shell
# file sourced first (module load ...). The lines below size this driver job only: one CPU,
# little memory, a long time limit (it only sleeps between squeue polls).
#SBATCH --job-name=aws-search
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=2G
#SBATCH --time=2-00:00:00
#SBATCH --output=slurm-aws-search-%j.out
set -euo pipefail

CONFIG=${1:-configs/imagenet_resnet50_aws.yaml}
[ $# -gt 0 ] && shift
cd "${SLURM_SUBMIT_DIR:-.}"
[ -f "$CONFIG" ] || { echo "aws_search.sh: config $CONFIG not found in $(pwd); submit from the repository root" >&2; exit 2; }
if [ -n "${HPCAUG_SETUP:-}" ]; then
  # shellcheck disable=SC1090
  source "$HPCAUG_SETUP"
fi
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
echo "aws_search.sh: job ${SLURM_JOB_ID:-none} on $(hostname), config $CONFIG, $(date -u +%FT%TZ)"
exec "$PYTHON" -u -m hpcaug.submit --stage search --config "$CONFIG" --executor slurm "$@"

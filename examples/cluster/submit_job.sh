#!/usr/bin/env bash
# Submit a vsml-es meta-training run to a running Ray cluster as a Ray Job.
#
#   ray dashboard examples/cluster/aws-gpu.yaml &      # tunnel: dashboard at 127.0.0.1:8265
#   examples/cluster/submit_job.sh configs/paper.yaml paper
#   examples/cluster/submit_job.sh --resume paper        # after a preemption or a stop
#
# The job's driver (the learner) runs on the head node with RAY_ADDRESS set by Ray, so
# `vsml-es train` joins the cluster; workers are one per GPU unless WORKERS is set.
# RUNS is a directory on the head node that survives the job (and ideally the node).
set -euo pipefail

export RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
RUNS=${RUNS:-/home/ubuntu/runs}
WORKERS_ARG=()
if [[ -n "${WORKERS:-}" ]]; then WORKERS_ARG=(--workers "$WORKERS"); fi

if [[ "${1:-}" == "--resume" ]]; then
  NAME=${2:?usage: $0 --resume NAME}
  CMD=(vsml-es train --resume "$RUNS/$NAME" --address auto "${WORKERS_ARG[@]}")
else
  CONFIG=${1:?usage: $0 CONFIG NAME [-o key=value ...]}
  NAME=${2:?usage: $0 CONFIG NAME [-o key=value ...]}
  shift 2
  CMD=(vsml-es train "$CONFIG" --run-dir "$RUNS/$NAME" --address auto "${WORKERS_ARG[@]}" "$@")
fi

# --working-dir ships this checkout (configs/ included) to the cluster for the job; the
# vsml-es package itself is installed on every node (setup_commands in aws-gpu.yaml).
ray job submit --submission-id "vsml-es-$NAME-$(date +%s)" --working-dir . --no-wait -- "${CMD[@]}"
echo "follow it:   ray job logs -f <submission id above>"
echo "stop it:     ray job stop <submission id>   (SIGTERM: the learner checkpoints, then exits)"

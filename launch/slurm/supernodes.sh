#!/usr/bin/env bash
# Run on one node of a SLURM allocation (by fedlr.sbatch, through srun): start one SuperNode per
# GPU, each with its own CUDA_VISIBLE_DEVICES (launch/supernode.sh --gpu), and stay in the
# foreground until they end; SIGTERM (srun passes scancel's on) stops them by PID.
#
#   launch/slurm/supernodes.sh NODE_RUN_DIR FIRST_PARTITION NUM_PARTITIONS SUPERLINK CERT_DIR GPUS
#
# SuperNode k (k = 0..GPUS-1) serves partition FIRST_PARTITION + k on GPU k of this node: entry k
# of CUDA_VISIBLE_DEVICES when SLURM set it, else k. GPUS=0: one SuperNode, no GPU. NODE_RUN_DIR
# holds this node's logs and PIDs (one folder per node: PIDs mean nothing on another host).
# SuperNode ports: FEDLR_SUPERNODE_PORT (9094) + k.
set -euo pipefail
if [ $# -ne 6 ]; then
  echo "usage: $0 NODE_RUN_DIR FIRST_PARTITION NUM_PARTITIONS SUPERLINK CERT_DIR GPUS" >&2
  exit 2
fi
run=$1 first=$2 num=$3 superlink=$4 certs=$5 gpus=$6
for value in "$first" "$num" "$gpus"; do
  case $value in '' | *[!0-9]*) echo "supernodes.sh: expected whole numbers, got '$value'" >&2; exit 2 ;; esac
done
launch=$(cd "$(dirname "$0")/.." && pwd)
base=${FEDLR_SUPERNODE_PORT:-9094}
ids=()
if ((gpus > 0)); then
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -r -a ids <<<"$CUDA_VISIBLE_DEVICES"
  else
    for ((k = 0; k < gpus; k++)); do ids+=("$k"); done
  fi
  if ((${#ids[@]} < gpus)); then
    echo "supernodes.sh: $(hostname): $gpus GPUs asked for, CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES" >&2
    exit 2
  fi
fi
mkdir -p "$run"
trap '"$launch/stop.sh" "$run"' EXIT
trap 'exit 143' TERM INT
for ((k = 0; k < (gpus > 0 ? gpus : 1); k++)); do
  gpu=()
  ((gpus > 0)) && gpu=(--gpu "${ids[k]}")
  "$launch/supernode.sh" "$run" $((first + k)) "$num" --superlink "$superlink" --certs "$certs" \
    --port $((base + k)) "${gpu[@]}"
done
alive() {
  local file
  for file in "$run"/pids/supernode-*.pid; do
    [ -f "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null && return 0
  done
  return 1
}
while alive; do
  sleep 5 &
  wait $! || true  # a backgrounded sleep lets SIGTERM be handled at once
done

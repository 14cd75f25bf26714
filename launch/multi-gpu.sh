#!/usr/bin/env bash
# One SuperNode per GPU of this host against a local SuperLink, TLS and SuperNode authentication
# on, then `flwr run` of fedlr; everything is stopped at the end. A thin wrapper: it finds the
# GPUs and runs launch/local-cluster.sh with FEDLR_GPUS (each node gets its own
# CUDA_VISIBLE_DEVICES through supernode.sh --gpu).
#
#   launch/multi-gpu.sh [--gpus LIST] [--per-gpu K] [--gpus-per-node G] [RUN_CONFIG]
#
# --gpus 0,1,2,3     the GPUs to use; default: $CUDA_VISIBLE_DEVICES when set (a scheduler's
#                    allocation), else every GPU `nvidia-smi` lists; none found: exit 2
# --per-gpu K        K SuperNodes share each GPU (default 1)
# --gpus-per-node G  each SuperNode gets G GPUs, e.g. for ddp-procs=G (default 1)
# SuperNodes: (number of GPUs / G) x K; num-clients is set to that. RUN_CONFIG is Flower's
# --run-config string; the env of local-cluster.sh applies (FEDLR_LAUNCH_DIR, FEDLR_PORT, ...).
set -euo pipefail
usage() {
  echo "usage: $0 [--gpus LIST] [--per-gpu K] [--gpus-per-node G] [RUN_CONFIG]" >&2
  exit 2
}
whole() { case $2 in '' | *[!0-9]* | 0) echo "multi-gpu.sh: $1: expected a whole number >= 1, got '$2'" >&2; exit 2 ;; esac; }
list="" given="" per_gpu=1 per_node=1 config="" why="--gpus is empty"
while [ $# -gt 0 ]; do
  case $1 in
    --gpus) list=${2-} given=1; shift 2 || usage ;;
    --per-gpu) per_gpu=${2-}; shift 2 || usage ;;
    --gpus-per-node) per_node=${2-}; shift 2 || usage ;;
    -*) echo "multi-gpu.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$config" ] || usage; config=$1; shift ;;
  esac
done
whole --per-gpu "$per_gpu"
whole --gpus-per-node "$per_node"

source="--gpus"
if [ -z "$given" ]; then
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    source="CUDA_VISIBLE_DEVICES" list=$CUDA_VISIBLE_DEVICES
    why="CUDA_VISIBLE_DEVICES is set and empty"
  elif command -v nvidia-smi >/dev/null; then
    source="nvidia-smi"
    list=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr -d ' ' | paste -sd, -) || list=""
    why="nvidia-smi lists none"
  else
    why="--gpus not given and nvidia-smi not on PATH"
  fi
fi
if [ -z "$list" ]; then
  echo "multi-gpu.sh: no GPU found ($why); name them with --gpus 0,1,..." >&2
  exit 2
fi
IFS=, read -r -a ids <<<"$list"
for id in "${ids[@]}"; do
  [[ $id =~ ^[^+[:space:]]+$ ]] || { echo "multi-gpu.sh: $source: expected GPU ids like 0,1,2, got '$list'" >&2; exit 2; }
done
if ((${#ids[@]} % per_node)); then
  echo "multi-gpu.sh: --gpus-per-node $per_node does not divide the ${#ids[@]} GPUs ($list)" >&2
  exit 2
fi
groups=()
for ((i = 0; i < ${#ids[@]}; i += per_node)); do
  group=$(IFS=+; echo "${ids[*]:i:per_node}")
  groups+=("$group")
done
nodes=$((${#groups[@]} * per_gpu))
if ((nodes < 2)); then
  echo "multi-gpu.sh: $nodes SuperNode; a federation needs 2 or more: add --per-gpu 2 (GPUs: $list)" >&2
  exit 2
fi
gpus=$(IFS=,; echo "${groups[*]}")
echo "multi-gpu: GPUs $list (from $source), $per_node per SuperNode, $per_gpu SuperNode(s) per GPU group -> $nodes SuperNodes"
FEDLR_GPUS=$gpus exec "$(dirname "$0")/local-cluster.sh" "$nodes" "$config"

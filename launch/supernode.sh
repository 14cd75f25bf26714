#!/usr/bin/env bash
# Start one Flower SuperNode in the background: one per site, or one per GPU.
#
#   launch/supernode.sh RUN_DIR PARTITION_ID NUM_PARTITIONS [--superlink HOST:PORT]
#                       [--certs DIR] [--key FILE] [--port PORT] [--gpu IDS] [--data FILE]
#                       [--insecure]
#
# --key defaults to CERT_DIR/node-PARTITION_ID (its .pub must be registered with the SuperLink:
# `flwr supernode register KEY.pub CONNECTION`). --port defaults to 9094 + PARTITION_ID, unique
# per node on one host. --gpu sets CUDA_VISIBLE_DEVICES for this node's ClientApp processes.
# --data gives the node its own site's table (users' files, dataset=csv or parquet): it reads
# that file and no other (node-config data-path); the server holds no data.
# Logs to RUN_DIR/supernode-I.log, PID in RUN_DIR/pids/supernode-I.pid.
set -euo pipefail
umask 077  # the database, logs, keys and run folders: owner-only (every site's updates are in them)
usage() {
  echo "usage: $0 RUN_DIR PARTITION_ID NUM_PARTITIONS [--superlink HOST:PORT] [--certs DIR] [--key FILE] [--port PORT] [--gpu IDS] [--data FILE] [--insecure]" >&2
  exit 2
}
[ $# -ge 3 ] || usage
run=$1 pid=$2 num=$3
shift 3
superlink=127.0.0.1:9091 certs=certs key="" port="" insecure=0 gpu="" data=""
while [ $# -gt 0 ]; do
  case $1 in
    --superlink) superlink=$2; shift 2 ;;
    --certs) certs=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --gpu) gpu=$2; export CUDA_VISIBLE_DEVICES=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --insecure) insecure=1; shift ;;
    *) echo "supernode.sh: unknown option $1" >&2; usage ;;
  esac
done
key=${key:-$certs/node-$pid}
port=${port:-$((9094 + pid))}
command -v flower-supernode >/dev/null || { echo "$0: flower-supernode not on PATH (activate fedlr's virtual environment)" >&2; exit 2; }
mkdir -p "$run/pids"
node_config="partition-id=$pid num-partitions=$num"
if [ -n "$data" ]; then
  case $data in *"'"*) echo "supernode.sh: --data: a path without single quotes expected, got $data" >&2; exit 2 ;; esac
  [ -f "$data" ] || { echo "supernode.sh: --data: file not found: $data" >&2; exit 2; }
  data=$(cd "$(dirname "$data")" && pwd)/$(basename "$data")
  node_config="$node_config data-path='$data'"
fi
args=(--superlink "$superlink" --port "$port" --node-config "$node_config")
if [ "$insecure" = 1 ]; then
  echo "supernode.sh: WARNING: --insecure: no TLS, no node authentication" >&2
  args+=(--insecure)
else
  [ -f "$certs/ca.crt" ] || { echo "supernode.sh: $certs/ca.crt missing" >&2; exit 2; }
  [ -f "$key" ] || { echo "supernode.sh: private key $key missing" >&2; exit 2; }
  args+=(--root-certificates "$certs/ca.crt" --auth-supernode-private-key "$key")
fi
setsid nohup flower-supernode "${args[@]}" >"$run/supernode-$pid.log" 2>&1 &
echo $! >"$run/pids/supernode-$pid.pid"
echo "supernode $pid: pid $! -> $superlink, port $port${gpu:+, CUDA_VISIBLE_DEVICES=$gpu}${data:+, data $data}, log $run/supernode-$pid.log"

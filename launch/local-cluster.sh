#!/usr/bin/env bash
# A real deployment on one machine: a SuperLink and N SuperNodes on 127.0.0.1, TLS and SuperNode
# authentication on, then `flwr run` of fedlr against them. Everything is stopped at the end.
#
#   launch/local-cluster.sh N [RUN_CONFIG]      e.g.  launch/local-cluster.sh 4 "num-server-rounds=2"
#
# RUN_CONFIG is Flower's --run-config string (fedlr's keys; num-clients is set to N). The run folder
# launch-runs/<time>/ holds certificates, keys, logs, PIDs and FLWR_HOME; fedlr's run directory is
# written under launch-runs/<time>/runs/. SuperNodes connect through `fedlr gate` on FEDLR_PORT+1,
# which forwards the Fleet API only (FEDLR_GATE=0: straight to the SuperLink).
# Env: FEDLR_LAUNCH_DIR (the folder), FEDLR_PORT (9091),
# FEDLR_INSECURE=1 (no TLS, no auth; warns), FEDLR_GPUS (GPU ids, e.g. "0,1,2,3": node I runs with
# CUDA_VISIBLE_DEVICES set to entry I mod their number; "0+1,2+3" gives each node two GPUs).
# launch/multi-gpu.sh sets FEDLR_GPUS from the GPUs it finds. FEDLR_NODE_DATA (users' files): a
# comma list of N files, node I reads entry I and nothing else, e.g.
#   FEDLR_NODE_DATA=a.csv,b.csv launch/local-cluster.sh 2 "dataset='csv' label-column='y'"
set -euo pipefail
umask 077  # the database, logs, keys and run folders: owner-only (every site's updates are in them)
[ $# -ge 1 ] || { echo "usage: $0 N [RUN_CONFIG]" >&2; exit 2; }
nodes=$1
extra=${2:-}
case $nodes in '' | *[!0-9]* | 0 | 1) echo "N: expected a whole number >= 2, got '$nodes'" >&2; exit 2 ;; esac
tools=(flwr flower-superlink flower-supernode python3)
[ "${FEDLR_GATE:-1}" = 0 ] || tools+=(fedlr)
[ "${FEDLR_INSECURE:-0}" = 1 ] || tools+=(openssl)  # node keys: ssh-keygen, else Python's cryptography
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "local-cluster.sh: $tool not on PATH (activate fedlr's virtual environment)" >&2; exit 2; }
done
gpus=()
if [ -n "${FEDLR_GPUS:-}" ]; then
  IFS=, read -r -a gpus <<<"$FEDLR_GPUS"
  for group in "${gpus[@]}"; do
    [[ $group =~ ^[^+[:space:]]+(\+[^+[:space:]]+)*$ ]] ||
      { echo "FEDLR_GPUS: expected GPU ids like 0,1 or 0+1,2+3, got '$FEDLR_GPUS'" >&2; exit 2; }
  done
fi
node_data=()
if [ -n "${FEDLR_NODE_DATA:-}" ]; then
  IFS=, read -r -a node_data <<<"$FEDLR_NODE_DATA"
  [ ${#node_data[@]} -eq "$nodes" ] ||
    { echo "FEDLR_NODE_DATA: expected $nodes files (one per node), got ${#node_data[@]}" >&2; exit 2; }
  for file in "${node_data[@]}"; do
    [ -f "$file" ] || { echo "FEDLR_NODE_DATA: file not found: $file" >&2; exit 2; }
  done
fi
here=$(cd "$(dirname "$0")" && pwd)
app=$(cd "$here/.." && pwd)
# The run's config, checked as the ServerApp will check it, before any node starts.
config="num-clients=$nodes"
[ -n "$extra" ] && config="$config $extra"
python3 "$here/check_config.py" "$config" || exit 2
run=${FEDLR_LAUNCH_DIR:-$app/launch-runs/$(date +%Y%m%d-%H%M%S)}
port=${FEDLR_PORT:-9091}
mkdir -p "$run"
run=$(cd "$run" && pwd)
export FLWR_HOME=$run/flwr-home FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
mkdir -p "$FLWR_HOME"
trap '"$here/stop.sh" "$run"' EXIT

secure=()
if [ "${FEDLR_INSECURE:-0}" = 1 ]; then
  secure=(--insecure)
  printf '[superlink]\ndefault = "fedlr-local"\n\n[superlink.fedlr-local]\naddress = "127.0.0.1:%s"\ninsecure = true\n' \
    "$port" >"$FLWR_HOME/config.toml"
else
  "$here/certs.sh" "$run/certs" "$nodes"
  printf '[superlink]\ndefault = "fedlr-local"\n\n[superlink.fedlr-local]\naddress = "127.0.0.1:%s"\nroot-certificates = "%s"\n' \
    "$port" "$run/certs/ca.crt" >"$FLWR_HOME/config.toml"
fi

# SuperNodes reach the SuperLink through `fedlr gate` (Fleet API only) on port+1, as they would
# from other machines; flwr (run, ls, supernode register) talks to the SuperLink itself.
fleet_port=$port gate=()
if [ "${FEDLR_GATE:-1}" != 0 ]; then
  fleet_port=$((port + 1)) gate=(--gate "127.0.0.1:$fleet_port")
fi
for p in "$port" "$fleet_port"; do  # a port someone else holds would answer for ours
  if (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "local-cluster.sh: port $p is in use; choose another with FEDLR_PORT" >&2
    exit 2
  fi
done
"$here/superlink.sh" "$run" --certs "$run/certs" --port "$port" "${gate[@]}" "${secure[@]}"
wait_for() {  # wait_for NAME PORT: up to 30 s for the process in pids/NAME.pid to listen on PORT
  local pid
  pid=$(cat "$run/pids/$1.pid")
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || { echo "local-cluster.sh: the $1 exited; see $run/$1.log" >&2; exit 1; }
    (echo >"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return
    sleep 0.2
  done
  echo "local-cluster.sh: the $1 did not listen on port $2 within 30 s; see $run/$1.log" >&2
  exit 1
}
wait_for superlink "$port"
[ ${#gate[@]} -eq 0 ] || wait_for gate "$fleet_port"
if [ "${FEDLR_INSECURE:-0}" != 1 ]; then
  for ((i = 0; i < nodes; i++)); do
    # a launch folder used before keeps its SuperLink database: its keys are registered already
    flwr supernode register "$run/certs/node-$i.pub" fedlr-local >"$run/register-$i.log" 2>&1 ||
      grep -qi "already in use" "$run/register-$i.log" ||
      { cat "$run/register-$i.log" >&2; exit 1; }
  done
fi
for ((i = 0; i < nodes; i++)); do
  gpu=()
  [ ${#gpus[@]} -gt 0 ] && gpu=(--gpu "${gpus[i % ${#gpus[@]}]//+/,}")
  data=()
  [ ${#node_data[@]} -gt 0 ] && data=(--data "${node_data[i]}")
  "$here/supernode.sh" "$run" "$i" "$nodes" --superlink "127.0.0.1:$fleet_port" --certs "$run/certs" \
    --port $((port + 10 + i)) "${gpu[@]}" "${data[@]}" "${secure[@]}"
done

config="$config out-dir='$run/runs'"
cd "$app"
flwr run . fedlr-local --stream --run-config "$config" 2>&1 | tee "$run/flwr-run.log"
# `flwr run` exits 0 whatever the ServerApp does: ask the SuperLink how the run ended.
status=$(flwr ls fedlr-local --format json 2>>"$run/flwr-run.log" | python3 "$here/check_config.py" --status) ||
  status="unknown (flwr ls failed)"
if [ "$status" != "finished:completed" ]; then
  echo "local-cluster.sh: the run ended as $status; logs: $run/flwr-run.log, $run/superlink.log, $run/supernode-*.log" >&2
  exit 1
fi
echo "local-cluster: done; fedlr run directory under $run/runs"

#!/usr/bin/env bash
# Start a Flower SuperLink in the background, with TLS and SuperNode authentication on.
#
#   launch/superlink.sh RUN_DIR [--certs DIR] [--gate HOST:PORT] [--host HOST] [--port PORT] [--insecure]
#
# Logs to RUN_DIR/superlink.log, PID in RUN_DIR/pids/superlink.pid (launch/stop.sh stops it).
# --gate HOST:PORT (e.g. 0.0.0.0:9092): the SuperLink listens on 127.0.0.1:PORT only and
# `fedlr gate` on HOST:PORT lets SuperNodes reach its Fleet API and nothing else; flwr commands
# (run, ls, supernode register) then work only on this host. Its log is RUN_DIR/gate.log.
# --host 0.0.0.0 without a gate opens every API of the SuperLink, the Control API included,
# which Flower does not authenticate: anyone holding ca.crt could register a key and list runs.
# --insecure turns TLS and node authentication off: only for a trusted network, and it says so.
set -euo pipefail
umask 077  # the database, logs, keys and run folders: owner-only (every site's updates are in them)
usage() { echo "usage: $0 RUN_DIR [--certs DIR] [--gate HOST:PORT] [--host HOST] [--port PORT] [--insecure]" >&2; exit 2; }
[ $# -ge 1 ] || usage
run=$1
shift
certs=certs host=127.0.0.1 port=9091 insecure=0 gate=""
while [ $# -gt 0 ]; do
  case $1 in
    --certs) certs=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --gate) gate=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --insecure) insecure=1; shift ;;
    *) echo "superlink.sh: unknown option $1" >&2; usage ;;
  esac
done
command -v flower-superlink >/dev/null || { echo "$0: flower-superlink not on PATH (activate fedlr's virtual environment)" >&2; exit 2; }
if [ -n "$gate" ]; then
  [ "$host" = 127.0.0.1 ] || { echo "superlink.sh: --gate keeps the SuperLink on 127.0.0.1; drop --host $host" >&2; exit 2; }
  command -v fedlr >/dev/null || { echo "$0: fedlr not on PATH (activate fedlr's virtual environment)" >&2; exit 2; }
fi
mkdir -p "$run/pids"
args=(--host "$host" --port "$port" --database "$run/superlink.db"
  --disable-runtime-dependency-installation)
if [ "$insecure" = 1 ]; then
  echo "superlink.sh: WARNING: --insecure: no TLS, no SuperNode authentication; any node may join" >&2
  args+=(--insecure)
else
  for f in ca.crt server.pem server.key; do
    [ -f "$certs/$f" ] || { echo "superlink.sh: $certs/$f missing (run launch/certs.sh $certs N)" >&2; exit 2; }
  done
  args+=(--ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.pem"
    --ssl-keyfile "$certs/server.key" --enable-supernode-auth)
fi
# Flower's internal switches that would add gRPC Fleet/Control servers on 0.0.0.0:9092/9093,
# past the gate, are unset for the SuperLink.
setsid nohup env -u FLWR_INTERNAL_GRPC_CONTROL_API -u FLWR_INTERNAL_GRPC_FLEET_API \
  flower-superlink "${args[@]}" >"$run/superlink.log" 2>&1 &
echo $! >"$run/pids/superlink.pid"
echo "superlink: pid $! on $host:$port, log $run/superlink.log"
if [ -n "$gate" ]; then
  tls=(--certs "$certs")
  [ "$insecure" = 1 ] && tls=(--insecure)
  setsid nohup fedlr gate --listen "$gate" --superlink "127.0.0.1:$port" "${tls[@]}" >"$run/gate.log" 2>&1 &
  echo $! >"$run/pids/gate.pid"
  echo "gate: pid $! on $gate (Fleet API only), log $run/gate.log"
fi

#!/usr/bin/env bash
# Start a Flower SuperLink in the background, with TLS and SuperNode authentication on.
#
#   launch/superlink.sh RUN_DIR [--certs DIR] [--host HOST] [--port PORT] [--insecure]
#
# Logs to RUN_DIR/superlink.log, PID in RUN_DIR/pids/superlink.pid (launch/stop.sh stops it).
# --host 0.0.0.0 to accept SuperNodes from other machines (default 127.0.0.1). --insecure turns
# TLS and node authentication off: only for a trusted network, and it says so.
set -euo pipefail
umask 077  # the database, logs, keys and run folders: owner-only (every site's updates are in them)
usage() { echo "usage: $0 RUN_DIR [--certs DIR] [--host HOST] [--port PORT] [--insecure]" >&2; exit 2; }
[ $# -ge 1 ] || usage
run=$1
shift
certs=certs host=127.0.0.1 port=9091 insecure=0
while [ $# -gt 0 ]; do
  case $1 in
    --certs) certs=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --insecure) insecure=1; shift ;;
    *) echo "superlink.sh: unknown option $1" >&2; usage ;;
  esac
done
command -v flower-superlink >/dev/null || { echo "$0: flower-superlink not on PATH (activate fedlr's virtual environment)" >&2; exit 2; }
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
setsid nohup flower-superlink "${args[@]}" >"$run/superlink.log" 2>&1 &
echo $! >"$run/pids/superlink.pid"
echo "superlink: pid $! on $host:$port, log $run/superlink.log"

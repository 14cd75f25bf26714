#!/usr/bin/env bash
# Stop exactly the processes the launch scripts started for RUN_DIR (by PID, never by name).
# Each was started with setsid, so its PID is also its process group: the group is stopped, which
# takes the ClientApp/ServerApp processes it spawned along. SuperNodes go first, while their
# SuperLink still listens: a SuperNode stopped gracefully deactivates itself there, so a launch
# that reuses this folder (and so the SuperLink's database) can activate the same keys at once.
#
#   launch/stop.sh RUN_DIR
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RUN_DIR" >&2; exit 2; }
shopt -s nullglob
for file in "$1"/pids/supernode-*.pid "$1"/pids/*.pid; do
  [ -f "$file" ] || continue  # the second glob lists the SuperNodes again
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null; }
    echo "stopped $(basename "$file" .pid) (pid $pid)"
  fi
  rm -f "$file"
done

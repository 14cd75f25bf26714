#!/usr/bin/env bash
# The checks CI cannot run, on a machine with a GPU: run it there whenever one is available and
# paste its summary into the README ("GPU check").
#
#   launch/gpu-check.sh [OUT_DIR]        (from the repository root, fedlr's environment active)
#
# 1. `pytest -m gpu`: ClientApp training on cuda against the same training on the CPU (float32
#    tolerance), and DDP with nccl against one process where two GPUs exist (tests/test_gpu.py).
# 2. launch/multi-gpu.sh --per-gpu 4: four TLS + node-auth SuperNodes share each GPU, 2 rounds.
# 3. fedlr simulate with client-gpus 0.25 (four simulated clients per GPU), 2 rounds; skipped,
#    and said so, where Ray is not installed (GPU images that carry Flower without Ray).
# Each step's log is kept under OUT_DIR (default gpu-check/<time>); the script prints one line
# per step (passed / FAILED / skipped, with the seconds taken) and exits 1 if any step failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$root/gpu-check/$(date +%Y%m%d-%H%M%S)}
python3 -c "import torch" 2>/dev/null || {
  echo "gpu-check.sh: python3 cannot import torch (activate fedlr's virtual environment)" >&2
  exit 2
}
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "gpu-check.sh: torch sees no GPU here (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset})" >&2
  exit 2
}
mkdir -p "$out" && out=$(cd "$out" && pwd)
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
summary=()
failed=0
step() {  # step NAME COMMAND...: run, log to $out/NAME.log, record one summary line
  local name=$1 start rc
  shift
  start=$(date +%s)
  "$@" >"$out/$name.log" 2>&1
  rc=$?
  local line
  line=$(printf '%-14s %-7s %4ss  %s' "$name" "$([ $rc -eq 0 ] && echo passed || echo FAILED)" \
    "$(($(date +%s) - start))" "$out/$name.log")
  [ $rc -eq 0 ] || failed=1
  summary+=("$line")
  echo "$line"
}
cd "$root"
{
  echo "host: $(hostname)  date: $(date -u +%FT%TZ)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'gpus', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
  python3 -c "import flwr; print('flwr', flwr.__version__)" 2>/dev/null || echo "flwr: not importable"
} | tee "$out/host.txt"
step pytest-gpu python3 -m pytest -m gpu -q -rs tests/test_gpu.py
step multi-gpu env FEDLR_LAUNCH_DIR="$out/multi-gpu" FEDLR_PORT="${FEDLR_PORT:-9191}" \
  "$here/multi-gpu.sh" --per-gpu 4 "num-server-rounds=2 device='cuda'"
if python3 -c "import ray" 2>/dev/null; then
  step simulate-gpu python3 -m fedlr simulate --out "$out/simulate" --set num-server-rounds=2 \
    --set strategies=fedavg,noise-adaptive --set client-gpus=0.25 --set device=cuda
else
  line=$(printf '%-14s %-7s %4ss  %s' simulate-gpu skipped 0 "Ray is not installed here")
  summary+=("$line")
  echo "$line"
fi
printf '%s\n' "${summary[@]}" >"$out/summary.txt"
echo "gpu-check: $([ $failed -eq 0 ] && echo "all steps passed" || echo "a step FAILED"); logs in $out"
exit $failed

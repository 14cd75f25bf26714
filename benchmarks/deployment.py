"""Per-round latency and start-up of a loopback deployment vs the simulation engine, same job.

One process runs, side by side and interleaved (all variants of repeat 1, then of repeat 2, ...),
the same small fedlr job (one strategy, ``--clients`` nodes x ``--rounds`` rounds, the default
digits data) as each *variant*, every run a fresh command as a user types it:

* ``simulation``: ``python -m fedlr.cli simulate --set ... --out TMP`` (Ray, in-memory grid);
* ``deploy``: ``launch/local-cluster.sh N RUN_CONFIG`` as shipped: certificates, a SuperLink and N
  SuperNodes on 127.0.0.1 with TLS and SuperNode authentication, ``flwr run``, ``stop.sh``;
* ``deploy-no-gate``: ``deploy`` with ``FEDLR_GATE=0``: SuperNodes dial the SuperLink itself,
  not ``fedlr gate`` (what the gate's extra hop costs);
* ``deploy-insecure``: the same with ``FEDLR_INSECURE=1`` (no certificates, no registration);
* ``deploy-exec``: ``deploy`` + ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL=<--exec-poll>``, the one
  latency setting Flower offers. An environment variable: the SuperExec that every SuperNode (and
  the SuperLink) spawns inherits it, so launch/ needs no change;
* ``deploy-exec-grid``: + the ServerApp pulls replies every ``--grid-poll`` s instead of 3 s.
  Flower has no option for it; fedlr could wrap its Grid and poll with the public
  ``push_messages``/``pull_messages``. Here a ``flwr-serverapp`` shim put first on PATH does the
  same (the SuperLink's SuperExec starts ``flwr-serverapp`` by name);
* ``deploy-exec-grid-node``: + each SuperNode asks the SuperLink for messages every
  ``--node-poll`` s instead of 3 s. No option exists: a ``flower-supernode`` shim patches Flower's
  loop. Not something to ship: it bounds what shorter polling can give; what remains is one
  ClientApp process (Python, torch, fedlr) per message.

Each knob variant adds one knob to the one before (TLS on in all of them). The shims are written
to a temp folder and put first on PATH for that run only; they log to ``$FEDLR_BENCH_SHIM_LOG``
and a run in which they did not start counts as failed. What sets the latency
in deployment (Flower 1.42.0, ``site-packages/flwr``), per message phase (train, then evaluate, so
two per round; the query round before round 1 is one more):

1. ``superlink/grid/http_grid.py:384-413``: the ServerApp's ``send_and_receive`` pushes, then
   pulls the replies every 3 s (``time.sleep(3)``, hard-coded, line 412). The simulation's
   ``InMemoryGrid`` pulls every 0.1 s (``inmemory_grid.py:49,177``; ``run_simulation.py:301``).
2. ``supernode/start_client_internal.py:247-273``: a SuperNode pulls one message; with none it
   sleeps 3 s (line 263, hard-coded). After a reply it asks again at once, finds nothing (the
   ServerApp has not aggregated yet) and sleeps 3 s: the next phase's message waits up to 3 s.
   One message at a time: ``_push_messages`` waits for the ClientApp's reply, polling every 0.5 s
   (line 470). With the ServerApp's pull (1.) running during that sleep, ``between`` (below) is
   3 s, or 6 s when the pull lands late. ``fleet_http_connection.py:143-154``: a fetch is one
   ``PullMessages`` request, no long-poll or stream; Fleet runs over HTTP only
   (``--fleet-api-type`` is deprecated, ``superlink/cli/flower_superlink.py:305``), so there is
   no transport to choose.
3. ``supercore/superexec/run_superexec.py:48-51,277``: the SuperExec that the SuperNode spawns
   (``start_client_internal.py:209-222``) asks for a new task every
   ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` s (default 1.0, 0.01-60). The SuperLink's SuperExec
   (``flower_superlink.py:248-263``) starts the ServerApp the same way (start-up only).
4. ``supercore/superexec/executor/subprocess_executor.py:54-83``: each task is a new
   ``flwr-clientapp`` process, which unpacks the FAB, imports the app (torch + fedlr, ~2 s on two
   cores) and handles one message (``supernode/runtime/run_clientapp.py:155,188,193``). Warm pools
   exist only for the Kubernetes executor and only for agent/model/connector tasks
   (``warm_executor_pool.py:33``), not for ClientApps.
5. Not on the message path: ``--max-retries``/``--max-wait-time`` only bound reconnection after
   connection errors (``fleet_http_connection.py:102-105``); ``--isolation process`` runs the same
   SuperExec loop started by hand; heartbeats every 30 s (``common/constant.py:44``) only mark
   nodes offline.

Measured per run (unix times; fedlr's ``rounds.jsonl`` gives ``elapsed_s`` per round since the
strategy started, and its mtime at the end is the write of the last round's line):

* ``wall``: command start to exit (deployment: stop.sh included);
* ``start-up``: command start to the start of round 1 (= last line's write - its ``elapsed_s``):
  imports, Ray or the cluster, ``flwr run``, the ServerApp's start, data and the query round;
* ``cluster`` (deployment): command start until the last SuperNode is started (certificates,
  SuperLink up, node registration); ``serverapp``: until the ServerApp's "fedlr: writing" line
  reaches ``flwr run --stream`` (up to ~1 s late: Flower streams logs every 0.5 s);
* ``per round``: median of the per-round deltas of ``elapsed_s`` (round 1: since the start);
* ``after last``: last round's line to exit (report, ServerApp exit, teardown);
* with ``--trace`` (deployments log at DEBUG level, with timestamps), per message from the
  SuperNode logs: ``between`` (node's reply sent to its next message received: the other nodes,
  the ServerApp's pull and aggregation, the node's fetch poll), ``launch`` (message stored to the
  ClientApp process running: SuperExec poll, process start, ``import flwr``) and ``clientapp``
  (then to the reply: torch and fedlr imports, data, the work); see :func:`trace_phases`.

Every process a run starts carries ``FEDLR_BENCH_TAG=<uuid>`` in its environment; after the run
(and ``launch/stop.sh RUN_DIR`` for deployments) any still alive after ``--grace`` s is stopped by
PID. Each run gets a free port range, its own ``FLWR_HOME`` and temp folder, and ``--timeout``.

``--quick``: 3 rounds, one repeat of every variant, ``results/deployment-quick.json``; a full run
writes ``results/deployment.json``. Timings need a quiet machine: on two cores a ClientApp
process start competes with anything else running.

    .venv/bin/python benchmarks/deployment.py --quick
    .venv/bin/python benchmarks/deployment.py --repeats 3 --rounds 4 --clients 2
    .venv/bin/python benchmarks/deployment.py --variants simulation,deploy --repeats 5 --trace
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAUNCH = ROOT / "launch"
BIN = Path(sys.executable).parent  # the virtual environment's bin/: flwr, flower-*, fedlr
TAG = "FEDLR_BENCH_TAG"
SHIM_LOG = "FEDLR_BENCH_SHIM_LOG"


# -- variants ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One way to run the job: the simulation engine, or the loopback cluster with some knobs.

    ``exec_poll`` sets ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``; ``grid_poll`` and ``node_poll`` put
    the ``flwr-serverapp`` and ``flower-supernode`` shims first on PATH (seconds between polls).
    """

    name: str
    deployment: bool
    insecure: bool = False
    gate: bool = True
    exec_poll: float | None = None
    grid_poll: float | None = None
    node_poll: float | None = None
    note: str = ""


def make_variants(exec_poll: float, grid_poll: float, node_poll: float) -> dict[str, Variant]:
    """All variants by name, in the order they run."""
    variants = [
        Variant("simulation", False, note="fedlr simulate (Ray, in-memory grid polling 0.1 s)"),
        Variant("deploy", True, note="launch/local-cluster.sh as shipped (TLS, node auth)"),
        Variant(
            "deploy-no-gate",
            True,
            gate=False,
            note="FEDLR_GATE=0: SuperNodes dial the SuperLink, not fedlr gate",
        ),
        Variant("deploy-insecure", True, insecure=True, note="FEDLR_INSECURE=1"),
        Variant(
            "deploy-exec",
            True,
            exec_poll=exec_poll,
            note=f"FLWR_SUPEREXEC_TASK_POLL_INTERVAL={exec_poll:g} (Flower option, env)",
        ),
        Variant(
            "deploy-exec-grid",
            True,
            exec_poll=exec_poll,
            grid_poll=grid_poll,
            note=f"+ ServerApp pulls replies every {grid_poll:g} s (fedlr-side change; shim)",
        ),
        Variant(
            "deploy-exec-grid-node",
            True,
            exec_poll=exec_poll,
            grid_poll=grid_poll,
            node_poll=node_poll,
            note=f"+ SuperNode polls every {node_poll:g} s (patched Flower: no option; bound)",
        ),
    ]
    return {v.name: v for v in variants}


# -- the job -------------------------------------------------------------------------------------
def job_overrides(clients: int, rounds: int, strategy: str, extra: list[str]) -> dict[str, Any]:
    """The fedlr config overrides of the job (validated by ``fedlr.config.resolve``)."""
    from fedlr import config as fedlr_config

    overrides: dict[str, Any] = {
        "strategies": strategy,
        "num-clients": clients,
        "num-server-rounds": rounds,
        "noisy-clients": clients // 2,
        "hard-clean-clients": 0,
    }
    overrides.update(dict(fedlr_config.parse_override(s) for s in extra))
    if "," in str(overrides["strategies"]):
        raise ValueError(f"strategies: expected one strategy, got {overrides['strategies']!r}")
    fedlr_config.resolve(overrides=overrides)  # fail now, not in the fifth run
    return overrides


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if "'" in value or " " in value:
            raise ValueError(f"run config value {value!r}: no quotes or spaces allowed")
        return f"'{value}'"
    return repr(value)


def run_config(overrides: dict[str, Any]) -> str:
    """Flower's ``--run-config`` string for local-cluster.sh (it sets num-clients, out-dir)."""
    skip = {"num-clients", "out-dir"}
    return " ".join(f"{k}={_toml_value(v)}" for k, v in overrides.items() if k not in skip)


# -- shims: the two poll intervals Flower does not expose -----------------------------------------
GRID_SHIM = '''\
#!{python}
"""flwr-serverapp whose Grid pulls replies every $FEDLR_BENCH_GRID_POLL s (Flower: 3 s)."""
import os
import sys
import time

from flwr.superlink.grid.http_grid import HttpGrid

INTERVAL = float(os.environ["FEDLR_BENCH_GRID_POLL"])


def send_and_receive(self, messages, *, timeout=None):
    # Flower's HttpGrid.send_and_receive (http_grid.py:384-413) with another sleep.
    msg_ids = set(self.push_messages(messages))
    end_time = time.time() + (timeout if timeout is not None else 0.0)
    replies = []
    while timeout is None or time.time() < end_time:
        pulled = list(self.pull_messages(msg_ids))
        replies.extend(pulled)
        msg_ids.difference_update(m.metadata.reply_to_message_id for m in pulled)
        if not msg_ids:
            break
        time.sleep(INTERVAL)
    return replies


HttpGrid.send_and_receive = send_and_receive
with open(os.environ["{shim_log}"], "a") as log:
    log.write(f"grid {{os.getpid()}} {{INTERVAL}}\\n")
from flwr.superlink.cli import flwr_serverapp  # noqa: E402

sys.exit(flwr_serverapp())
'''

NODE_SHIM = '''\
#!{python}
"""flower-supernode whose loop sleeps at most $FEDLR_BENCH_NODE_POLL s (Flower: 3 s, 0.5 s)."""
import os
import sys
import time
import types

import flwr.supernode.start_client_internal as loop

INTERVAL = float(os.environ["FEDLR_BENCH_NODE_POLL"])
if getattr(loop, "time", None) is not time:
    sys.exit("deployment.py shim: start_client_internal no longer sleeps via time.sleep")
_sleep = time.sleep
capped = types.SimpleNamespace(**{{n: getattr(time, n) for n in dir(time) if n[0] != "_"}})
capped.sleep = lambda seconds: _sleep(min(seconds, INTERVAL))
loop.time = capped  # start_client_internal.py:263 (no message: 3 s), 470 and 506 (0.5 s)
with open(os.environ["{shim_log}"], "a") as log:
    log.write(f"node {{os.getpid()}} {{INTERVAL}}\\n")
from flwr.supernode.cli import flower_supernode  # noqa: E402

sys.exit(flower_supernode())
'''


def write_shims(folder: Path) -> Path:
    """Write ``flwr-serverapp`` and ``flower-supernode`` shims into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("flwr-serverapp", GRID_SHIM), ("flower-supernode", NODE_SHIM)):
        path = folder / name
        path.write_text(text.format(python=sys.executable, shim_log=SHIM_LOG))
        path.chmod(0o755)
    return folder


# -- processes -----------------------------------------------------------------------------------
def free_port() -> int:
    """A port free now, with the next 20 free too (SuperNodes use port + 10 + i)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 60000 and all(_free(port + k) for k in range(1, 21)):
            return port
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tagged_pids(tag: str) -> list[int]:
    """PIDs of live processes whose environment holds ``FEDLR_BENCH_TAG=tag`` (Linux /proc)."""
    needle = f"{TAG}={tag}".encode()
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in Path(entry.path, "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))  # a zombie's environ reads empty: not listed
    return pids


def reap(tag: str, grace: float) -> int:
    """Wait ``grace`` s for the run's processes to exit; stop the rest by PID; count them."""
    deadline = time.monotonic() + grace
    while (left := tagged_pids(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    targets = left
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while (targets := [p for p in targets if p in tagged_pids(tag)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        if not targets:
            break
    return len(left)


def run_command(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    timeout: float,
    markers: dict[str, re.Pattern[str]],
) -> dict[str, Any]:
    """Run ``command`` in its own session; log its output; time it and the first marker lines.

    Returns ``t0`` (unix start), ``wall_s``, ``rc``, ``timed_out`` and ``marks`` (marker name to
    unix time of the first output line that matches it).
    """
    marks: dict[str, float] = {}
    with open(log_path, "w", encoding="utf-8") as log:
        t0 = time.time()
        p0 = time.perf_counter()
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: a timeout stops all of it
        )

        def read() -> None:
            assert proc.stdout is not None
            # ValueError: the log was closed while a leftover process still held the pipe
            with contextlib.suppress(ValueError):
                for line in proc.stdout:
                    now = time.time()
                    log.write(f"{now - t0:8.2f} {line}")
                    for name, pattern in markers.items():
                        if name not in marks and pattern.search(line):
                            marks[name] = now

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = proc.returncode if proc.returncode is not None else -9
        wall = time.perf_counter() - p0
        reader.join(timeout=10)
    return {"t0": t0, "wall_s": wall, "rc": rc, "timed_out": timed_out, "marks": marks}


# -- timeline from fedlr's run directory ---------------------------------------------------------
def timeline(run: dict[str, Any], runs_dir: Path, strategy: str, num_rounds: int) -> None:
    """Add start-up, per-round and after-last seconds to ``run`` from ``rounds.jsonl``."""
    paths = sorted(runs_dir.glob("*/rounds.jsonl"))
    lines = []
    if paths:
        for text in paths[0].read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                line = json.loads(text)
                if line.get("strategy") == strategy and "event" not in line:  # a round's
                    lines.append(line)
    lines.sort(key=lambda line: line["round"])
    run["rounds_logged"] = len(lines)
    run["round_deltas_s"] = []
    run["startup_s"] = run["per_round_s"] = run["after_last_s"] = None
    if not lines:
        return
    elapsed = [float(line["elapsed_s"]) for line in lines]
    # nothing but the strategy's done event (at once) writes rounds.jsonl after the last round
    last_write = paths[0].stat().st_mtime
    start = last_write - elapsed[-1]  # the strategy's start: round 1 begins
    run["startup_s"] = start - run["t0"]
    run["round_deltas_s"] = [b - a for a, b in zip([0.0, *elapsed[:-1]], elapsed, strict=True)]
    if len(lines) == num_rounds:
        run["per_round_s"] = statistics.median(run["round_deltas_s"])
    run["after_last_s"] = run["t0"] + run["wall_s"] - last_write


# -- --trace: where a phase's time goes, from the SuperNodes' DEBUG logs --------------------------
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOG_LINE = re.compile(r"^[A-Z]+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}):\s+(.*)$")
EVENTS = {  # start_client_internal.py (SuperNode) and the flwr-clientapp process it spawns
    "receiving": re.compile(r"^Receiving: (\w+) message"),
    "received": re.compile(r"^Received successfully"),
    "started": re.compile(r"^Start `flwr-clientapp` process"),
    "sending": re.compile(r"^Sending: (\w+) message"),
    "sent": re.compile(r"^Sent successfully"),
}
TRACE_KEYS = ("between_s", "launch_s", "clientapp_s")


def trace_phases(log_path: Path) -> dict[str, list[float]]:
    """Per train/evaluate message of one SuperNode log (``FLWR_LOG_LEVEL=DEBUG``), seconds.

    ``between``: the node's previous reply sent to this message received (the other nodes, the
    ServerApp's pull and aggregation, the node's fetch poll); ``launch``: message stored to the
    ClientApp process logging its start (SuperExec poll, process start, ``import flwr``);
    ``clientapp``: from then to the reply (FAB, imports of torch and fedlr, data, the work).
    """
    events: list[tuple[float, str, str | None]] = []
    for raw in log_path.read_text(errors="replace").splitlines():
        line = LOG_LINE.match(ANSI.sub("", raw))
        if line is None:
            continue
        for name, pattern in EVENTS.items():
            if hit := pattern.search(line.group(2)):
                stamp = datetime.strptime(line.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                events.append((stamp, name, hit.group(1) if pattern.groups else None))
                break
    out: dict[str, list[float]] = {key: [] for key in TRACE_KEYS}
    seen: dict[str, float] = {}
    kind = previous_kind = None
    last_sent = None
    for stamp, name, message_type in events:
        if name == "receiving":
            previous_kind, kind, seen = kind, message_type, {}
            if last_sent is not None and {kind, previous_kind} <= {"train", "evaluate"}:
                out["between_s"].append(stamp - last_sent)
        seen[name] = stamp
        if name == "sent":
            last_sent = stamp
        if name == "sending" and kind in ("train", "evaluate") and "started" in seen:
            if "received" in seen:
                out["launch_s"].append(seen["started"] - seen["received"])
            out["clientapp_s"].append(stamp - seen["started"])
    return out


# -- one run -------------------------------------------------------------------------------------
def _base_env(tmp: Path, tag: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in (  # a variant sets these itself; inherited values would blur the baseline
        "FEDLR_INSECURE",
        "FEDLR_LAUNCH_DIR",
        "FEDLR_PORT",
        "FEDLR_GPUS",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL",
        "FLWR_LOG_LEVEL",
    ):
        env.pop(key, None)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        FLWR_HOME=str(tmp / "flwr-home"),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        **{TAG: tag, SHIM_LOG: str(tmp / "shims.log")},
    )
    return env


def run_variant(
    variant: Variant,
    overrides: dict[str, Any],
    shims: Path,
    timeout: float,
    grace: float,
    keep: Path | None,
    trace: bool = False,
) -> dict[str, Any]:
    """Measure one fresh run of ``variant``; a failed run comes back with an ``error``.

    With ``trace``, deployments log at DEBUG level (timestamps; a little slower) and the run gets
    the medians of :func:`trace_phases` over all nodes and messages.
    """
    clients, rounds = overrides["num-clients"], overrides["num-server-rounds"]
    tag = uuid.uuid4().hex
    tmp_ctx = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix=f"{variant.name}-", dir=keep))
        if keep is not None
        else tempfile.TemporaryDirectory(prefix=f"deployment-{variant.name}-")
    )
    with tmp_ctx as tmp_name:
        tmp = Path(tmp_name)
        env = _base_env(tmp, tag)
        markers: dict[str, re.Pattern[str]] = {}
        if variant.deployment:
            cluster = tmp / "cluster"
            runs_dir = cluster / "runs"
            env.update(FEDLR_LAUNCH_DIR=str(cluster), FEDLR_PORT=str(free_port()))
            if variant.insecure:
                env["FEDLR_INSECURE"] = "1"
            if not variant.gate:
                env["FEDLR_GATE"] = "0"
            if trace:
                env["FLWR_LOG_LEVEL"] = "DEBUG"
            if variant.exec_poll is not None:
                env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(variant.exec_poll)
            if variant.grid_poll is not None or variant.node_poll is not None:
                shim_dir = tmp / "shims"  # only the shims this variant asks for
                shim_dir.mkdir()
                if variant.grid_poll is not None:
                    (shim_dir / "flwr-serverapp").symlink_to(shims / "flwr-serverapp")
                    env["FEDLR_BENCH_GRID_POLL"] = str(variant.grid_poll)
                if variant.node_poll is not None:
                    (shim_dir / "flower-supernode").symlink_to(shims / "flower-supernode")
                    env["FEDLR_BENCH_NODE_POLL"] = str(variant.node_poll)
                env["PATH"] = f"{shim_dir}{os.pathsep}{env['PATH']}"
            # The script's text is passed to bash whole (with $0 = its path, so it finds its
            # siblings): an edit of launch/local-cluster.sh while it runs cannot break the run.
            script = (LAUNCH / "local-cluster.sh").read_text()
            command = ["bash", "-c", script, str(LAUNCH / "local-cluster.sh"), str(clients)]
            command.append(run_config(overrides))
            markers = {
                "cluster": re.compile(rf"^supernode {clients - 1}: pid"),
                "serverapp": re.compile(r"^fedlr: writing"),
            }
        else:
            runs_dir = tmp / "runs"
            flags = [a for k, v in overrides.items() for a in ("--set", f"{k}={_toml_value(v)}")]
            command = [sys.executable, "-m", "fedlr.cli", "simulate", *flags]
            command += ["--out", str(runs_dir)]
        log_path = tmp / "output.log"
        try:
            run = run_command(command, env, log_path, timeout, markers)
        finally:
            if variant.deployment:  # idempotent; the script's own trap has normally done it
                with contextlib.suppress(subprocess.TimeoutExpired):
                    subprocess.run(
                        ["bash", str(LAUNCH / "stop.sh"), str(tmp / "cluster")],
                        env=env,
                        capture_output=True,
                        timeout=60,
                        check=False,
                    )
            lingering = reap(tag, grace)
        run.update(variant=variant.name, lingering=lingering)
        for name in markers:
            seen = run["marks"].get(name)
            run[f"{name}_s"] = seen - run["t0"] if seen is not None else None
        del run["marks"]
        timeline(run, runs_dir, overrides["strategies"], rounds)
        if trace and variant.deployment:
            phases: dict[str, list[float]] = {key: [] for key in TRACE_KEYS}
            for log in sorted((tmp / "cluster").glob("supernode-*.log")):
                for key, values in trace_phases(log).items():
                    phases[key].extend(values)
            for key, values in phases.items():
                run[key] = statistics.median(values) if values else None
        run["error"] = _problem(run, variant, tmp, clients, rounds)
        if run["error"]:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
            run["output_tail"] = tail
        if keep is not None:
            run["folder"] = str(tmp)
    return run


def _problem(run: dict[str, Any], variant: Variant, tmp: Path, clients: int, rounds: int) -> str:
    """What went wrong with a run ('' if nothing): exit code, rounds, shims not used."""
    if run["timed_out"]:
        return f"timed out after {run['wall_s']:.0f} s"
    if run["rc"] != 0:
        return f"exit code {run['rc']}"
    if run["rounds_logged"] != rounds:
        return f"{run['rounds_logged']} of {rounds} rounds in rounds.jsonl"
    used = (tmp / "shims.log").read_text().split() if (tmp / "shims.log").exists() else []
    if variant.grid_poll is not None and "grid" not in used:
        return "the flwr-serverapp shim was not used"
    if variant.node_poll is not None and used.count("node") != clients:
        return f"the flower-supernode shim ran {used.count('node')} times, not {clients}"
    return ""


# -- report --------------------------------------------------------------------------------------
KEYS = (
    "wall_s",
    "startup_s",
    "cluster_s",
    "serverapp_s",
    "per_round_s",
    "after_last_s",
    *TRACE_KEYS,
)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Medians per variant (good runs only) and ratios to the simulation and to ``deploy``."""
    good = [r for r in runs if not r["error"]]
    medians = {
        name: {
            "runs": len([r for r in good if r["variant"] == name]),
            **{k: _median([r for r in good if r["variant"] == name], k) for k in KEYS},
        }
        for name in names
    }
    ratios: dict[str, Any] = {}
    for name in names:
        if name == "simulation":
            continue
        entry: dict[str, Any] = {}
        for ref in ("simulation", "deploy"):
            if ref in medians and ref != name:
                for key in ("per_round_s", "startup_s", "wall_s"):
                    entry[f"{key[:-2]}_vs_{ref}"] = _ratio(medians, name, ref, key)
        ratios[name] = entry
    return {"medians": medians, "ratios": ratios}


def _ratio(medians: dict[str, Any], a: str, b: str, key: str) -> float | None:
    x, y = medians[a][key], medians[b][key]
    return x / y if x is not None and y else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(summary: dict[str, Any], repeats: int, trace: bool) -> None:
    """Print the medians and the ratios, one row per variant."""
    header: tuple[str, ...] = ("variant", "runs", "wall s", "start-up s", "cluster s")
    header += ("serverapp s", "per round s", "after last s", "round x sim", "start-up x sim")
    header += ("round x deploy",)
    if trace:
        header += ("between s", "launch s", "clientapp s")
    rows: list[tuple[str, ...]] = []
    for name, m in summary["medians"].items():
        r = summary["ratios"].get(name, {})
        row: tuple[str, ...] = (
            name,
            str(m["runs"]),
            _fmt(m["wall_s"]),
            _fmt(m["startup_s"]),
            _fmt(m["cluster_s"]),
            _fmt(m["serverapp_s"]),
            _fmt(m["per_round_s"], ".2f"),
            _fmt(m["after_last_s"]),
            _fmt(r.get("per_round_vs_simulation"), ".1f"),
            _fmt(r.get("startup_vs_simulation"), ".2f"),
            _fmt(r.get("per_round_vs_deploy"), ".2f"),
        )
        if trace:
            row += tuple(_fmt(m[key], ".2f") for key in TRACE_KEYS)
        rows.append(row)
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    print(f"\nmedians of {repeats} repeat(s):")
    for row in (header, *rows):
        print(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def _run_line(run: dict[str, Any], repeats: int) -> str:
    deltas = " ".join(f"{d:.1f}" for d in run["round_deltas_s"])
    line = (
        f"[{run['repeat']}/{repeats}] {run['variant']:<22} wall {run['wall_s']:6.1f} s  "
        f"start-up {_fmt(run['startup_s'])} s  per round {_fmt(run['per_round_s'], '.2f')} s "
        f"[{deltas}]  after last {_fmt(run['after_last_s'])} s  load {run['load1_after']:.1f}"
    )
    if run["lingering"]:
        line += f"  ({run['lingering']} leftover processes stopped)"
    if run["error"]:
        line += f"\n  FAILED: {run['error']}\n{run['output_tail']}"
    return line


def main() -> None:
    """Parse the options, run every variant ``--repeats`` times interleaved, report."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=None, help="runs per variant (3)")
    parser.add_argument("--rounds", type=int, default=None, help="num-server-rounds (4)")
    parser.add_argument("--clients", type=int, default=2, help="nodes = num-clients (2)")
    parser.add_argument("--strategy", default="fedavg", help="the one fedlr strategy (fedavg)")
    parser.add_argument("--set", action="append", default=[], help="extra fedlr key=value")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 rounds, 1 repeat")
    parser.add_argument("--variants", default=None, help="comma list (default: all)")
    parser.add_argument("--exec-poll", type=float, default=0.1, help="SuperExec poll s (0.1)")
    parser.add_argument("--grid-poll", type=float, default=0.1, help="ServerApp pull s (0.1)")
    parser.add_argument("--node-poll", type=float, default=0.1, help="SuperNode poll s (0.1)")
    parser.add_argument("--timeout", type=float, default=600, help="limit per run, s (600)")
    parser.add_argument("--grace", type=float, default=10, help="wait before stopping leftovers")
    parser.add_argument("--keep", type=Path, help="keep each run's folder under this folder")
    parser.add_argument(
        "--trace", action="store_true", help="DEBUG logs: split each phase (see trace_phases)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="results file (results/deployment.json; --quick: results/deployment-quick.json)",
    )
    args = parser.parse_args()

    if not 0.01 <= args.exec_poll <= 60:  # run_superexec.py:49-50 refuses anything else
        parser.error(f"--exec-poll: expected 0.01 to 60 s, got {args.exec_poll}")
    if args.grid_poll <= 0 or args.node_poll <= 0:
        parser.error("--grid-poll, --node-poll: expected seconds > 0")
    if args.clients < 2:
        parser.error(f"--clients: expected >= 2 (local-cluster.sh needs 2), got {args.clients}")
    rounds = args.rounds or (3 if args.quick else 4)
    repeats = args.repeats or (1 if args.quick else 3)
    if rounds < 1 or repeats < 1:
        parser.error("--rounds, --repeats: expected >= 1")
    all_variants = make_variants(args.exec_poll, args.grid_poll, args.node_poll)
    names = [s.strip() for s in (args.variants or ",".join(all_variants)).split(",") if s.strip()]
    if unknown := [n for n in names if n not in all_variants]:
        parser.error(f"--variants: unknown {unknown}; allowed: {', '.join(all_variants)}")
    try:
        overrides = job_overrides(args.clients, rounds, args.strategy, args.set)
    except ValueError as error:  # fedlr's ConfigError is a ValueError
        parser.error(str(error))
    default_json = "deployment-quick.json" if args.quick else "deployment.json"
    out = args.json or ROOT / "results" / default_json
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)

    print(
        f"job: {' '.join(f'{k}={v}' for k, v in overrides.items())}; "
        f"{repeats} repeat(s) of {', '.join(names)}",
        flush=True,
    )
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="deployment-shims-") as shim_tmp:
        shims = write_shims(Path(shim_tmp))
        for repeat in range(1, repeats + 1):
            for name in names:
                run = run_variant(
                    all_variants[name],
                    overrides,
                    shims,
                    args.timeout,
                    args.grace,
                    args.keep,
                    args.trace,
                )
                run["repeat"] = repeat
                run["load1_after"] = os.getloadavg()[0]  # other users' load shows up here
                runs.append(run)
                print(_run_line(run, repeats), flush=True)
    summary = summarize(runs, names)
    print_table(summary, repeats, args.trace)
    print(
        "per round: median over rounds of one round's end to the next (a train and an evaluate "
        "phase); x sim, x deploy: ratios of medians"
        + ("; between, launch, clientapp: per message, see trace_phases" if args.trace else "")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "job": overrides,
        "variants": {n: asdict(all_variants[n]) for n in names},
        "repeats": repeats,
        **summary,
        "runs": runs,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "flwr": _version("flwr"),
            "torch": _version("torch"),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")
    if any(r["error"] for r in runs):
        sys.exit(f"{sum(1 for r in runs if r['error'])} run(s) failed (see above)")


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()

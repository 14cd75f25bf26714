"""Framework overhead of ``fedlr simulate``: fedlr vs a plain Flower app vs a plain PyTorch loop.

One process runs, side by side and on the same workload config, each system as the user runs it,
each in a fresh subprocess (imports, Ray start-up and teardown all count):

* ``plain-loop``: ``benchmarks/plain_loop.run_plain(cfg, "estimate")``: one process, clients in
  sequence, the noise estimate every round, FedAvg; no per-round evaluation and no loss of the
  received model (only the final evaluation);
* ``plain-flower``: ``benchmarks/plain_flower_app.py``: Flower's stock ``FedAvg`` on the
  simulation engine, one CPU per client; the same per-client work as fedlr's ClientApp (loss of
  the received model, the noise estimate, local training, per-round evaluation of every client);
* ``fedlr``: ``python -m fedlr.cli simulate --set ... --out TMP`` with ``strategies =
  noise-adaptive``: query round, per-client rates, run directory, report.

Repeats are interleaved (loop, flower, fedlr, loop, ...) so the three share the machine's noise;
the table shows medians and the ratios of the median wall times. Per run:

* ``wall``: command start to exit;
* ``start-up``: command start to the end of round 1 (fedlr: the first ``rounds.jsonl`` line;
  plain-flower: ``evaluate_fn`` after round 1; plain-loop: the last client's local training of
  round 1), so it includes imports, data, Ray, the query round (fedlr) and one round of work;
* ``per round``: (end of last round - end of round 1) / (rounds - 1), the steady state;
* ``after last``: end of the last round to exit (Ray shutdown; fedlr also writes its report);
* ``peak RSS``: the largest sum of the resident set sizes of the process and all its
  descendants (Ray's raylet, GCS, agents and workers), sampled every ``--interval`` seconds.
  Shared pages (torch in every worker) count once per process.

    .venv/bin/python benchmarks/overhead.py --quick
    .venv/bin/python benchmarks/overhead.py --repeats 3 --json results/overhead.json

The default workload (50 clients x 20 rounds, hidden 512, 40 noisy clients, 90 local epochs)
takes the plain loop about a minute on an idle 2-core machine (``--calibrate 60`` re-measures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # Ray ships its own copy (ray/thirdparty_files), not on sys.path until imported
    import importlib.util

    _ray = importlib.util.find_spec("ray")
    if _ray is None or not _ray.submodule_search_locations:
        raise
    sys.path.append(str(Path(next(iter(_ray.submodule_search_locations))) / "thirdparty_files"))
    import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYSTEMS = ("plain-loop", "plain-flower", "fedlr")

# 50 clients x 20 rounds with a wider MLP; local-epochs sets the compute (--calibrate).
WORKLOAD = [
    "num-clients=50",
    "num-server-rounds=20",
    "hidden=512",
    "noisy-clients=40",
    "local-epochs=90",
    "strategies=noise-adaptive",
]
QUICK = [
    "num-clients=10",
    "num-server-rounds=3",
    "hidden=512",
    "noisy-clients=8",
    "local-epochs=2",
    "strategies=noise-adaptive",
]
TARGETS = {"plain-flower": 1.05, "plain-loop": 1.2}  # fedlr / reference, at most


# -- child: the plain loop, with a timestamp after each round ------------------------------------
def _child_plain_loop(sets: list[str], events: Path) -> None:
    """Run ``run_plain(cfg, "estimate")``; log a timestamp after each round's last client."""
    from plain_loop import run_plain

    from fedlr import config as fedlr_config
    from fedlr.tasks import tabular

    cfg = fedlr_config.resolve(overrides=dict(fedlr_config.parse_override(s) for s in sets))
    k = cfg["num-clients"]
    log = open(events, "a", encoding="utf-8")  # noqa: SIM115
    original = tabular.train_local
    calls = 0

    def train_local(*args: Any, **kwargs: Any) -> float:
        nonlocal calls
        out = original(*args, **kwargs)
        calls += 1
        if calls % k == 0:
            log.write(json.dumps({"round": calls // k, "t": time.time()}) + "\n")
            log.flush()
        return out

    tabular.train_local = train_local  # run_plain calls tabular.train_local by attribute
    log.write(json.dumps({"round": 0, "t": time.time()}) + "\n")
    start = time.perf_counter()
    out = run_plain(cfg, "estimate")
    log.close()
    acc = sum(out["accuracy"]) / len(out["accuracy"])
    print(f"plain-loop: mean accuracy {100 * acc:.1f}%, {time.perf_counter() - start:.1f} s")


# -- measuring one command ---------------------------------------------------------------------
def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except psutil.Error:
        return 0


def _read_events(path: Path) -> dict[int, float]:
    """``{round: unix time}`` from a JSON-lines events file (missing file: empty)."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            event = json.loads(line)
            out[int(event["round"])] = float(event["t"])
    return out


def _round_lines(text: str) -> list[dict[str, Any]]:
    """The round lines of a ``rounds.jsonl`` text (its events and a line cut short left out)."""
    lines = []
    for x in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            line = json.loads(x)
            if isinstance(line, dict) and "round" in line and "event" not in line:
                lines.append(line)
    return lines


class FedlrRounds:
    """Polls fedlr's ``rounds.jsonl`` (under ``out``) for the time of the first round's line."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.first: float | None = None

    def poll(self) -> None:
        """Note the first round's time once ``rounds.jsonl`` has a line."""
        if self.first is not None:
            return
        for path in self.out.glob("*/rounds.jsonl"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                lines = len(_round_lines(path.read_text()))
                if lines == 1:  # mtime = the write of round 1
                    self.first = stat.st_mtime
                elif lines > 1:  # polled late: the best bound we have
                    self.first = time.time()

    def rounds(self) -> dict[int, float]:
        """``{round: unix time}``: the first line's time plus each line's ``elapsed_s`` offset."""
        paths = list(self.out.glob("*/rounds.jsonl"))
        if not paths or self.first is None:
            return {}
        lines = _round_lines(paths[0].read_text())
        if not lines:
            return {}
        base = lines[0]["elapsed_s"]
        return {int(x["round"]): self.first + x["elapsed_s"] - base for x in lines}


def measure(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    interval: float,
    poll: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run ``command``; return its wall time, start time, peak tree/driver RSS and exit code."""
    peak_tree = peak_driver = 0
    seen: dict[int, float] = {}
    stop = threading.Event()
    with open(log_path, "w", encoding="utf-8") as log:
        t0 = time.time()
        p0 = time.perf_counter()
        popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        proc = psutil.Process(popen.pid)

        def sample() -> None:
            nonlocal peak_tree, peak_driver
            while not stop.is_set():
                procs = _tree(proc)
                sizes = [_rss(p) for p in procs]
                peak_tree = max(peak_tree, sum(sizes))
                peak_driver = max(peak_driver, sizes[0])
                for p in procs[1:]:
                    with contextlib.suppress(psutil.Error):
                        seen.setdefault(p.pid, p.create_time())
                if poll is not None:
                    poll()
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = popen.wait()
        wall = time.perf_counter() - p0
        stop.set()
        sampler.join()
    if poll is not None:
        poll()
    lingering = _reap(seen)
    return {
        "t0": t0,
        "wall_s": wall,
        "rc": rc,
        "peak_rss_mb": peak_tree / 2**20,
        "peak_driver_rss_mb": peak_driver / 2**20,
        "lingering": lingering,
    }


def _reap(seen: dict[int, float], grace: float = 10.0) -> int:
    """Wait for the run's descendants to exit; terminate (by pid) those still up after ``grace``.

    Returns how many had to be terminated (Ray processes that outlived their driver).
    """

    def alive() -> list[psutil.Process]:
        out = []
        for pid, created in seen.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
        return out

    deadline = time.monotonic() + grace
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    psutil.wait_procs(left, timeout=5)
    return len(left)


# -- one run of each system --------------------------------------------------------------------
def _phases(run: dict[str, Any], rounds: dict[int, float], num_rounds: int) -> None:
    """Add start-up, per-round and after-last-round seconds from ``{round: unix time}``."""
    end = run["t0"] + run["wall_s"]
    first, last = rounds.get(1), rounds.get(num_rounds)
    run["startup_s"] = first - run["t0"] if first is not None else None
    run["per_round_s"] = (
        (last - first) / (num_rounds - 1)
        if first is not None and last is not None and num_rounds > 1
        else None
    )
    run["after_last_s"] = end - last if last is not None else None


def run_system(
    system: str, sets: list[str], num_rounds: int, env: dict[str, str], interval: float
) -> dict[str, Any]:
    """Measure one fresh run of ``system``."""
    with tempfile.TemporaryDirectory(prefix=f"overhead-{system}-") as tmp:
        tmpdir = Path(tmp)
        flags = [arg for s in sets for arg in ("--set", s)]
        events = tmpdir / "events.jsonl"
        log = tmpdir / "output.log"
        poll = None
        if system == "plain-loop":
            command = [sys.executable, str(Path(__file__).resolve()), "--child-plain-loop"]
            command += [*flags, "--events", str(events)]
        elif system == "plain-flower":
            command = [sys.executable, str(HERE / "plain_flower_app.py"), *flags]
            command += ["--events", str(events)]
        elif system == "fedlr":
            out = tmpdir / "runs"
            command = [sys.executable, "-m", "fedlr.cli", "simulate", *flags, "--out", str(out)]
            fedlr_rounds = FedlrRounds(out)
            poll = fedlr_rounds.poll
        else:
            raise ValueError(f"system: expected one of {', '.join(SYSTEMS)}, got {system!r}")
        run = measure(command, env, log, interval, poll)
        output = log.read_text(errors="replace")
        if run["rc"] != 0:
            tail = "\n".join(output.splitlines()[-30:])
            raise RuntimeError(f"{system} exited with {run['rc']}:\n{tail}")
        rounds = fedlr_rounds.rounds() if system == "fedlr" else _read_events(events)
        _phases(run, rounds, num_rounds)
        run["system"] = system
        run["rounds_logged"] = len([r for r in rounds if r > 0])
        return run


# -- report --------------------------------------------------------------------------------------
def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]], systems: list[str]) -> dict[str, Any]:
    """Medians per system and the ratios of fedlr's median wall time to each reference."""
    keys = ("wall_s", "startup_s", "per_round_s", "after_last_s", "peak_rss_mb")
    medians = {
        s: {
            k: _median([r for r in runs if r["system"] == s], k)
            for k in (*keys, "peak_driver_rss_mb")
        }
        for s in systems
    }
    ratios: dict[str, Any] = {}
    if "fedlr" in medians:
        for ref, target in TARGETS.items():
            if ref in medians and medians[ref]["wall_s"]:
                value = medians["fedlr"]["wall_s"] / medians[ref]["wall_s"]
                ratios[f"fedlr/{ref}"] = {
                    "wall": value,
                    "target": target,
                    "ok": value <= target,
                    "per_round": _ratio(medians, "fedlr", ref, "per_round_s"),
                    "startup": _ratio(medians, "fedlr", ref, "startup_s"),
                }
    return {"medians": medians, "ratios": ratios}


def _ratio(medians: dict[str, Any], a: str, b: str, key: str) -> float | None:
    x, y = medians[a][key], medians[b][key]
    return x / y if x is not None and y else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(summary: dict[str, Any], repeats: int) -> None:
    header = ("system", "wall s", "start-up s", "per round s", "after last s", "peak RSS MB")
    header += ("driver MB",)
    rows = [
        (
            system,
            _fmt(m["wall_s"]),
            _fmt(m["startup_s"]),
            _fmt(m["per_round_s"], ".2f"),
            _fmt(m["after_last_s"]),
            _fmt(m["peak_rss_mb"], ".0f"),
            _fmt(m["peak_driver_rss_mb"], ".0f"),
        )
        for system, m in summary["medians"].items()
    ]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    print(f"\nmedians of {repeats} run(s):")
    for row in (header, *rows):
        print(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for name, r in summary["ratios"].items():
        verdict = "ok" if r["ok"] else "OVER"
        print(
            f"{name}: wall {r['wall']:.3f}x (target <= {r['target']}x: {verdict}); "
            f"per round {_fmt(r['per_round'], '.3f')}x, start-up {_fmt(r['startup'], '.3f')}x"
        )


# -- calibration ---------------------------------------------------------------------------------
def calibrate(sets: list[str], target: float, env: dict[str, str], interval: float) -> None:
    """Run the plain loop once as measured; print the local-epochs for ``target`` wall seconds.

    Wall = fixed (imports, data, exit) + rounds x epochs x (seconds per client-epoch sweep); short
    in-process runs underestimate the sweep cost, so this times the workload itself.
    """
    from fedlr import config as fedlr_config

    cfg = fedlr_config.resolve(overrides=dict(fedlr_config.parse_override(s) for s in sets))
    rounds, epochs = cfg["num-server-rounds"], cfg["local-epochs"]
    run = run_system("plain-loop", sets, rounds, env, interval)
    if run["per_round_s"] is None:
        raise RuntimeError("calibrate: needs num-server-rounds >= 2")
    per_epoch = run["per_round_s"] * rounds / epochs
    fixed = run["wall_s"] - run["per_round_s"] * rounds
    suggested = max(1, round((target - fixed) / per_epoch))
    print(
        f"plain loop, local-epochs={epochs}: {run['wall_s']:.1f} s = {fixed:.1f} s fixed + "
        f"{per_epoch:.2f} s per local epoch; local-epochs={suggested} for {target:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", action="append", default=[], help="extra key=value overrides")
    parser.add_argument("--repeats", type=int, default=None, help="runs per system (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 10 x 3 rounds, 1 run")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of systems")
    parser.add_argument("--interval", type=float, default=0.2, help="memory sampling period (s)")
    parser.add_argument("--json", type=Path, help="write medians, ratios and every run here")
    parser.add_argument(
        "--calibrate", type=float, metavar="SECONDS", help="print local-epochs for this loop time"
    )
    parser.add_argument("--child-plain-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    sets = [*(QUICK if args.quick else WORKLOAD), *args.set]
    if args.child_plain_loop:
        _child_plain_loop(args.set, args.events)
        return
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    if args.calibrate:
        calibrate(sets, args.calibrate, env, args.interval)
        return

    from fedlr import config as fedlr_config

    cfg = fedlr_config.resolve(overrides=dict(fedlr_config.parse_override(s) for s in sets))
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := [s for s in systems if s not in SYSTEMS]:
        parser.error(f"--systems: unknown {unknown}; allowed: {', '.join(SYSTEMS)}")
    repeats = args.repeats or (1 if args.quick else 3)
    print(f"workload: {' '.join(sets)}; {repeats} run(s) of {', '.join(systems)}", flush=True)
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    for repeat in range(1, repeats + 1):
        for system in systems:
            run = run_system(system, sets, cfg["num-server-rounds"], env, args.interval)
            run["repeat"] = repeat
            run["load1_after"] = os.getloadavg()[0]  # other users' load shows up here
            runs.append(run)
            print(
                f"[{repeat}/{repeats}] {system:<12} wall {run['wall_s']:6.1f} s  "
                f"start-up {_fmt(run['startup_s'])} s  "
                f"per round {_fmt(run['per_round_s'], '.2f')} s  "
                f"after last {_fmt(run['after_last_s'])} s  peak {run['peak_rss_mb']:.0f} MB  "
                f"load {run['load1_after']:.1f}"
                + (
                    f"  ({run['lingering']} lingering processes terminated)"
                    if run["lingering"]
                    else ""
                ),
                flush=True,
            )
    summary = summarize(runs, systems)
    print_table(summary, repeats)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "workload": sets,
            "config": cfg,
            "repeats": repeats,
            **summary,
            "runs": runs,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_before": load_before,
                "load_after": os.getloadavg(),
            },
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""The ``fedlr`` command: ``simulate``, ``report``, ``config`` and ``gate``.

``simulate`` runs a scenario on Flower's simulation engine; ``gate`` is a Fleet-only door to a
SuperLink.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedlr import config as fedlr_config

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Federated training in which every client learns at its own rate.",
)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print one line and exit (2 for bad input)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    for warning in caught:
        err.print(f"[bold yellow]warning:[/] {warning.message}", highlight=False, soft_wrap=True)


def _quiet_engine(verbose: bool) -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not verbose:
        os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
        logging.getLogger("flwr").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")


def _stop_on_interrupt(run_dir: Path, console: Console) -> None:
    """Ctrl-C (or SIGTERM) stops the run at once: the engine's processes, then this one.

    Ray's own shutdown after an interrupt can take a minute or more. Instead, every process this
    one started (Ray's raylet, GCS and workers: its children, found by PID, never by name) gets
    SIGTERM, then SIGKILL after 3 s, and fedlr exits with 130 after printing the command that
    resumes the run from its last checkpoint.
    """
    import signal

    import psutil

    def stop(signum: int, frame: object) -> None:
        console.print(
            f"\nfedlr: stopped; resume with: fedlr simulate --resume {run_dir}", highlight=False
        )
        children = psutil.Process().children(recursive=True)
        for child in children:
            try:
                child.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(children, timeout=3)
        for child in alive:
            try:
                child.kill()
            except psutil.Error:
                pass
        os._exit(130 if signum == signal.SIGINT else 143)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def _visible_gpus() -> int:
    """GPUs torch can use in this process (CUDA_VISIBLE_DEVICES applied)."""
    import torch

    return torch.cuda.device_count()


@cli.command()
def simulate(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="Scenario TOML (flat keys). Default: the built-in noisy_hospitals scenario."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="Override one key: --set num-server-rounds=5 (repeatable)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Parent folder of the run directory.")] = None,
    verbose: Annotated[bool, typer.Option(help="Show Flower's and Ray's logs.")] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue a stopped run from its checkpoint, in its own directory and config."
        ),
    ] = None,
) -> None:
    """Run every strategy of a scenario side by side on Flower's simulation engine."""
    _quiet_engine(verbose)  # before anything imports flwr: it reads these once, on import
    saved = None
    # The config's own warnings (a setting that does nothing) reach the user, one line each,
    # even though the engine's are silenced.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            if resume is not None:
                saved = _resume_state(resume, config, set_, out)
                cfg = saved[0]
            else:
                overrides: dict[str, Any] = dict(fedlr_config.parse_override(s) for s in set_ or [])
                if "resume" in overrides:
                    raise fedlr_config.ConfigError(
                        "resume: fedlr simulate resumes with --resume RUN_DIR (the resume key "
                        "is for `flwr run`), got --set resume"
                    )
                if out is not None:
                    overrides["out-dir"] = str(out)
                cfg = fedlr_config.resolve(config, overrides)
            from fedlr.fl.own_observers import load_observers

            load_observers(cfg)  # the run's own observers load and follow the protocol
        except fedlr_config.ConfigError as error:
            _print_warnings(caught)
            fail(str(error))
    _print_warnings(caught)

    from flwr.simulation import run_simulation

    if not verbose:  # flwr configures its logger on import: quiet it afterwards
        logging.getLogger("flwr").setLevel(logging.ERROR)

    from fedlr.fl.client_app import app as client_app
    from fedlr.fl.recorder import new_run_dir, write_config
    from fedlr.fl.server_app import make_server_app

    strategies = fedlr_config.split_list(cfg["strategies"])
    rounds = cfg["num-server-rounds"]
    console = Console()
    done_rounds: dict[str, int] = {}
    if saved is not None:
        run_dir, checkpoint = saved[1], saved[2]
        if checkpoint is not None:
            done_rounds = dict.fromkeys(checkpoint.done, rounds)
            done_rounds.setdefault(checkpoint.strategy, checkpoint.round)
        if checkpoint is not None and set(strategies) <= set(checkpoint.done):
            from fedlr.report import render_report

            render_report(run_dir)  # the kill may have come before the report was written
            console.print(f"fedlr: {run_dir} is already complete")
            _print_summary(console, run_dir)
            return

    cores = os.cpu_count() or 1
    if cfg["client-cpus"] > cores:
        fail(
            f"client-cpus: expected at most the {cores} CPU cores of this machine, "
            f"got {cfg['client-cpus']}"
        )
    gpus = _visible_gpus() if cfg["client-gpus"] > 0 or cfg["device"] == "cuda" else 0
    if cfg["device"] == "cuda" and gpus == 0:  # every client would fail inside Ray
        fail(
            f"device: expected auto or cpu here, where torch sees no GPU "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}), got 'cuda'"
        )
    if cfg["client-gpus"] > 0 and gpus == 0:  # Ray could never place a client
        fail(
            f"client-gpus: expected 0 here, where torch sees no GPU "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}), "
            f"got {cfg['client-gpus']}"
        )
    if cfg["client-gpus"] > gpus > 0:
        fail(f"client-gpus: expected at most the {gpus} GPUs torch sees, got {cfg['client-gpus']}")
    if ":" in str(cfg["model"]) or cfg["task"]:  # the user's module: importable in Ray's workers
        paths = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # Data and model problems (too few samples for a split, missing files, a user's model that
    # cannot be imported) surface now, as one line, not inside Ray.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            from fedlr.tasks import preflight

            preflight(cfg)
        except (ValueError, FileNotFoundError) as error:
            _print_warnings(caught)
            fail(str(error))
    _print_warnings(caught)
    if saved is not None:
        where = (
            f"after round {checkpoint.round} of {checkpoint.strategy}"
            if checkpoint is not None
            else "from the start (no checkpoint yet)"
        )
        console.print(f"fedlr: resuming {run_dir} {where}")
    else:
        try:
            run_dir = new_run_dir(cfg["out-dir"], cfg["name"])
            write_config(run_dir, cfg)  # from now on the run can be resumed, whenever it dies
        except OSError as error:
            fail(
                f"out-dir: cannot create a run directory under {cfg['out-dir']!r} "
                f"({error.strerror})"
            )
        console.print(
            f"fedlr: {cfg['name']}, {len(strategies)} strategies x {rounds} rounds x "
            f"{cfg['num-clients']} clients -> {run_dir}"
        )
    failure: list[BaseException] = []
    progress = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[acc]}"),
        TimeElapsedColumn(),
        console=console,
    )
    tasks = {
        name: progress.add_task(name, total=rounds, completed=done_rounds.get(name, 0), acc="")
        for name in strategies
    }
    lock = threading.Lock()

    def on_round(name: str, server_round: int, line: dict[str, Any]) -> None:
        acc = line.get("accuracy_mean")
        with lock:
            progress.update(
                tasks[name],
                completed=server_round,
                acc=f"acc {100 * acc:5.1f}%" if acc is not None else "",
            )

    server_app = make_server_app(cfg, run_dir, on_round, failures=failure, resume=saved is not None)
    _stop_on_interrupt(run_dir, console)
    with progress:
        try:
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=cfg["num-clients"],
                backend_config={
                    "client_resources": {
                        "num_cpus": cfg["client-cpus"],
                        "num_gpus": cfg["client-gpus"],
                    },
                    "init_args": {
                        "logging_level": "ERROR",
                        "log_to_driver": verbose,
                        # Ray counts GPUs through NVML; torch's count (which honours
                        # CUDA_VISIBLE_DEVICES) also covers hosts where NVML cannot load
                        **({"num_gpus": gpus} if gpus else {}),
                    },
                },
                verbose_logging=verbose,
            )
        except Exception as error:  # the engine itself failed (e.g. Ray could not start)
            failure.append(error)
    if failure:
        first = failure[0]
        fail(f"{type(first).__name__}: {first} (partial results kept in {run_dir})", code=1)
    if not (run_dir / "results.json").exists():
        fail(f"the simulation stopped before any strategy finished (see {run_dir})", code=1)
    console.print(f"report: {run_dir / 'report.md'}")
    _print_summary(console, run_dir)


def _resume_state(
    run_dir: Path, config: Path | None, set_: list[str] | None, out: Path | None
) -> tuple[dict[str, Any], Path, Any]:
    """Config, directory and checkpoint of the run to resume (ConfigError if it cannot be)."""
    if config is not None or set_ or out is not None:
        raise fedlr_config.ConfigError(
            "--resume: the run goes on with its own config.toml and directory; "
            "drop CONFIG, --set and --out"
        )
    from fedlr.fl import checkpoint
    from fedlr.fl.server_app import resume_config

    if not run_dir.is_dir():
        raise fedlr_config.ConfigError(f"--resume: {run_dir} is not a directory")
    cfg = resume_config(run_dir)
    try:
        return cfg, run_dir, checkpoint.load(run_dir)
    except ValueError as error:
        raise fedlr_config.ConfigError(f"--resume: {error}") from None


def _print_summary(console: Console, run_dir: Path) -> None:
    import json

    from rich.table import Table

    results = json.loads((run_dir / "results.json").read_text())
    # the fairness summary is of the run's fairness-metric (results.json names it when not
    # accuracy); scores are shown in percent, a loss as it is (its worst 10% the highest)
    named = [e.get("fairness_metric") for e in results["strategies"].values()]
    metric = next((str(m) for m in named if m), "accuracy")
    scale, digits = (1.0, 3) if metric == "loss" else (100.0, 1)
    table = Table(title=f"per-client {metric} of the final global model (unweighted over clients)")
    for column in ("strategy", "mean", "worst-10%", "variance", "Jain", "rho(est, true)"):
        table.add_column(column, justify="right" if column != "strategy" else "left")
    for name, entry in results["strategies"].items():
        fair = entry.get("fairness") or {}
        rho = (entry.get("estimator") or {}).get("spearman")
        table.add_row(
            name,
            f"{scale * fair['mean']:.{digits}f}" if fair else "n/a",
            f"{scale * fair['worst10']:.{digits}f}" if fair else "n/a",
            f"{scale * scale * fair['variance']:.{digits + 1 if scale == 1 else 1}f}"
            if fair
            else "n/a",
            f"{fair['jain']:.3f}" if fair else "n/a",
            f"{rho:.2f}" if rho is not None else "-",
        )
    console.print(table)


@cli.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by simulate.")],
) -> None:
    """Re-render report.md, results.csv and the plots of a run directory."""
    if not run_dir.is_dir():
        fail(f"run_dir: {run_dir} is not a directory")
    if not (run_dir / "rounds.jsonl").exists():
        fail(f"run_dir: {run_dir} has no rounds.jsonl (expected a directory written by simulate)")
    from fedlr.report import render_report, write_csv

    try:
        path = render_report(run_dir)
        write_csv(run_dir)
    except ValueError as error:  # unreadable results.json, nothing to report
        fail(f"run_dir: {error}")
    Console().print(f"report: {path}")


CONFIGURATION_INTRO = """\
# Configuration

<!-- Generated from the schema by `fedlr config --page > docs/configuration.md`; do not edit by
hand. tests/test_config.py fails when this page and the schema differ. -->

A run is one flat table of keys. Each source overrides the one before it:

1. fedlr's defaults (the table below), which are the `noisy_hospitals` scenario;
2. a TOML file: `fedlr simulate SCENARIO.toml` (the scenarios in `simulations/`, or a run
   directory's `config.toml`);
3. `--set key=value`, repeatable: `fedlr simulate SCENARIO.toml --set seed=1 --set
   strategies=fedavg,noise-adaptive`.

A list is a TOML array or a comma-separated string in a file (`strategies = ["fedavg",
"noise-adaptive"]`), and a comma-separated string after `--set`. An unknown key, a wrong type or a
value out of range stops with one line naming the key and what is allowed, exit code 2:

```
$ fedlr simulate --set noise-rate-max=1.5
error: noise-rate-max: expected a number in [0, 1], got 1.5
```

`fedlr config SCENARIO.toml --set key=value` prints the resolved config as TOML without running
anything; `fedlr config --keys` prints the table below, and `fedlr config --page` this page.

Keys that share their first word may be written as a section: a table named by that word holds
the rest of each key. This file sets the flat keys in its comments:

```toml
[schedule]                        # schedule-floor = 0.2
floor = 0.2                       # schedule-period = 7
period = 7
[coupling]                        # coupling-warmup-rounds = 2
warmup-rounds = 2
```

`--set schedule.floor=0.2` is `--set schedule-floor=0.2`. A key given both ways in one file (or
one `--set` list) is refused; across sources the later one wins, as for flat keys. A resolved
config (`config.toml` of a run) is written flat.

## Named strategies

An entry of `strategies` is a rule with modifiers on one line (`fedavg+adam+cosine`), whose
modifiers read the run's keys (`schedule-floor`, `adam-lr`, ...). To give one strategy its own
values, name it and define it in a table `[strategy.NAME]`; the name is what results.json and
the report show:

```toml
strategies = "fedavg, cos-lo, cos-hi"

[strategy.cos-lo]
rule = "fedavg"
schedule = { name = "cosine", floor = 0.1 }

[strategy.cos-hi]
rule = "fedavg"
optimizer = { name = "adam", lr = 0.005 }   # sets adam-lr for cos-hi only
schedule = "cosine"
schedule-floor = 0.5                         # the same as schedule = { ..., floor = 0.5 }
```

A table holds:

- `rule`, required: one of the rules of `strategies` below;
- its modifiers: `optimizer` (`sgd`, `adam`, `adagrad`) and `schedule` (`step`, `exponential`,
  `cosine`, `warm-restarts`, `cyclical`, `one-cycle`, `phases`) name one; `degree`, `coupled`,
  `grow-batch` and `replay` are `true` or `false`. Each may instead be a table of the
  modifier's parameters (with `name` for an optimizer or a schedule), which set the keys it
  owns: an optimizer's `lr` (its base rate: `lr`, `adam-lr` or `adagrad-lr`), `momentum`
  (SGD) and `weight-decay`; a schedule's `period`, `gamma`, `floor`, `warmup`, `peak-decay`
  (`schedule-*`, those the schedule reads: cosine only `floor`); `coupled`'s `rule`,
  `reference`, `low`, `high`, `warmup-rounds` (`coupling-*`); `degree`'s `gamma`, `mode`,
  `source`, `low`, `high` (`degree-*`); `replay`'s `size` (`replay-size`);
- or the keys themselves, for this strategy only: any optimizer's (`lr`, `adam-lr`,
  `adagrad-lr`, `momentum`, `weight-decay`), its rule's (fedprox: `fedprox-mu`; fedcorr-prox:
  `fedprox-mu`, `fedcorr-beta`; qfedavg: `qfedavg-q`; noise-adaptive:
  `noise-weighted-aggregation`) and its modifiers' (`schedule-floor`, `coupling-rule`, ...).

Every other key is the run's, set at the top of the file. Each value is checked as its key is,
and the modifiers' checks see the strategy's own values. A table that is not listed in
`strategies`, a listed name with no table, a table named like a rule, an unknown key, a key of a
modifier the table does not use, or a value out of range stops with one line:

```
$ fedlr simulate cos.toml
error: strategy.cos-lo.schedule.gamma: not a parameter of cosine; allowed: name, floor
```

`--set` reaches a table by its dotted key: `--set strategy.cos-lo.schedule-floor=0.2`.

## Under `flwr run`

The repository is also a Flower App. Its defaults are `[tool.flwr.app.config]` in
`pyproject.toml`, equal to fedlr's (a test checks it), and Flower's `--run-config` overrides
them: `flwr run . --stream --run-config "num-server-rounds=5 out-dir='/abs/path'"`. Flower's
config holds scalars only, so a list is a comma-separated string
(`strategies='fedavg,noise-adaptive'`). Flower passes every key, so there a key counts as set only
where it differs from fedlr's default. A named strategy is a table under the app config,
`[tool.flwr.app.config.strategy.cos-lo]` (sub-tables included, as above), which Flower flattens
into dotted keys (`strategy.cos-lo.rule`, `strategy.cos-lo.schedule.floor`) and fedlr reads back
as the same table; `--run-config` can change such a key, but only one the app config has.
A section of flat keys works the same way (`[tool.flwr.app.config.schedule]`, `floor = 0.2`):
its value wins over the flat key's default, which Flower passes too. The
ServerApp applies the same checks, and the `launch/` scripts refuse a bad `--run-config` string
before any node starts (`launch/check_config.py`).

What belongs to one SuperNode rather than to the run goes in its `--node-config`:
`partition-id` and `num-partitions` (equal to `num-clients`), `data-path` (the site's own file,
[your-data.md](your-data.md)) and `batch-size` (the node's own batch, which wins over
`client-batch-sizes`). See [deployment.md](deployment.md).

## Keys

"""


def configuration_page() -> str:
    """docs/configuration.md: how a config is resolved, then every key of the schema."""
    return CONFIGURATION_INTRO + fedlr_config.keys_markdown()


@cli.command("config")
def show_config(
    config: Annotated[
        Path | None, typer.Argument(help="Scenario TOML. Default: fedlr's defaults.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override one key (repeatable)."),
    ] = None,
    keys: Annotated[
        bool, typer.Option("--keys", help="Print every key as a Markdown table instead.")
    ] = False,
    page: Annotated[
        bool,
        typer.Option(
            "--page",
            help="Print the whole docs/configuration.md page (introduction and table of keys).",
        ),
    ] = False,
) -> None:
    """Print the resolved config as TOML (defaults < file < --set), or the table of keys."""
    if page:
        typer.echo(configuration_page(), nl=False)
        return
    if keys:
        typer.echo(fedlr_config.keys_markdown(), nl=False)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            overrides = dict(fedlr_config.parse_override(s) for s in set_ or [])
            cfg = fedlr_config.resolve(config, overrides)
        except fedlr_config.ConfigError as error:
            _print_warnings(caught)
            fail(str(error))
    _print_warnings(caught)
    typer.echo(fedlr_config.to_toml(cfg), nl=False)


def _address(name: str, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        fail(f"{name}: expected HOST:PORT with a port in 1..65535, got {value!r}")
    return value


@cli.command()
def gate(
    listen: Annotated[
        str, typer.Option(help="Where SuperNodes connect: HOST:PORT, e.g. 0.0.0.0:9092.")
    ],
    superlink: Annotated[
        str, typer.Option(help="The SuperLink, listening on this host only.")
    ] = "127.0.0.1:9091",
    certs: Annotated[
        Path | None,
        typer.Option(
            help="launch/certs.sh's folder: ca.crt, server.pem and server.key. TLS on both "
            "sides; the SuperLink runs with node authentication, so calls must be signed."
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="No TLS on either side (a SuperLink started with --insecure).")
    ] = False,
    max_body_mb: Annotated[
        int, typer.Option(help="Largest request body forwarded, in MiB.", min=1)
    ] = 64,
) -> None:
    """Let SuperNodes reach a SuperLink's Fleet API and nothing else (403 for the Control API)."""
    _address("--listen", listen)
    _address("--superlink", superlink)
    if (certs is None) == (not insecure):
        fail("certs: expected --certs DIR (TLS) or --insecure, exactly one of them")
    if certs is not None:
        for name in ("ca.crt", "server.pem", "server.key"):
            if not (certs / name).is_file():
                fail(f"certs: {certs / name} is missing (launch/certs.sh {certs} N writes it)")
    from fedlr.fl.gate import serve

    Console().print(f"gate: {listen} -> {superlink} (Fleet API only)", highlight=False)
    serve(listen, superlink, certs, max_body=max_body_mb * 2**20)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fedlr")


if __name__ == "__main__":
    main()

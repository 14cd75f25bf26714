"""The ``fedlr`` command: ``simulate`` a scenario on Flower's simulation engine; ``report``."""

from __future__ import annotations

import logging
import os
import threading
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


def _quiet_engine(verbose: bool) -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not verbose:
        os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
        logging.getLogger("flwr").setLevel(logging.ERROR)
        import warnings

        warnings.filterwarnings("ignore")


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
) -> None:
    """Run every strategy of a scenario side by side on Flower's simulation engine."""
    try:
        overrides: dict[str, Any] = dict(fedlr_config.parse_override(s) for s in set_ or [])
        if out is not None:
            overrides["out-dir"] = str(out)
        cfg = fedlr_config.resolve(config, overrides)
    except fedlr_config.ConfigError as error:
        fail(str(error))

    _quiet_engine(verbose)
    from flwr.simulation import run_simulation

    if not verbose:  # flwr configures its logger on import: quiet it afterwards
        logging.getLogger("flwr").setLevel(logging.ERROR)

    from fedlr.fl.client_app import app as client_app
    from fedlr.fl.recorder import new_run_dir
    from fedlr.fl.server_app import make_server_app

    cores = os.cpu_count() or 1
    if cfg["client-cpus"] > cores:
        fail(
            f"client-cpus: expected at most the {cores} CPU cores of this machine, "
            f"got {cfg['client-cpus']}"
        )
    try:  # data problems (too few samples for a split, say) surface now, not inside Ray
        from fedlr.tasks import tabular

        tabular.federation(cfg)
    except ValueError as error:
        fail(str(error))
    try:
        run_dir = new_run_dir(cfg["out-dir"], cfg["name"])
    except OSError as error:
        fail(f"out-dir: cannot create a run directory under {cfg['out-dir']!r} ({error.strerror})")
    strategies = fedlr_config.split_list(cfg["strategies"])
    rounds = cfg["num-server-rounds"]
    console = Console()
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
    tasks = {name: progress.add_task(name, total=rounds, acc="") for name in strategies}
    lock = threading.Lock()

    def on_round(name: str, server_round: int, line: dict[str, Any]) -> None:
        acc = line.get("accuracy_mean")
        with lock:
            progress.update(
                tasks[name],
                completed=server_round,
                acc=f"acc {100 * acc:5.1f}%" if acc is not None else "",
            )

    server_app = make_server_app(cfg, run_dir, on_round, failures=failure)
    with progress:
        try:
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=cfg["num-clients"],
                backend_config={
                    "client_resources": {"num_cpus": cfg["client-cpus"], "num_gpus": 0.0},
                    "init_args": {"logging_level": "ERROR", "log_to_driver": verbose},
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


def _print_summary(console: Console, run_dir: Path) -> None:
    import json

    from rich.table import Table

    results = json.loads((run_dir / "results.json").read_text())
    table = Table(title="per-client accuracy of the final global model (unweighted over clients)")
    for column in ("strategy", "mean", "worst-10%", "variance", "Jain", "rho(est, true)"):
        table.add_column(column, justify="right" if column != "strategy" else "left")
    for name, entry in results["strategies"].items():
        fair = entry.get("fairness") or {}
        rho = (entry.get("estimator") or {}).get("spearman")
        table.add_row(
            name,
            f"{100 * fair['mean']:.1f}" if fair else "n/a",
            f"{100 * fair['worst10']:.1f}" if fair else "n/a",
            f"{1e4 * fair['variance']:.1f}" if fair else "n/a",
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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fedlr")


if __name__ == "__main__":
    main()

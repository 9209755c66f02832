"""``python -m inference_comparisons``: run sweeps, rebuild reports, list the registries."""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.exceptions import TyperException

from inference_comparisons.lock import refuse_if_locked

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Measure how exact each inference method is on the zoo's models, and what it costs.")
# Wide enough for the table when written to a log or a pipe (rich defaults to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 220)


def _split(values: Optional[list[str]], option: str) -> Optional[list[str]]:
    """Accept both `--models a,b` and `--models a --models b`; ``None`` when not given, and
    an error when given without a name (`--models ""` is not a way to ask for all)."""
    if values is None:
        return None
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if not names:
        raise ValueError(f"{option} was given no names, got {values!r}")
    return names


def _first(given: Any, default: Any) -> Any:
    """A command-line value where given, else the sweep file's."""
    return default if given is None else given


def _print_table(table) -> None:
    from inference_comparisons.report.measures import SUMMARY_COLUMNS, format_value, summary

    summarised = summary(table)
    shown = [c for c in SUMMARY_COLUMNS if c != "budget_unit"]
    rich_table = Table(show_lines=False)
    for column in shown:
        rich_table.add_column(column, overflow="fold")
    for _, row in summarised.iterrows():
        rich_table.add_row(*(format_value(row[c]) for c in shown))
    console.print(rich_table)
    notes = summarised[summarised["message"] != ""]
    # One line per distinct message (a missing reference fails every method of a target alike).
    for (status, message), rows in notes.groupby(["status", "message"], sort=False):
        where = sorted({f"{r.model}/{r.target}/{r.method}" for r in rows.itertuples()})
        shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
        console.print(f"[dim]{shown}: {status}: {message}[/dim]", highlight=False)


@app.command()
def run(
    models: Optional[list[str]] = typer.Option(None, help="Models (comma-separated); default: all."),
    targets: Optional[list[str]] = typer.Option(None, help="Targets: posterior, latent; default: both."),
    methods: Optional[list[str]] = typer.Option(
        None, help="Methods (comma-separated); default: every method in the default sweep (see `list`)."),
    budgets: Optional[str] = typer.Option(None, help="Budget profile: quick, default or thorough \\[default: default]."),
    budget: Optional[list[str]] = typer.Option(
        None, help="Override a method's budget ladder: METHOD=B1,B2,... (repeatable), e.g. nuts=100,300."),
    seeds: Optional[int] = typer.Option(None, help="Number of seeds (0..N-1) per cell \\[default: 1]."),
    dataset: Optional[str] = typer.Option(None, help="'simulated' or a dataset the model ships \\[default: simulated]."),
    out: str = typer.Option("results", help="Output directory (the store, report, plots, idata)."),
    scheduler: Optional[str] = typer.Option(
        None, help="Where cells run: default a local process pool (in-process for one cell); 'inprocess'; "
                   "'local' (a Dask LocalCluster); or a Dask scheduler address such as tcp://host:8786."),
    workers: Optional[int] = typer.Option(None, help="Workers of the local pool or LocalCluster \\[default: one per core]."),
    worker_timeout: Optional[float] = typer.Option(
        None, help="On Dask: seconds to wait on a cluster with no worker before stopping (finished cells are kept) "
                   "\\[default: 120]."),
    config: Optional[Path] = typer.Option(None, help="A TOML sweep file (models, targets, methods, seeds, profile, "
                                                     "ladders, dataset); command-line options override it."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Rerun only the stored cells that failed."),
) -> None:
    """Run a sweep (resumable: stored cells are skipped), print the table, write OUT/."""
    refuse_if_locked(out)  # before the imports below, which take seconds (torch)
    from inference_comparisons.report import report_from_store
    from inference_comparisons.sweep import (Interrupted, NoWorkers, SweepConfig, check_output_directory,
                                             parse_ladders, plan, run_sweep)

    base = SweepConfig.from_toml(config) if config is not None else SweepConfig()
    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    ladders = {**base.ladders, **parse_ladders(budget)}
    cells = plan(_first(_split(models, "--models"), base.models), _first(_split(methods, "--methods"), base.methods),
                 _first(_split(targets, "--targets"), base.targets),
                 range(seeds) if seeds is not None else base.seeds, budgets or base.profile,
                 dataset or base.dataset, ladders)
    out = check_output_directory(out)  # before any work, as the plan and the scheduler
    try:
        table = run_sweep(cells, out, scheduler=scheduler, max_workers=workers, retry_failed=retry_failed,
                          progress=True, console=console,
                          **({} if worker_timeout is None else {"worker_timeout_s": worker_timeout}))
    except Interrupted as interrupted:  # every finished cell is stored; say so, and how to resume
        console.print(str(interrupted), highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except NoWorkers as stopped:  # likewise, but the cluster, not the user, stopped it
        _fail(str(stopped), 1)
    report_from_store(out)
    _print_table(table)
    console.print(f"wrote {out / 'results.sqlite'}, {out / 'results.csv'}, {out / 'report.md'} and {out / 'plots'}")


@app.command()
def calibrate(
    models: list[str] = typer.Option(..., help="Models (comma-separated)."),
    methods: list[str] = typer.Option(..., help="Methods (comma-separated)."),
    targets: Optional[list[str]] = typer.Option(None, help="Targets: posterior, latent; default: both."),
    simulations: int = typer.Option(200, help="Simulated datasets per (model, target, method)."),
    budget: Optional[list[str]] = typer.Option(
        None, help="A method's budget: METHOD=B (repeatable) \\[default: the largest of its default ladder]."),
    max_budget: Optional[list[str]] = typer.Option(
        None, help="METHOD=B (repeatable): run a simulation short of independent draws (an ESS too small) again at "
                   "the budget its ESS asks for (a power of two times it, at most B), while its ESS grows "
                   "\\[default: never again]."),
    num_datapoints: int = typer.Option(30, help="Data points of each simulated dataset."),
    num_draws: int = typer.Option(99, help="Posterior draws each rank is taken among (ranks 0..N)."),
    seed: int = typer.Option(0, help="Seed of the simulations (simulation i is seeded by (seed, i))."),
    out: str = typer.Option("calibration", help="Output directory (its results.sqlite gains the ranks)."),
    scheduler: Optional[str] = typer.Option(None, help="As for `run`: a local process pool by default."),
    workers: Optional[int] = typer.Option(None, help="Workers of the local pool or LocalCluster \\[default: one per core]."),
) -> None:
    """Simulation-based calibration: rank the truth among each method's posterior draws over
    simulated datasets, and test the ranks for uniformity (resumable: stored simulations are kept)."""
    refuse_if_locked(out)
    import zoo
    from inference_comparisons import NotApplicable
    from inference_comparisons.calibration import calibrate as run_calibration
    from inference_comparisons.methods import get_method
    from inference_comparisons.sweep import parse_ladders

    chosen = {name: ladder[-1] for name, ladder in parse_ladders(budget).items()}
    ceilings = {name: ladder[-1] for name, ladder in parse_ladders(max_budget, "--max-budget").items()}
    method_names = _split(methods, "--methods")
    for option, named in (("--budget", chosen), ("--max-budget", ceilings)):
        unknown = sorted(set(named) - set(method_names))
        if unknown:
            raise ValueError(f"{option} names methods not in --methods: {unknown}")
    not_applicable = []
    for model_name in _split(models, "--models"):
        model = zoo.get_model(model_name)
        for target in _split(targets, "--targets") or list(model.info.targets):
            model.check_target(target)
            for method_name in method_names:
                method = get_method(method_name)
                spend = chosen.get(method_name, method.ladders["default"][-1])
                try:
                    run_calibration(model, method, spend, target=target, num_simulations=simulations,
                                    max_budget=ceilings.get(method_name), num_datapoints=num_datapoints,
                                    num_draws=num_draws, seed=seed, out=out, scheduler=scheduler, max_workers=workers,
                                    progress=True, console=console)
                except NotApplicable as reason:
                    not_applicable.append(f"{model_name}/{target}/{method_name}: not applicable: {reason}")
    import pandas as pd

    from inference_comparisons.report import report_from_store
    from inference_comparisons.store import RANK_TABLE

    store, summary = Path(out) / "results.sqlite", Path(out) / "calibration.csv"
    if store.is_file():  # every calibration may have been not applicable: then nothing was stored
        report_from_store(out)
    table = Table(show_lines=False)
    shown = ("model", "target", "method", "budget", "num_datapoints", "simulations", "failed", "raised", "p_value",
             "verdict")
    for column in shown:
        table.add_column(column, overflow="fold")
    rows = pd.read_csv(summary) if summary.is_file() else None
    for row in (rows.itertuples() if rows is not None else ()):
        table.add_row(*(f"{getattr(row, c):.3g}" if c == "p_value" else str(getattr(row, c)) for c in shown))
    console.print(table)
    for line in not_applicable:
        console.print(f"[dim]{escape(line)}[/dim]", highlight=False)
    if rows is not None:
        console.print(f"ranks stored in {store} (table {RANK_TABLE}); wrote {summary}, "
                      f"{Path(out) / 'report.md'} and {Path(out) / 'plots'}")


@app.command()
def report(directory: Path = typer.Argument(..., help="A directory written by `run`.")) -> None:
    """Rebuild results.csv, report.md and plots/ from DIRECTORY/results.sqlite alone; print the table."""
    from inference_comparisons.report import report_from_store

    table = report_from_store(directory)
    if table is not None:
        _print_table(table)
    console.print(f"wrote {'' if table is None else str(directory / 'results.csv') + ', '}{directory / 'report.md'} "
                  f"and {directory / 'plots'}")


@app.command()
def diagnose(
    directory: Path = typer.Argument(..., help="A directory written by `run`."),
    cell: Optional[str] = typer.Option(None, help="The cell's key (see the list printed without --cell)."),
    plots: Optional[Path] = typer.Option(None, help="Where the plots go \\[default: DIRECTORY/diagnostics/CELL]."),
) -> None:
    """ArviZ summary and plots of one stored cell's InferenceData; without --cell, list the keys."""
    from inference_comparisons.diagnostics import diagnose as diagnose_file
    from inference_comparisons.store import STORE_NAME, read_table

    store = directory / STORE_NAME
    table = read_table(store)
    if cell is None:
        keys = Table("cell", "status", "idata", title=f"cells in {store}")
        for row in table.itertuples():
            keys.add_row(row.cell_id, row.status, row.idata_path or "—")
        console.print(keys)
        return
    match = table[table["cell_id"] == cell]
    if match.empty:
        raise ValueError(f"no cell {cell!r} in {store}; run `diagnose {directory}` to list the keys")
    idata_path = match["idata_path"].iloc[0]
    if not idata_path:
        raise ValueError(f"cell {cell!r} has no InferenceData (status {match['status'].iloc[0]}: "
                         f"{match['message'].iloc[0] or 'no message'})")
    diagnose_file(directory / idata_path, plots or directory / "diagnostics" / cell)  # prints the summary


@app.command("list")
def list_() -> None:
    """Models with their targets and datasets; methods with their budget units and ladders."""
    import zoo
    from inference_comparisons.methods import METHODS

    models = Table("model", "targets", "datasets", "latent sites", title="models")
    for name in zoo.available_models():
        info = zoo.get_model(name).info
        models.add_row(name, ", ".join(info.targets), ", ".join(info.datasets),
                       ", ".join(info.global_sites + info.local_sites))
    console.print(models)
    methods = Table("method", "budget unit", "quick", "default", "thorough", "in default sweep", "description",
                    title="methods")
    for method in METHODS.values():
        methods.add_row(method.name, method.budget_unit,
                        *(", ".join(map(str, method.ladders[p])) for p in ("quick", "default", "thorough")),
                        "yes" if method.in_default_sweep else "no: --methods", method.description)
    console.print(methods)


@app.command()
def reference(
    model: str = typer.Argument(..., help="Model name."),
    dataset: str = typer.Option("simulated", help="'simulated' (the sweep's default data) or a shipped dataset."),
    target: str = typer.Option("posterior", help="Target to build the reference for."),
    seed: int = typer.Option(0, help="Seed of the chains and the importance sampler."),
    sampler: str = typer.Option("chees", help="The chains' sampler: chees (many chains in lockstep) or nuts."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile ChEES's batched potential (5-20 s "
                                 "to compile, then a gradient ~2.3x cheaper; eager mode if it fails, recorded)."),
    draws_per_chain: Optional[int] = typer.Option(
        None, help="Draws per chain (default: planned from the ESS per draw of every chain's first 500)."),
    build_dir: Optional[Path] = typer.Option(
        None, help="Where the chains are saved as they run; rerunning resumes or extends them.",
        show_default="reference-builds/MODEL-TARGET-DATASET-DATA-seedSEED"),
    jobs: int = typer.Option(min(4, os.cpu_count() or 1), help="Worker processes running the chains."),
    accept_disagreement: Optional[str] = typer.Option(
        None, help="Store a build that disagrees with the stored one, once you have found out why: the explanation "
                   "(e.g. the independent run that sides with the new build) is recorded in its provenance."),
    from_posteriordb: Optional[Path] = typer.Option(
        None, help="Import posteriordb's reference posterior of --dataset posteriordb:NAME instead of building one: "
                   "PATH is a posteriordb checkout or its git directory (fetch github:stan-dev/posteriordb)."),
) -> None:
    """Build and store a gold-standard reference in zoo/references/ (minutes; resumable), or
    import posteriordb's. A build that replaces a stored one is compared with it first, and
    stored only if the two agree (the comparison goes into its provenance)."""
    import zoo
    import zoo.references as stored
    from inference_comparisons.references import GoldStandardError, build_reference, write_reference
    from inference_comparisons.references.agreement import checked_against_the_stored_build
    from inference_comparisons.sweep import load_data

    instance = zoo.get_model(model).for_dataset(dataset)
    data = instance.validate(load_data(instance, dataset))
    if from_posteriordb is not None:
        from inference_comparisons.references.posteriordb import import_reference

        if target != "posterior":
            raise ValueError(f"--from-posteriordb imports a posterior, so --target must be posterior, got {target!r}")
        imported = import_reference(instance, data, dataset, from_posteriordb)
        console.print(f"wrote {write_reference(instance, data, target, imported, dataset)}: "
                      f"{imported.provenance['diagnostics']}")
        return
    command = (f"python -m inference_comparisons reference {model} --dataset {dataset} --target {target} "
               f"--seed {seed} --sampler {sampler}")
    if draws_per_chain is not None:
        command += f" --draws-per-chain {draws_per_chain}"
    if compile:
        command += " --compile"
    if build_dir is None:
        build_dir = Path("reference-builds") / f"{Path(stored.file_name(instance, target, data, dataset)).stem}-seed{seed}"
    if not instance.target(data, target).has_amortised_guide:  # chains are the reference, not a cross-check
        console.print(f"chains are saved in {build_dir}: rerun the same command to resume or extend them")
    try:
        built = build_reference(instance, data, target, sampler=sampler, compile=compile, seed=seed,
                                draws_per_chain=draws_per_chain,
                                command=command, build_dir=build_dir, jobs=jobs, verbose=True)
        built = checked_against_the_stored_build(instance, data, target, built, accept_disagreement)
    except GoldStandardError as refusal:  # not bad input: the candidate failed a gate, and says why
        console.print(f"[red]refused:[/red] {refusal}")
        raise typer.Exit(1) from None
    if "previous_build" in built.provenance:
        console.print(f"against the stored build: {built.provenance['previous_build']['agreement']}")
    console.print(f"wrote {write_reference(instance, data, target, built, dataset)}: {built.provenance['diagnostics']}")


def _fail(message: str, exit_code: int) -> NoReturn:
    """One line on the console, the user's text escaped (``[red]x`` is a model name, not
    markup), and the exit status."""
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(exit_code)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a sweep as Ctrl-C does: finished cells are kept


def main() -> None:
    """Entry point: bad input, or a usage error, becomes a one-line error and exit status 2;
    SIGTERM interrupts as SIGINT does (exit status 130)."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        # Outside standalone mode click returns a command's typer.Exit code instead of exiting.
        sys.exit(app(standalone_mode=False))
    except (ValueError, LookupError) as error:
        _fail(str(error), 2)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        # A full disk (the sweep's DiskFull says where, and how to resume) is not bad input.
        _fail(str(error), 1)
    except (click.ClickException, TyperException) as error:
        # typer bundles its own copy of click (typer._click), whose usage errors are not
        # click's: TyperException is their public base. Both carry their exit status (2 for
        # a usage error) and a message.
        _fail(f"{error.format_message()} (see --help)", error.exit_code)  # type: ignore[union-attr]


"""``python -m inference_comparisons``: run sweeps, rebuild reports, list the registries."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Measure how exact each inference method is on the zoo's models, and what it costs.")
# Wide enough for the table when written to a log or a pipe (rich defaults to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 220)


def _split(values: Optional[list[str]]) -> Optional[list[str]]:
    """Accept both `--models a,b` and `--models a --models b`."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _print_table(table) -> None:
    from inference_comparisons.report import SUMMARY_COLUMNS, _format, summary

    summarised = summary(table)
    shown = [c for c in SUMMARY_COLUMNS if c != "budget_unit"]
    rich_table = Table(show_lines=False)
    for column in shown:
        rich_table.add_column(column, overflow="fold")
    for _, row in summarised.iterrows():
        rich_table.add_row(*(_format(row[c]) for c in shown))
    console.print(rich_table)
    notes = summarised[summarised["message"] != ""]
    for _, row in notes.iterrows():
        console.print(f"[dim]{row['model']}/{row['target']}/{row['method']}: {row['status']}: {row['message']}[/dim]")


@app.command()
def run(
    models: Optional[list[str]] = typer.Option(None, help="Models (comma-separated); default: all."),
    targets: Optional[list[str]] = typer.Option(None, help="Targets: posterior, latent; default: both."),
    methods: Optional[list[str]] = typer.Option(None, help="Methods (comma-separated); default: all."),
    budgets: str = typer.Option("default", help="Budget profile: quick, default or thorough."),
    seeds: int = typer.Option(1, help="Number of seeds (0..N-1) per cell."),
    dataset: str = typer.Option("simulated", help="'simulated' or a dataset the model ships."),
    out: Path = typer.Option(Path("results"), help="Output directory."),
) -> None:
    """Run a comparison, print the table and write OUT/results.csv and OUT/report.md."""
    from inference_comparisons.sweep import compare, plan

    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    plan(_split(models), _split(methods), _split(targets), range(seeds), budgets, dataset)  # validate first
    table = compare(_split(models), _split(methods), _split(targets), range(seeds), budgets, dataset, out)
    _print_table(table)
    console.print(f"wrote {out / 'results.csv'} and {out / 'report.md'}")


@app.command()
def report(directory: Path = typer.Argument(..., help="A directory written by `run`.")) -> None:
    """Rebuild the report from DIRECTORY/results.csv and print the table."""
    import pandas as pd

    from inference_comparisons.report import write_report

    csv = directory / "results.csv"
    if not csv.exists():
        raise ValueError(f"no results in {directory}: {csv} does not exist")
    table = pd.read_csv(csv, keep_default_na=True)
    table["message"] = table["message"].fillna("")
    write_report(table, directory)
    _print_table(table)


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
    methods = Table("method", "budget unit", "quick", "default", "thorough", "description", title="methods")
    for method in METHODS.values():
        methods.add_row(method.name, method.budget_unit,
                        *(", ".join(map(str, method.ladders[p])) for p in ("quick", "default", "thorough")),
                        method.description)
    console.print(methods)


@app.command()
def reference(
    model: str = typer.Argument(..., help="Model name."),
    dataset: str = typer.Option("simulated", help="'simulated' (the sweep's default data) or a shipped dataset."),
    target: str = typer.Option("posterior", help="Target to build the reference for."),
    seed: int = typer.Option(0, help="Seed of the NUTS run and the importance sampler."),
) -> None:
    """Build and store a gold-standard reference in zoo/references/ (minutes)."""
    import zoo
    from inference_comparisons.gold_standard import build_reference, write_reference
    from inference_comparisons.sweep import load_data

    instance = zoo.get_model(model)
    data = load_data(instance, dataset)
    command = f"python -m inference_comparisons reference {model} --dataset {dataset} --target {target} --seed {seed}"
    built = build_reference(instance, data, target, seed=seed, command=command)
    console.print(f"wrote {write_reference(instance, data, target, built)}: {built.provenance['diagnostics']}")


def main() -> None:
    """Entry point: bad input becomes a one-line error and exit status 2."""
    try:
        app(standalone_mode=False)
    except (ValueError, LookupError) as error:
        console.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    except Exception as error:  # click's usage errors carry their own exit code
        import click

        if isinstance(error, click.exceptions.ClickException):
            error.show()
            sys.exit(error.exit_code)
        if isinstance(error, click.exceptions.Exit):
            sys.exit(error.exit_code)
        raise

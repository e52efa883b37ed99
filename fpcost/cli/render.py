"""Rendering of tabular results: rich tables on stdout, or JSON / CSV.

All rich output goes through ``stdout_console``; diagnostics through ``stderr_console``.
Data handed to these functions is raw SI numbers; only the ``Column`` formatters convert.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.table import Table

# Piped output is not wrapped at 80 columns: tables stay one line per row.
PIPED_WIDTH = 160
stdout_console = Console(
    highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else PIPED_WIDTH
)
stderr_console = Console(stderr=True, highlight=False)

FORMATS = ("table", "json", "csv")
format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output as a rich table, JSON, or CSV.",
)


@dataclass(frozen=True)
class Column:
    """One column of a rendered table: the key in each row, the header (with its unit),
    and how to format the raw value for the table view."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str
    justify: str = "right"


def scaled(divisor: float, digits: int) -> Callable[[Any], str]:
    """Formatter printing ``value / divisor`` with a fixed number of decimals."""

    def _fmt(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return f"{value / divisor:.{digits}f}"

    return _fmt


def render_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    title: str | None = None,
    caption: str | None = None,
) -> None:
    table = Table(title=title, caption=caption, caption_justify="left")
    for col in columns:
        table.add_column(col.header, justify=col.justify)
    for row in rows:
        table.add_row(*(col.fmt(row.get(col.key)) for col in columns))
    stdout_console.print(table)


def emit_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, allow_nan=False, default=_json_default))


def emit_csv(rows: Sequence[dict[str, Any]], keys: Sequence[str] | None = None) -> None:
    if not rows:
        return
    keys = list(keys or rows[0].keys())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    click.echo(buffer.getvalue(), nl=False)


def _json_default(value: Any) -> Any:
    # numpy scalars and similar: fall back to their Python value
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} as JSON")

"""Output paths on the command line: checked while the options are parsed, before any work,
and written by the package's one helper (``fpcost.files``; its docstring has the rules)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from fpcost.files import check_output_dir, check_output_path, write_output

__all__ = ["check_output_path", "output_dir_callback", "output_path_callback", "same_file",
           "write_atomic"]

write_atomic = write_output  # the name the commands use


def output_path_callback(ctx: click.Context, param: click.Parameter, value):
    """Click callback for an output-file option: ``check_output_path`` at parse time, so
    ``--output /proc/x`` fails before a model loads or a measurement starts."""
    if value is not None and not ctx.resilient_parsing:
        check_output_path(value, option=_flag(param))
    return value


def output_dir_callback(ctx: click.Context, param: click.Parameter, value):
    """Click callback for an output-directory option (``prune --overlay DIR``)."""
    if value is not None and not ctx.resilient_parsing:
        check_output_dir(value, option=_flag(param))
    return value


def same_file(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    """Whether two output paths name one file (symlinks and ``..`` resolved)."""
    a, b = Path(first), Path(second)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _flag(param: click.Parameter) -> str:
    longest = max(param.opts, key=len) if param.opts else param.name or ""
    return longest

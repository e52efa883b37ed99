"""The ``fpcost`` command: parse, call the library, render.

Library errors (``FpcostError``) become one-line messages and exit code 2 here, in one
place; ``--debug`` shows the traceback instead. Subcommands live in their own modules and
are imported only when invoked, so ``fpcost estimate`` never imports torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from fpcost.costmodel.errors import FpcostError
from fpcost.extras import extra_for_missing, missing_extra_message

# name -> "module:attribute" of the click command; imported lazily.
SUBCOMMANDS = {
    "estimate": "fpcost.cli.estimate:estimate",
    "table3": "fpcost.cli.table3:table3",
    "hardware": "fpcost.cli.hardware:hardware",
    "prune": "fpcost.cli.prune:prune",
    "sweep": "fpcost.cli.sweep:sweep",
    "plot": "fpcost.cli.plot:plot",
    "calibrate": "fpcost.cli.calibrate:calibrate",
    "validate": "fpcost.cli.validate:validate",
}

EXIT_USAGE = 2


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.version_option(package_name="fpcost")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """fpcost: roofline cost model and freePruner backend for LLaVA-style models."""
    ctx.obj = {"debug": debug}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script. Returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="fpcost", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        # One line, usage errors included: the message names the value and what is valid.
        message = " ".join(exc.format_message().split())
        click.echo(f"Error: {message}", err=True)
        return exc.exit_code
    except FpcostError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    except ModuleNotFoundError as exc:
        # An optional dependency met after the command's own require_extra check (or in a
        # command that has none): the same one line, naming the extra that installs it.
        extra = extra_for_missing(exc)
        if extra is None or debug:
            raise
        command = next((a for a in args if a in SUBCOMMANDS), "fpcost")
        what = f"fpcost {command}" if command != "fpcost" else command
        click.echo(f"Error: {missing_extra_message(extra, what, exc.name)}", err=True)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())

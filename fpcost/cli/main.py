"""The ``fpcost`` command: parse, call the library, render.

Library errors (``FpcostError``) and OS errors (a full disk behind ``> file``) become
one-line messages and exit code 2 here, in one place; ``--debug`` shows the traceback
instead. Ctrl-C exits 130 and SIGTERM 143, both after every ``finally`` has run, so no
temporary file is left behind. Subcommands live in their own modules and
are imported only when invoked, so ``fpcost estimate`` never imports torch.
"""

from __future__ import annotations

import importlib
import signal
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
    "generate": "fpcost.cli.generate:generate",
    "serve": "fpcost.cli.serve:serve",
}

EXIT_USAGE = 2
EXIT_SIGINT = 130  # 128 + SIGINT, as a shell reports it
EXIT_SIGTERM = 143  # 128 + SIGTERM


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


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt for SIGINT, so every
    ``finally`` runs (temporary files are removed) before the process exits 143."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script. Returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, AttributeError):  # not the main thread, or no SIGTERM
        previous = None
    try:
        return _run(args, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: list[str], debug: bool) -> int:
    # A shell cannot pass a NUL byte, but a program can; no path or value may hold one
    # (os.stat raises ValueError on it deep inside click's path checks).
    for arg in args:
        if "\x00" in arg:
            shown = arg.replace("\x00", "\\x00")
            click.echo(f"Error: argument '{shown}' holds a NUL byte; no path or value can "
                       "contain one", err=True)
            return EXIT_USAGE
    try:
        cli.main(args=args, prog_name="fpcost", standalone_mode=False)
        sys.stdout.flush()  # a full disk behind ``> file`` is reported here, not at exit
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_SIGINT
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
        return EXIT_SIGINT
    except Terminated:
        click.echo("Terminated.", err=True)
        return EXIT_SIGTERM
    except OSError as exc:  # writing stdout (``> /dev/full``), or one not wrapped where it arose
        if debug:
            raise
        # Without a file name it is a stream: stdout, which rich and click write unnamed.
        where = str(exc.filename) if exc.filename else "cannot write the output"
        click.echo(f"Error: {where}: {exc.strerror or exc}", err=True)
        return EXIT_USAGE
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

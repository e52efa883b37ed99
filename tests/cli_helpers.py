"""Running the CLI in-process, and the one-line-error contract, for every CLI test."""

from fpcost.cli.main import main


def run_cli(capsys, *args):
    """``fpcost ARGS``: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, fragment):
    """Exit 2 and exactly one ``Error: ...`` line holding ``fragment``."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ") and fragment in lines[0], lines[0]

"""Run one ``fpcost`` command line in-process and check issue 8's contract on it.

The contract, for every command line, valid or not:

- exit 0, and every number in ``--format json`` / ``csv`` output finite, and every time,
  FLOP, byte and token count non-negative (a table may show no ``nan`` / ``inf``); or
- exit 2 with exactly one ``Error: ...`` line on stderr that names the value (an option flag,
  a value or a file name from the command line);
- never a traceback, never a hang (a per-case alarm), never a memory blow-up (a per-case
  address-space limit turns one into a ``MemoryError``), never a file touched in the scratch
  directory except the named output (a snapshot before and after), never a device node or
  symlink replaced by a regular file, never a temporary file left behind.

``calibrate`` and ``validate`` are fuzzed for their argument checks only: the measurement
functions are replaced by ``refuse_measurement`` (``ReachedMeasurement``), so a case either
ends before any timing or reports that it reached it; a command line holding a value that
must be refused fails the contract when it reaches the measurement.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import resource
import signal
import stat
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from fpcost.cli.main import main

CASE_TIMEOUT_S = 20.0
MEMORY_HEADROOM_BYTES = 2**30  # address space a case may add before MemoryError
HASHED_FILE_BYTES = 1 << 20  # files up to this size are compared by content too

# Output keys whose numbers are times, FLOPs, bytes, counts or speedups: never negative.
QUANTITY_KEY = re.compile(
    r"(_s$|^s$|_bytes|bytes_|flops|_ops|^num_|tokens|speedup|time|ttft|tpot|latency|batch|"
    r"params|memory|capacity|bandwidth|throughput|_per_s)", re.IGNORECASE)
# ... except where a sign is part of the meaning (relative errors, layer indices).
SIGNED_KEY = re.compile(r"(error|layer|delta|index|indices|diff|offset)", re.IGNORECASE)
NON_FINITE_WORD = re.compile(r"(?<![\w.])-?(nan|inf|infinity)(?![\w])", re.IGNORECASE)
OUTPUT_OPTIONS = ("--output", "-o", "--nominal-output", "--overlay")


class CaseTimeout(BaseException):
    """Raised by the alarm when one command line runs past its timeout."""


class ReachedMeasurement(BaseException):
    """Raised by the stand-in for calibrate's / validate's measurement."""


def refuse_measurement(*args, **kwargs):
    raise ReachedMeasurement()


@dataclass
class Outcome:
    argv: list[str]
    code: int | None = None
    out: str = ""
    err: str = ""
    exception: str | None = None  # formatted traceback, "timeout after ...", ...
    reached_measurement: bool = False
    elapsed_s: float = 0.0
    changed: list[str] = field(default_factory=list)  # paths (relative to the scratch root)
    replaced_special: list[str] = field(default_factory=list)  # devices / symlinks made regular


# --- snapshots of the scratch directory -------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (symlinks not followed): relative path -> what identifies
    its state (type, mode, size, mtime, inode, link target, content hash)."""
    state: dict[str, tuple] = {}
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                rel = os.path.relpath(entry.path, root)
                kind = stat.S_IFMT(st.st_mode)
                extra: object = None
                if stat.S_ISLNK(st.st_mode):
                    extra = os.readlink(entry.path)
                elif stat.S_ISREG(st.st_mode) and st.st_size <= HASHED_FILE_BYTES:
                    with open(entry.path, "rb") as handle:
                        extra = hashlib.sha1(handle.read()).hexdigest()
                elif stat.S_ISDIR(st.st_mode):
                    stack.append(Path(entry.path))
                    st_size_mtime = (kind, st.st_mode)  # a directory's mtime moves with its entries
                    state[rel] = st_size_mtime
                    continue
                state[rel] = (kind, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, extra)
    return state


def _special(entry: tuple | None) -> bool:
    return entry is not None and (stat.S_ISCHR(entry[0]) or stat.S_ISLNK(entry[0])
                                  or stat.S_ISFIFO(entry[0]))


def diff(before: dict[str, tuple], after: dict[str, tuple]) -> tuple[list[str], list[str]]:
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    replaced = [p for p in changed
                if _special(before.get(p)) and before[p][0] != (after.get(p) or (None,))[0]]
    return changed, replaced


# --- running ------------------------------------------------------------------------------

def _vm_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def _guards(root: Path, timeout_s: float):
    """cwd = root, an alarm after ``timeout_s``, a cap on the address space; all undone."""
    def on_alarm(signum, frame):
        raise CaseTimeout(f"timeout after {timeout_s:g} s")

    cwd = os.getcwd()
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_bytes() + MEMORY_HEADROOM_BYTES
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    old_term = signal.getsignal(signal.SIGTERM)
    old_int = signal.getsignal(signal.SIGINT)
    os.chdir(root)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        os.chdir(cwd)
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        torch = sys.modules.get("torch")
        if torch is not None and threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def run_case(argv: list[str], root: Path, timeout_s: float = CASE_TIMEOUT_S) -> Outcome:
    """``fpcost ARGV`` in-process, with ``root`` as the working directory."""
    outcome = Outcome(argv=[str(a) for a in argv])
    before = snapshot(root)
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    try:
        with _guards(root, timeout_s), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            outcome.code = main(list(outcome.argv))
    except CaseTimeout as exc:
        outcome.exception = str(exc)
    except ReachedMeasurement:
        outcome.reached_measurement = True
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - a traceback is exactly what the contract forbids
        outcome.exception = traceback.format_exc(limit=-4)
    outcome.elapsed_s = time.perf_counter() - start
    outcome.out, outcome.err = out.getvalue(), err.getvalue()
    outcome.changed, outcome.replaced_special = diff(before, snapshot(root))
    return outcome


# --- the contract -------------------------------------------------------------------------

def output_paths(argv: list[str], root: Path) -> list[str]:
    """The paths the command line names as outputs, relative to ``root`` (with a symlink's
    target too); an ``--overlay DIR`` allows everything under DIR."""
    named = []
    for i, arg in enumerate(argv[:-1]):
        if arg in OUTPUT_OPTIONS:
            named.append(argv[i + 1])
    for arg in argv:
        for option in OUTPUT_OPTIONS:
            if option.startswith("--") and arg.startswith(option + "="):
                named.append(arg.split("=", 1)[1])
    allowed = []
    for name in named:
        if not name:
            continue
        path = root / name
        with contextlib.suppress(ValueError):  # a NUL byte in the name: no path at all
            for candidate in (path, Path(os.path.realpath(path))):
                allowed.append(os.path.relpath(candidate, root))
    return allowed


def _allowed(path: str, allowed: list[str]) -> bool:
    return any(path == a or path.startswith(a.rstrip("/") + "/") for a in allowed)


def _numbers(value, key: str = ""):
    """(key, number) for every number in a parsed JSON value, with its nearest key."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v, key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield key, value


def _bad_number(key: str, value: float) -> str | None:
    if not math.isfinite(value):
        return f"{key} = {value!r} is not finite"
    if value < 0 and QUANTITY_KEY.search(key) and not SIGNED_KEY.search(key):
        return f"{key} = {value!r} is negative"
    return None


def _output_format(argv: list[str]) -> str:
    for i, arg in enumerate(argv[:-1]):
        if arg == "--format":
            return argv[i + 1]
    for arg in argv:
        if arg.startswith("--format="):
            return arg.split("=", 1)[1]
    return "table"


def number_problems(argv: list[str], out: str) -> list[str]:
    """Non-finite or negative quantities in the printed output."""
    problems: list[str] = []
    fmt = _output_format(argv)
    if fmt == "json" and out.strip():
        def constant(name):
            problems.append(f"JSON holds {name}")
            return 0.0
        try:
            data = json.loads(out, parse_constant=constant)
        except ValueError as exc:
            return [f"stdout is not JSON: {exc}"]
        problems += [p for k, v in _numbers(data) if (p := _bad_number(k, v))]
    elif fmt == "csv" and out.strip():
        for row in csv.DictReader(io.StringIO(out)):
            for key, text in row.items():
                try:
                    number = float(text)
                except (TypeError, ValueError):
                    continue
                if (p := _bad_number(str(key), number)):
                    problems.append(p)
    else:
        problems += [f"table shows {m.group(0)!r}" for m in NON_FINITE_WORD.finditer(out)]
    return sorted(set(problems))[:5]


def _file_keys(arg: str) -> set[str]:
    """Key names in a small JSON / TOML input file named by ``arg`` (cwd: the scratch root):
    an error about a file's content may name the key instead of the file."""
    path = Path(arg)
    try:
        if path.suffix not in (".json", ".toml", ".txt") or not path.is_file() \
                or path.stat().st_size > HASHED_FILE_BYTES:
            return set()
        text = path.read_text(errors="replace")
    except OSError:
        return set()
    json_keys = re.findall(r'"([A-Za-z_][\w.]{3,})"\s*:', text)
    toml_keys = re.findall(r"^\s*([A-Za-z_]\w{3,})\s*=", text, re.MULTILINE)
    return set(json_keys + toml_keys)


def names_an_option_to_give(line: str, argv: list[str]) -> bool:
    """True when ``line`` names an option of the command that ``argv`` did not give: the
    refusal of a missing input says which option supplies it ("give the prompt length
    (--tokens N)")."""
    import click

    from fpcost.cli.main import cli

    command, ctx = cli, click.Context(cli)
    for arg in argv:  # walk "plot roofline" etc. down to the leaf command
        if not isinstance(command, click.Group):
            break
        sub = command.get_command(ctx, arg)
        if sub is None:
            break
        command = sub
    flags = {flag for param in command.params for flag in param.opts if flag.startswith("--")}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line))
    return bool(named & flags - set(argv))


def names_a_value(line: str, argv: list[str], root: Path | None = None) -> bool:
    """True when ``line`` mentions an option flag, a value or a file name of ``argv``, or a
    key of an input file it names."""
    subcommands = {"estimate", "sweep", "table3", "hardware", "plot", "prune", "calibrate",
                   "validate", "roofline", "serve"}
    for arg in argv:
        if not arg:  # an empty value can only be named as '' (or called empty)
            if "''" in line or "empty" in line:
                return True
            continue
        if arg in subcommands:
            continue
        if arg.startswith("-") and not re.fullmatch(r"-[\d.]", arg[:2]):
            if arg.split("=")[0] in line:
                return True
            continue
        probes = {arg.strip(), arg[:12], repr(arg)[:12], os.path.basename(arg.rstrip("/"))}
        if any(p and p in line for p in probes):
            return True
    if root is not None:
        cwd = os.getcwd()
        os.chdir(root)
        try:
            return any(key in line for arg in argv for key in _file_keys(arg))
        finally:
            os.chdir(cwd)
    return False


def contract_problems(outcome: Outcome, root: Path, must_refuse: bool = False,
                      extra_lines: re.Pattern | None = None) -> list[str]:
    """Everything in ``outcome`` that breaks the contract (empty: it holds).

    ``must_refuse``: the command line holds a value that must be refused (exit 2) before
    any measurement. ``extra_lines``: stderr lines allowed besides the error (prune's
    per-image "skipped ..." lines)."""
    problems = []
    if outcome.exception is not None:
        last = outcome.exception.strip().splitlines()[-1]
        problems.append(f"raised: {last}")
    if outcome.reached_measurement and must_refuse:
        problems.append("reached the measurement instead of refusing the value first")
    if outcome.code is not None:
        if outcome.code not in (0, 2):
            problems.append(f"exit code {outcome.code} (0 or 2 expected)")
        if must_refuse and outcome.code == 0:
            problems.append("exit 0 for a value that must be refused")
        if outcome.code == 0:
            problems += number_problems(outcome.argv, outcome.out)
        else:
            lines = [ln for ln in outcome.err.splitlines() if ln.strip()]
            if extra_lines is not None:
                lines = [ln for ln in lines if not extra_lines.match(ln)]
            if len(lines) != 1 or not lines[0].startswith("Error: "):
                problems.append(f"stderr has {len(lines)} lines, not one 'Error: ...' line")
            elif not (names_a_value(lines[0], outcome.argv, root)
                      or names_an_option_to_give(lines[0], outcome.argv)):
                problems.append("the error names no option, value or file of the command line")
    allowed = output_paths(outcome.argv, root)
    stray = [p for p in outcome.changed if not _allowed(p, allowed)]
    if stray:
        problems.append(f"touched files not named as output: {stray[:5]}")
    if outcome.replaced_special:
        problems.append(f"replaced a device node / symlink / FIFO by a file: {outcome.replaced_special}")
    return problems


def _short(arg: str, limit: int = 60) -> str:
    return arg if len(arg) <= limit else f"{arg[:20]}...<{len(arg)} chars>"


def describe(outcome: Outcome, problems: list[str]) -> str:
    """The failure message: the command line, what broke, and the first lines of output."""
    def head(text: str, n: int = 6) -> str:
        lines = text.strip().splitlines()
        return "\n    ".join([_short(ln, 200) for ln in lines[:n]] + (["..."] if len(lines) > n else []))

    parts = [
        "fpcost " + " ".join(_short(a) for a in outcome.argv),
        f"  problems: {'; '.join(problems)}",
        f"  exit: {outcome.code}  elapsed: {outcome.elapsed_s:.2f} s"
        + ("  (reached the measurement)" if outcome.reached_measurement else ""),
        f"  stderr:\n    {head(outcome.err)}",
        f"  stdout:\n    {head(outcome.out)}",
    ]
    if outcome.exception:
        parts.append(f"  exception:\n    {head(outcome.exception, 12)}")
    return "\n".join(parts)


def assert_contract(argv: list[str], root: Path, must_refuse: bool = False,
                    timeout_s: float = CASE_TIMEOUT_S, extra_lines: re.Pattern | None = None) -> Outcome:
    outcome = run_case(argv, root, timeout_s)
    problems = contract_problems(outcome, root, must_refuse, extra_lines)
    assert not problems, describe(outcome, problems)
    return outcome

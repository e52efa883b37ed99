"""Bounded integer options: every integer a command reads has a documented range.

click's ``INT`` calls ``int()`` on whatever it is given: a 4,300-digit string reaches
Python's int-from-str limit, ``1e200`` is refused but ``10**200`` written out is accepted and
later overflows numpy or torch (``--seed``), or runs for ever (``--warmup``). ``BoundedInt``
reads only plain ASCII digits (optionally signed), refuses anything longer than its bounds
could need before converting, and names the option's valid range in the one-line error,
echoing at most ``SHOWN_CHARS`` characters of what was given.
"""

from __future__ import annotations

import os
import re

import click

# Range of a signed 64-bit integer: numpy's and torch's default integer type.
INT64_MAX = 2**63 - 1
# Range of a signed 32-bit integer: enough for any token count, layer index or k here,
# and what torch indexes with on every device.
INT32_MAX = 2**31 - 1
SHOWN_CHARS = 24

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def shown_value(text: str) -> str:
    """``text`` quoted, cut to ``SHOWN_CHARS`` characters with its length when longer."""
    if len(text) <= SHOWN_CHARS:
        return repr(text)
    return f"{text[:SHOWN_CHARS]!r}… ({len(text):,} characters)"


class BoundedInt(click.ParamType):
    """An integer in [``minimum``, ``maximum``], both inclusive; ``why`` (optional) says
    where the maximum comes from and is shown in the error and in ``--help``."""

    name = "integer"

    def __init__(self, minimum: int, maximum: int, why: str | None = None):
        if minimum > maximum:
            raise ValueError(f"empty range {minimum}..{maximum}")
        self.minimum, self.maximum, self.why = minimum, maximum, why
        # No value in range has more characters than this (sign included).
        self._max_chars = max(len(str(minimum)), len(str(maximum)))

    def range_text(self) -> str:
        reason = f" ({self.why})" if self.why else ""
        return f"{self.minimum}..{self.maximum}{reason}"

    def get_metavar(self, param, ctx=None) -> str:  # ctx: click >= 8.2 passes it
        if max(abs(self.minimum), abs(self.maximum)) >= 10**6:
            return "INTEGER"
        return f"INTEGER {self.minimum}..{self.maximum}"

    def convert(self, value, param, ctx):
        if isinstance(value, bool):
            self.fail(f"{value!r} is not an integer in {self.range_text()}", param, ctx)
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip()
            digits = text.lstrip("+-").lstrip("0") or "0"
            if not _INTEGER.fullmatch(text):
                self.fail(f"{shown_value(text)} is not an integer; valid: {self.range_text()}", param, ctx)
            if len(digits) > self._max_chars:
                shown = text if len(text) <= SHOWN_CHARS else shown_value(text)
                self.fail(f"{shown} is out of range; valid: {self.range_text()}", param, ctx)
            number = int(text)
        if not self.minimum <= number <= self.maximum:
            self.fail(f"{number} is out of range; valid: {self.range_text()}", param, ctx)
        return number

    def __repr__(self) -> str:
        return f"BoundedInt({self.minimum}, {self.maximum})"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# Timing loops: each pass of `calibrate` takes up to seconds (the default 5 repeats take
# about 12 s on a desktop CPU); 1,000 timed passes is hours, more is never what was meant.
MAX_WARMUP = 100
MAX_REPEATS = 1000
SEED = BoundedInt(0, INT64_MAX, "a 64-bit seed, as numpy and torch take")
WARMUP = BoundedInt(0, MAX_WARMUP, f"at most {MAX_WARMUP} untimed passes")
REPEATS = BoundedInt(1, MAX_REPEATS, f"at most {MAX_REPEATS} timed passes")


def threads_type() -> BoundedInt:
    """--threads: 1 to the CPUs this process may use (more only oversubscribes the cores;
    torch's allocator fails on tens of thousands)."""
    cpus = available_cpus()
    return BoundedInt(1, cpus, f"the {cpus} CPU(s) available here")


class InputPath(click.Path):
    """``click.Path`` that refuses an empty value: click turns ``''`` into ``.``, which then
    reads as "the current directory" (``--config ''`` looked for ./config.json)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path is not a file or directory", param, ctx)
        return super().convert(value, param, ctx)

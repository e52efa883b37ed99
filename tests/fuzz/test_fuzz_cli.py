"""Issue 8's contract, fuzzed: every command, random and adversarial values.

Every case: exit 0 with finite, non-negative numbers, or exit 2 with one ``Error:`` line
naming the value; no traceback, no hang, no file touched but the named output (see
``harness``). Derandomized: CI runs the same cases every time; FPCOST_FUZZ_EXAMPLES=N
runs more.
"""

import re

from hypothesis import given

from . import cli_strategies as cs
from . import scratch
from .conftest import fuzz_settings
from .harness import assert_contract

PRUNE_SKIPPED = re.compile(r"^skipped ")  # prune's per-image refusals, before its one error line


def check(argv, root, **kwargs):
    scratch.make_specials(root)
    assert_contract(argv, root, **kwargs)


@fuzz_settings(150)
@given(argv=cs.estimate_argv)
def test_estimate(fuzz_root, argv):
    check(argv, fuzz_root, timeout_s=10)


@fuzz_settings(50)
@given(argv=cs.sweep_argv)
def test_sweep(fuzz_root, argv):
    check(argv, fuzz_root, timeout_s=15)


@fuzz_settings(60)
@given(argv=cs.serve_argv)
def test_serve(fuzz_root, argv):
    check(argv, fuzz_root, timeout_s=30)


@fuzz_settings(25)
@given(argv=cs.table3_argv)
def test_table3(fuzz_root, argv):
    check(argv, fuzz_root, timeout_s=10)


@fuzz_settings(40)
@given(argv=cs.hardware_argv)
def test_hardware(fuzz_root, argv):
    check(argv, fuzz_root, timeout_s=10)


@fuzz_settings(20)
@given(argv=cs.plot_argv)
def test_plot(fuzz_root, argv):
    check(argv, fuzz_root, timeout_s=20)


@fuzz_settings(40)
@given(argv=cs.prune_argv)
def test_prune(prune_root, argv):
    check(argv, prune_root, timeout_s=20, extra_lines=PRUNE_SKIPPED)


@fuzz_settings(40)
@given(case=cs.calibrate_argv)
def test_calibrate_argument_checks(measured_root, case):
    argv, must_refuse = case
    check(argv, measured_root, must_refuse=must_refuse, timeout_s=10)


@fuzz_settings(40)
@given(case=cs.validate_argv)
def test_validate_argument_checks(measured_root, case):
    argv, must_refuse = case
    check(argv, measured_root, must_refuse=must_refuse, timeout_s=10)

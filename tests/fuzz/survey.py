"""Run the CLI fuzz tests without stopping at a command's first failure, and print every
broken case grouped by cause:

    FPCOST_FUZZ_EXAMPLES=N python -m tests.fuzz.survey [COMMAND ...]

The tests (``test_fuzz_cli.py``) stop at a command's first failing case; this runs the same
test functions (the same derandomized cases) with ``check`` recording instead of asserting,
so a fix can be checked against the whole set.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from . import scratch, test_fuzz_cli
from .harness import contract_problems, describe, refuse_measurement, run_case

TESTS = {  # command -> the test function (its fixture argument is the scratch root)
    "estimate": test_fuzz_cli.test_estimate,
    "sweep": test_fuzz_cli.test_sweep,
    "table3": test_fuzz_cli.test_table3,
    "hardware": test_fuzz_cli.test_hardware,
    "plot": test_fuzz_cli.test_plot,
    "prune": test_fuzz_cli.test_prune,
    "calibrate": test_fuzz_cli.test_calibrate_argument_checks,
    "validate": test_fuzz_cli.test_validate_argument_checks,
}
FIXTURE = {"prune": "prune_root", "calibrate": "measured_root", "validate": "measured_root"}


def cause(problem: str) -> str:
    """A problem with its numbers and quoted values masked, so like failures group together."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", problem)
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)[:160]


def main(names: list[str]) -> int:
    from fpcost.pruner import calibrate as calibrate_module
    from fpcost.pruner import validate as validate_module

    calibrate_module.calibrate = refuse_measurement
    validate_module.measure_prefills = refuse_measurement
    groups: dict[str, list[str]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    command = ""

    def record(argv, root, must_refuse=False, timeout_s=20.0, extra_lines=None):
        scratch.make_specials(root)
        outcome = run_case(argv, root, timeout_s)
        counts[command] += 1
        problems = contract_problems(outcome, root, must_refuse, extra_lines)
        if problems:
            groups[f"{command}: {cause(problems[0])}"].append(describe(outcome, problems))

    test_fuzz_cli.check = record
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = scratch.build(Path(tmp))
        scratch.tiny_encoder_dir(root)
        scratch.write_cpu_profile(root)
        for command in names or list(TESTS):
            start = time.perf_counter()
            TESTS[command](**{FIXTURE.get(command, "fuzz_root"): root})
            print(f"# {command}: {counts[command]} cases in {time.perf_counter() - start:.1f} s",
                  file=sys.stderr)
        for key, cases in sorted(groups.items()):
            total += len(cases)
            print(f"\n=== {key}  ({len(cases)} cases)\n{cases[0]}")
            for more in cases[1:4]:
                print("  also: " + more.splitlines()[0])
    print(f"\n{total} failing cases of {sum(counts.values())}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Run the CLI fuzz strategies without stopping at the first failure, and print every broken
case grouped by cause: ``python -m tests.fuzz.survey [EXAMPLES_PER_COMMAND] [COMMAND ...]``.

The tests (``test_fuzz_cli.py``) stop at a command's first failing case; this lists them all,
so a fix can be checked against the whole set. Same cases as the tests (derandomized).
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from . import cli_strategies as cs
from . import scratch
from .harness import contract_problems, describe, refuse_measurement, run_case

PRUNE_SKIPPED = re.compile(r"^skipped ")
COMMANDS = {  # name -> (strategy, examples by default, timeout s, returns (argv, must_refuse))
    "estimate": (cs.estimate_argv, 150, 10, False),
    "sweep": (cs.sweep_argv, 50, 15, False),
    "table3": (cs.table3_argv, 25, 10, False),
    "hardware": (cs.hardware_argv, 40, 10, False),
    "plot": (cs.plot_argv, 20, 20, False),
    "prune": (cs.prune_argv, 40, 20, False),
    "calibrate": (cs.calibrate_argv, 40, 10, True),
    "validate": (cs.validate_argv, 40, 10, True),
}


def cause(problem: str) -> str:
    """A problem with its numbers and quoted values masked, so like failures group together."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", problem)
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)[:160]


def survey(name: str, examples: int | None, root: Path) -> dict[str, list[str]]:
    strategy, default, timeout_s, with_flag = COMMANDS[name]
    groups: dict[str, list[str]] = defaultdict(list)

    @settings(max_examples=examples or default, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case):
        argv, must_refuse = case if with_flag else (case, False)
        scratch.make_specials(root)
        outcome = run_case(argv, root, timeout_s)
        extra = PRUNE_SKIPPED if name == "prune" else None
        problems = contract_problems(outcome, root, must_refuse, extra)
        if problems:
            groups[f"{name}: {cause(problems[0])}"].append(describe(outcome, problems))

    run()
    return groups


def main(args: list[str]) -> int:
    examples = int(args[0]) if args and args[0].isdecimal() else None
    names = [a for a in args if not a.isdecimal()] or list(COMMANDS)
    from fpcost.pruner import calibrate as calibrate_module
    from fpcost.pruner import validate as validate_module

    calibrate_module.calibrate = refuse_measurement
    validate_module.measure_prefills = refuse_measurement
    with tempfile.TemporaryDirectory() as tmp:
        root = scratch.build(Path(tmp))
        scratch.tiny_encoder_dir(root)
        scratch.write_cpu_profile(root)
        total = 0
        for name in names:
            for key, cases in sorted(survey(name, examples, root).items()):
                total += len(cases)
                print(f"\n=== {key}  ({len(cases)} cases)\n{cases[0]}")
                for more in cases[1:3]:
                    print("  also: " + more.splitlines()[0])
        print(f"\n{total} failing cases")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

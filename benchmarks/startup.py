"""Cold start-up time of `fpcost estimate`, against a bare interpreter.

    python benchmarks/startup.py [--repeats 15]

Prints the median wall time of each command run in a fresh process. The estimate path
imports neither torch nor transformers (nor pandas), so it should start in well under a
second.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "fpcost estimate --model videollava --bits 4": [
        sys.executable, "-m", "fpcost.cli.main", "estimate", "--model", "videollava", "--bits", "4"],
    "fpcost estimate ... --format json --stage all": [
        sys.executable, "-m", "fpcost.cli.main", "estimate", "--model", "videollava", "--bits", "4",
        "--format", "json", "--stage", "all"],
    "fpcost table3": [sys.executable, "-m", "fpcost.cli.main", "table3"],
}


def median_wall_time_s(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"median wall time over {args.repeats} fresh processes")
    for label, argv in COMMANDS.items():
        print(f"  {median_wall_time_s(argv, args.repeats):6.3f} s  {label}")


if __name__ == "__main__":
    main()

"""Simulated requests per wall-clock second of ``fpcost serve``'s simulator on this machine.

    python benchmarks/serve_throughput.py [--requests 10000] [--repeats 3]

LLaVA-1.5-7B on the A6000 (FlashAttention on, w16a16kv16, 40 text + 128 output tokens,
576 or 288 visual tokens), Poisson arrivals at three rates: light load, near saturation
and overload (queueing and preemptions). Each run builds its ``Server`` (KV capacity and
the iteration-cost fit) and simulates every request; the median of the repeats is
reported, with the iterations simulated and the Little's-law error of the run. A
cProfile of one overloaded run names where the event loop spends its time (--profile).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

from fpcost.costmodel.accounting import get_accounting
from fpcost.costmodel.pipeline import PipelineSettings, make_workload
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.serve import poisson_requests
from fpcost.costmodel.serve.run import Server
from fpcost.hardware_profiles import load_profile

RATES = (2.0, 6.0, 20.0)  # requests/s: light, near saturation (unpruned), overloaded


def one_run(requests_count: int, rate: float, keep_ratio: float | None, seed: int = 0):
    model, hardware = get_preset("llava-1.5-7b"), load_profile("a6000")
    settings = PipelineSettings(QuantPlan(), get_accounting("fpcost"), True,
                                hardware.onchip_buffer_bytes)
    workload = make_workload(model, output_tokens=128, keep_ratio=keep_ratio)
    requests = poisson_requests([workload], rate, requests_count, seed)
    start = time.perf_counter()
    run = Server(model, hardware, settings).run(requests)
    return time.perf_counter() - start, run.summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(f"{args.requests:,} requests per run, median of {args.repeats}")
    print(f"{'keep':>5} {'rate/s':>7} {'wall s':>7} {'req/wall s':>11} {'iterations':>10} "
          f"{'preempt':>7} {'thr req/s':>9} {'Little err':>10}")
    for keep in (None, 0.5):
        for rate in RATES:
            times, summary = [], None
            for _ in range(args.repeats):
                elapsed, summary = one_run(args.requests, rate, keep)
                times.append(elapsed)
            wall = statistics.median(times)
            print(f"{keep or 1.0:>5} {rate:>7.1f} {wall:>7.2f} {args.requests / wall:>11,.0f} "
                  f"{summary['num_iterations']:>10,} {summary['num_preemptions']:>7} "
                  f"{summary['throughput_requests_per_s']:>9.3f} "
                  f"{summary['littles_law']['relative_error']:>10.1e}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(one_run, args.requests, RATES[-1], None)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(12)


if __name__ == "__main__":
    main()

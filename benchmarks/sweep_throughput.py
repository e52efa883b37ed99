"""Configurations per second of ``fpcost.sweep`` on this machine, against the scalar
``estimate()`` called once per configuration.

    python benchmarks/sweep_throughput.py [--repeats 7]

The grid is realistic: 4 models × 9 hardware profiles × 4 quantization plans × 100 keep
ratios × 4 batch sizes = 57,600 configurations, prefill and decode, each row with FLOPs,
time, memory access, stored activations and prefill speedup; the time includes building the
DataFrame (pandas is imported before timing). The issue's target is ≥ 100,000
configurations per second; LLM-Viewer, one configuration at a time, does about 11,000.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas  # noqa: F401  (imported before timing: a sweep returns a DataFrame)

import fpcost
from fpcost.costmodel.estimate import estimate as scalar_estimate
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.workload import Workload, visual_tokens_for_ratio

MODELS = ["llava-1.5-7b", "llava-1.5-13b", "videollava", "llava-next-7b"]
QUANTS = ["w16a16kv16", "w8a8kv8", "w4a16kv16", "w4a4kv4"]
KEEP_RATIOS = [i / 100 for i in range(1, 101)]
BATCHES = [1, 4, 16, 64]


def grid_kwargs(flash_attention: bool) -> dict:
    return dict(model=MODELS, hardware=fpcost.list_profiles(), quant=QUANTS,
                keep_ratio=KEEP_RATIOS, batch=BATCHES, flash_attention=flash_attention)


def sweep_rate(flash_attention: bool, repeats: int) -> tuple[int, float, float]:
    """(configurations, median seconds, configurations per second) of the vectorized sweep."""
    kwargs = grid_kwargs(flash_attention)
    rows = len(fpcost.sweep(**kwargs))  # warm-up: profiles parsed, code paths hot
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fpcost.sweep(**kwargs)
        times.append(time.perf_counter() - start)
    median_s = statistics.median(times)
    return rows, median_s, rows / median_s


def scalar_rate(num_configurations: int) -> float:
    """Configurations per second of ``estimate()`` (prefill, decode and the unpruned
    baseline for the speedup) called once per configuration, as a one-at-a-time tool does."""
    profiles = [fpcost.load_profile(name) for name in fpcost.list_profiles()]
    models = [get_preset(name) for name in MODELS]
    plans = [QuantPlan.parse(q) for q in QUANTS]
    configs = [(m, h, q, r, b) for m in models for h in profiles for q in plans
               for r in KEEP_RATIOS[::10] for b in BATCHES][:num_configurations]
    start = time.perf_counter()
    for model, hardware, plan, ratio, batch in configs:
        kept = visual_tokens_for_ratio(model.default_num_visual_tokens, ratio)
        result = scalar_estimate(model, Workload(kept, 40, batch), hardware, plan)
        result.totals()
        scalar_estimate(model, Workload(model.default_num_visual_tokens, 40, batch), hardware, plan,
                        stages=("prefill",)).totals()
    return len(configs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--scalar-configurations", type=int, default=500)
    args = parser.parse_args()
    print(f"grid: {len(MODELS)} models x {len(fpcost.list_profiles())} hardware x {len(QUANTS)} "
          f"quant plans x {len(KEEP_RATIOS)} keep ratios x {len(BATCHES)} batch sizes; "
          f"median of {args.repeats} repeats")
    for flash in (False, True):
        rows, median_s, rate = sweep_rate(flash, args.repeats)
        label = "fpcost.sweep, FlashAttention " + ("on " if flash else "off")
        print(f"  {label}: {rows:,} configurations in {median_s * 1e3:7.1f} ms = {rate:10,.0f} /s")
    rate = scalar_rate(args.scalar_configurations)
    print(f"  estimate() one at a time ({args.scalar_configurations} configurations): "
          f"{rate:10,.0f} /s")


if __name__ == "__main__":
    main()

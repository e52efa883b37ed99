"""What a simulated run reports: throughput, latency percentiles, SLO attainment, the
time-averaged state of the server, and Little's law checked on the output.

Definitions (seconds, SI units):

- the run spans [first arrival, last completion] (``duration_s``); throughput is the
  completed requests (and their output tokens) over it;
- TTFT: first token − arrival; latency: last token − arrival; TPOT: (latency − TTFT) /
  (output tokens − 1), for requests of at least two output tokens (as vLLM's benchmarks);
- percentiles p50 / p90 / p99 by linear interpolation (numpy's default);
- SLO attainment: the fraction of *submitted* requests that completed with TTFT <=
  ``slo_ttft_s`` and TPOT <= ``slo_tpot_s`` (a request without a TPOT meets that SLO; a
  rejected one meets none);
- ``mean_requests_in_system``: ∫ (requests arrived and not completed) dt / duration,
  integrated by the event loop, not derived from the latencies; Little's law says it
  equals throughput × mean latency, and ``littles_law`` reports both sides;
- KV-cache utilisation: ∫ (blocks held) dt / (blocks × duration); mean batch size: requests
  run per iteration, averaged over iterations.
"""

from __future__ import annotations

from .scheduler import SimulationResult

PERCENTILES = (50, 90, 99)


def _percentiles(values) -> dict[str, float] | None:
    import numpy as np

    if len(values) == 0:
        return None
    points = np.percentile(np.asarray(values, dtype=np.float64), PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, points, strict=True)}


def summarize(result: SimulationResult, slo_ttft_s: float | None = None,
              slo_tpot_s: float | None = None) -> dict:
    """The ``summary`` object of ``fpcost serve --format json`` (module docstring)."""
    done = [i for i, c in enumerate(result.completion_s) if c is not None]
    arrival, first, end = result.arrival_s, result.first_token_s, result.completion_s
    latency = [end[i] - arrival[i] for i in done]
    ttft = [first[i] - arrival[i] for i in done]
    tpot_of = {i: (end[i] - first[i]) / (result.num_output_tokens[i] - 1)
               for i in done if result.num_output_tokens[i] > 1}
    duration = result.duration_s
    num_completed = len(done)
    output_tokens = sum(result.num_output_tokens[i] for i in done)
    rate = num_completed / duration if duration > 0 else None
    mean_latency = sum(latency) / num_completed if num_completed else None
    in_system = result.requests_in_system_area_s / duration if duration > 0 else None
    summary = {
        "num_requests": len(arrival),
        "num_completed": num_completed,
        "num_rejected": len(result.rejected),
        "duration_s": duration,
        "throughput_requests_per_s": rate,
        "throughput_output_tokens_per_s": output_tokens / duration if duration > 0 else None,
        "mean_latency_s": mean_latency,
        "mean_ttft_s": sum(ttft) / num_completed if num_completed else None,
        "mean_requests_in_system": in_system,
        "ttft_s": _percentiles(ttft),
        "tpot_s": _percentiles(list(tpot_of.values())),
        "latency_s": _percentiles(latency),
        "num_preemptions": sum(result.num_preemptions_per_request),
        "num_iterations": result.num_iterations,
        "mean_batch_size": (result.num_scheduled_request_steps / result.num_iterations
                            if result.num_iterations else None),
        "mean_batched_tokens": (result.num_batched_tokens / result.num_iterations
                                if result.num_iterations else None),
        "busy_fraction": result.busy_s / duration if duration > 0 else None,
        "kv_cache_utilization": (result.kv_blocks_used_area_s / (result.num_kv_blocks * duration)
                                 if duration > 0 else None),
        "littles_law": _littles_law(in_system, rate, mean_latency),
        "rejected": [{"request": i, "reason": why} for i, why in result.rejected],
    }
    if slo_ttft_s is not None or slo_tpot_s is not None:
        met = sum(1 for i in done
                  if (slo_ttft_s is None or first[i] - arrival[i] <= slo_ttft_s)
                  and (slo_tpot_s is None or tpot_of.get(i, 0.0) <= slo_tpot_s))
        summary["slo"] = {"ttft_s": slo_ttft_s, "tpot_s": slo_tpot_s,
                          "attainment": met / len(arrival) if arrival else None}
    return summary


def _littles_law(in_system, rate, mean_latency) -> dict | None:
    """Both sides of L = λ·W and their relative difference."""
    if in_system is None or rate is None or mean_latency is None:
        return None
    product = rate * mean_latency
    error = abs(in_system - product) / product if product > 0 else None
    return {"mean_requests_in_system": in_system, "throughput_times_mean_latency": product,
            "relative_error": error}

"""A simulated server built once (KV capacity, iteration costs) and run on request lists."""

from __future__ import annotations

from dataclasses import dataclass

from ..hardware import HardwareProfile
from ..parallel import SINGLE, Parallelism, check_parallelism, link, shard_model
from ..pipeline import PipelineSettings
from ..spec import ModelSpec
from .capacity import KVCapacity, ServerSettings, kv_capacity
from .iteration import IterationCost
from .metrics import summarize
from .parallel import parallel_transform
from .requests import Request
from .scheduler import SimulationResult, simulate


@dataclass(frozen=True)
class ServeRun:
    """One simulated run: its requests' timeline and the summary of it."""

    result: SimulationResult
    summary: dict

    def request_records(self) -> list[dict]:
        """One dict per submitted request, in arrival order (seconds; None where a rejected
        request has no time): arrival, first token, completion, TTFT, TPOT (None under two
        output tokens), latency, output tokens, preemptions, and why it was rejected."""
        r = self.result
        why = dict(r.rejected)
        rows = []
        for i, (arrival, first, end) in enumerate(zip(r.arrival_s, r.first_token_s,
                                                      r.completion_s, strict=True)):
            tokens = r.num_output_tokens[i]
            done = end is not None
            rows.append({
                "request": i, "arrival_s": arrival, "first_token_s": first, "completion_s": end,
                "ttft_s": first - arrival if done else None,
                "tpot_s": (end - first) / (tokens - 1) if done and tokens > 1 else None,
                "latency_s": end - arrival if done else None,
                "num_output_tokens": tokens,
                "num_preemptions": r.num_preemptions_per_request[i],
                "rejected": why.get(i)})
        return rows


class Server:
    """``model`` served on ``hardware`` with ``settings`` (quantization, accounting,
    FlashAttention, vision settings) under the scheduler's ``server`` settings. The KV
    capacity and the iteration-cost caches are built once and shared by every run (e.g. the
    runs of a ``--max-rate`` search). ``parallelism``: the GPU split (parallel.py); each
    iteration is one tensor-parallel rank's operators plus the traffic (serve/parallel.py),
    the KV cache that of the GPU fitting the fewest blocks (capacity.py)."""

    def __init__(self, model: ModelSpec, hardware: HardwareProfile, settings: PipelineSettings,
                 server: ServerSettings | None = None, parallelism: Parallelism = SINGLE):
        self.model, self.hardware, self.settings = model, hardware, settings
        self.server = server or ServerSettings()
        self.parallelism = parallelism
        transform = None
        if not parallelism.is_single:
            check_parallelism(model, parallelism, settings.accounting.name)
            link(hardware)  # refuse a profile without an interconnect before any work
            transform = parallel_transform(model, parallelism, settings.quant.act_bytes_per_element)
        self.capacity: KVCapacity = kv_capacity(model, hardware, settings, self.server, parallelism)
        self.cost = IterationCost(shard_model(model, parallelism), settings, hardware, transform)

    def run(self, requests: list[Request], slo_ttft_s: float | None = None,
            slo_tpot_s: float | None = None) -> ServeRun:
        result = simulate(requests, self.cost, self.server, self.capacity.num_blocks)
        return ServeRun(result, summarize(result, slo_ttft_s, slo_tpot_s))


def serve(model: ModelSpec, hardware: HardwareProfile, requests: list[Request],
          settings: PipelineSettings, server: ServerSettings | None = None,
          slo_ttft_s: float | None = None, slo_tpot_s: float | None = None,
          parallelism: Parallelism = SINGLE) -> ServeRun:
    """Simulate ``requests`` on a fresh ``Server``."""
    return Server(model, hardware, settings, server, parallelism).run(requests, slo_ttft_s,
                                                                      slo_tpot_s)

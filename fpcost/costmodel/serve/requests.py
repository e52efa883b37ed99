"""The requests a simulated server receives: arrival times and per-request workloads.

Sources: Poisson arrivals (``poisson_arrivals``: exponential gaps of mean 1 / rate, drawn
with a seed as unit-rate gaps divided by the rate, so one seed gives the same arrival
pattern, compressed, at every rate), a trace (``trace.py``), or kept counts sampled from a
``fpcost prune --output`` file (the CLI draws them with ``sample_indices``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import WorkloadError
from ..workload import Workload

MAX_REQUESTS = 10_000_000  # a simulation holds every request in memory


@dataclass(frozen=True)
class Request:
    """One request: it arrives at ``arrival_time_s`` and asks for ``workload`` (batch 1:
    visual and text tokens, output tokens, image size, frame counts)."""

    arrival_time_s: float
    workload: Workload

    @property
    def num_prompt_tokens(self) -> int:
        return self.workload.num_prompt_tokens

    @property
    def num_output_tokens(self) -> int:
        """Tokens generated, at least one (the prefill's)."""
        return max(self.workload.num_output_tokens, 1)


def check_rate(rate: float, flag: str = "--rate") -> float:
    """An arrival rate: finite and > 0 requests per second."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
        raise WorkloadError(f"{flag} {rate!r} must be a finite number of requests per second > 0")
    return float(rate)


def check_num_requests(num_requests: int) -> int:
    if isinstance(num_requests, bool) or not isinstance(num_requests, int) or not (
            1 <= num_requests <= MAX_REQUESTS):
        raise WorkloadError(f"--num-requests {num_requests!r} must be an integer in "
                            f"1..{MAX_REQUESTS:,}")
    return num_requests


def unit_arrivals(num_requests: int, seed: int):
    """Arrival times of a unit-rate Poisson process (numpy float64 array): divide by the
    rate for any other rate."""
    import numpy as np

    check_num_requests(num_requests)
    gaps = np.random.default_rng(seed).exponential(1.0, num_requests)
    return np.cumsum(gaps)


def sample_indices(num_requests: int, num_choices: int, seed: int):
    """Which of ``num_choices`` workloads each request takes, uniformly with replacement,
    from a stream of its own (``seed``, 1) so the arrivals do not shift with it."""
    import numpy as np

    return np.random.default_rng([seed, 1]).integers(0, num_choices, num_requests)


def poisson_requests(workloads: list[Workload], rate: float, num_requests: int, seed: int,
                     choices=None) -> list[Request]:
    """``num_requests`` Poisson arrivals at ``rate``; request i asks for
    ``workloads[choices[i]]`` (``choices`` None: ``workloads[0]`` for every request)."""
    rate = check_rate(rate)
    times = unit_arrivals(num_requests, seed) / rate
    if choices is None:
        return [Request(float(t), workloads[0]) for t in times]
    return [Request(float(t), workloads[int(c)]) for t, c in zip(times, choices, strict=True)]

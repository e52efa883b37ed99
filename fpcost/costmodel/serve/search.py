"""``--max-rate``: the highest Poisson arrival rate at which a server meets its SLOs.

Attainment (metrics.py) at rate r is measured on the same seeded arrival pattern scaled to
r (requests.py), so it falls, up to the noise of a finite run, as r grows. The search
doubles (or halves) from a starting rate until it brackets the target, then bisects until
the bracket is within ``rel_tolerance``; it reports the highest rate found to meet the
target and the run at it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import WorkloadError
from .run import ServeRun

MIN_RATE = 1e-6  # requests/s: below this no rate is searched for
MAX_RATE = 1e9
DEFAULT_TARGET = 0.9  # fraction of requests meeting every SLO
DEFAULT_REL_TOLERANCE = 0.01


@dataclass(frozen=True)
class RateSearch:
    """The highest rate found to meet the target (None: not even ``MIN_RATE`` does), the
    run at it, and every (rate, attainment) tried, in order."""

    max_rate_requests_per_s: float | None
    run: ServeRun | None
    target_attainment: float
    trials: tuple[tuple[float, float], ...]


def max_rate(run_at: Callable[[float], ServeRun], start_rate: float,
             target: float = DEFAULT_TARGET, rel_tolerance: float = DEFAULT_REL_TOLERANCE) -> RateSearch:
    """Search with ``run_at(rate)`` (a run with SLOs, so its summary has ``slo``)."""
    if not 0 < target <= 1:
        raise WorkloadError(f"--slo-target {target!r} must be a fraction in (0, 1]")
    trials: list[tuple[float, float]] = []
    runs: dict[float, ServeRun] = {}

    def meets(rate: float) -> bool:
        run = run_at(rate)
        attainment = run.summary["slo"]["attainment"]
        trials.append((rate, attainment))
        runs[rate] = run
        return attainment >= target

    rate = min(max(start_rate, MIN_RATE), MAX_RATE)
    if meets(rate):
        low, high = rate, None
        while high is None and low < MAX_RATE:
            candidate = min(low * 2, MAX_RATE)
            if meets(candidate):
                low = candidate
            else:
                high = candidate
        if high is None:
            return RateSearch(low, runs[low], target, tuple(trials))
    else:
        low, high = None, rate
        while low is None and high > MIN_RATE:
            candidate = max(high / 2, MIN_RATE)
            if meets(candidate):
                low = candidate
            else:
                high = candidate
        if low is None:
            return RateSearch(None, None, target, tuple(trials))
    while high / low > 1 + rel_tolerance:
        middle = (low * high) ** 0.5
        if meets(middle):
            low = middle
        else:
            high = middle
    return RateSearch(low, runs[low], target, tuple(trials))

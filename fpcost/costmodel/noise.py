"""Noise in timed measurements: dispersion of repeated passes and the detectors that decide
whether a calibration or validation run can be trusted.

A run is unstable when (any of):

- the passes of one measurement disagree: the median pass is more than ``max_spread``
  above the fastest (other jobs only ever add time, so a quiet machine gives passes within
  a few percent of each other);
- (CPU, wall clock) the process did not hold its cores: its CPU time over wall time ×
  threads is below ``min_occupancy`` — a busy job on every core slows every pass alike;
- times go down as token counts go up (a larger input cannot be cheaper: only load from
  other jobs makes it look so), beyond ``monotonic_tolerance``;
- a fitted efficiency falls outside (0, 1]: no kernel beats its ceiling.

``fpcost calibrate`` and ``fpcost validate`` re-measure what a detector flags and, if it is
still unstable, stop with ``TooNoisyError`` (one line, non-zero exit) instead of printing
errors as if they were valid. Pure arithmetic over seconds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import FpcostError

DEFAULT_MAX_SPREAD = 0.10  # median pass at most 10% above the fastest
# CPU time of the process over wall time × threads, median over the passes: below this the
# process was descheduled (another job held its core) and every pass is slow alike, which
# the spread alone cannot see.
DEFAULT_MIN_OCCUPANCY = 0.85
DEFAULT_MONOTONIC_TOLERANCE = 0.03  # a larger count may time up to 3% below a smaller one
MAX_EFFICIENCY = 1.0


class TooNoisyError(FpcostError):
    """Measurements stayed unstable after re-measuring: the machine was too noisy."""


@dataclass(frozen=True)
class Dispersion:
    """Summary of repeated passes of one measurement, in seconds."""

    num_passes: int
    min_s: float
    median_s: float
    max_s: float
    occupancy: float | None = None  # median CPU time / (wall time × threads); None: not measured

    @classmethod
    def of(cls, times_s: Sequence[float], occupancies: Sequence[float] | None = None
           ) -> Dispersion:
        if not times_s:
            raise ValueError("a dispersion needs at least one pass")
        for t in times_s:
            if not (math.isfinite(t) and t > 0):
                raise TooNoisyError(f"too noisy: a timed pass took {t!r} s (must be finite and > 0)")
        occupancy = statistics.median(occupancies) if occupancies else None
        return cls(len(times_s), min(times_s), statistics.median(times_s), max(times_s), occupancy)

    @property
    def spread(self) -> float:
        """(median − min) / min: how far the typical pass is above the least-disturbed one."""
        return (self.median_s - self.min_s) / self.min_s

    @property
    def range_spread(self) -> float:
        """(max − min) / min."""
        return (self.max_s - self.min_s) / self.min_s

    def as_dict(self) -> dict[str, float | int]:
        return {"num_passes": self.num_passes, "min_s": self.min_s, "median_s": self.median_s,
                "max_s": self.max_s, "spread": self.spread, "range_spread": self.range_spread,
                "occupancy": self.occupancy}

    def problem(self, max_spread: float = DEFAULT_MAX_SPREAD,
                min_occupancy: float = DEFAULT_MIN_OCCUPANCY) -> str | None:
        """What is wrong with these passes, or None."""
        if self.spread > max_spread:
            return f"median pass {100 * self.spread:.0f}% above the fastest"
        if self.occupancy is not None and self.occupancy < min_occupancy:
            return f"the process held only {100 * self.occupancy:.0f}% of its core(s)"
        return None


def high_spread(dispersions: Mapping[str, Dispersion], max_spread: float = DEFAULT_MAX_SPREAD,
                min_occupancy: float = DEFAULT_MIN_OCCUPANCY) -> list[str]:
    """Labels of the measurements whose ``spread`` exceeds ``max_spread`` or whose process
    was descheduled (occupancy below ``min_occupancy``)."""
    return [label for label, d in dispersions.items()
            if d.problem(max_spread, min_occupancy) is not None]


def non_monotonic(num_tokens: Sequence[int], times_s: Sequence[float],
                  tolerance: float = DEFAULT_MONOTONIC_TOLERANCE) -> list[int]:
    """Indices i (into the inputs, in token order) whose time is more than ``tolerance``
    below the time at a smaller token count: a larger input measured as cheaper."""
    order = sorted(range(len(num_tokens)), key=lambda i: num_tokens[i])
    flagged = []
    slowest_so_far = 0.0
    previous_count = None
    for i in order:
        if previous_count is not None and num_tokens[i] > previous_count \
                and times_s[i] < slowest_so_far * (1 - tolerance):
            flagged.append(i)
        slowest_so_far = max(slowest_so_far, times_s[i])
        previous_count = num_tokens[i]
    return flagged


def efficiencies_out_of_range(efficiencies: Mapping[str, float],
                              maximum: float = MAX_EFFICIENCY) -> list[str]:
    """Classes whose efficiency is not a finite number in (0, ``maximum``]."""
    return [c for c, e in efficiencies.items()
            if not (isinstance(e, (int, float)) and math.isfinite(e) and 0 < e <= maximum)]


def describe(problems: Sequence[str], limit: int = 3) -> str:
    """The first ``limit`` problems joined for a one-line message."""
    shown = "; ".join(problems[:limit])
    more = len(problems) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


def too_noisy(what: str, problems: Sequence[str], hint: str) -> TooNoisyError:
    """The one-line error of a run that stayed unstable after re-measuring."""
    return TooNoisyError(f"too noisy: {what} stayed unstable after re-measuring "
                         f"({describe(problems)}); {hint}")

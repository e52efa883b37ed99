"""Checks around a sweep: its peak memory before anything is allocated, and its finished
frame (the last line of defence against a non-finite or negative number)."""

from __future__ import annotations

import os

import numpy as np

from .errors import WorkloadError

# Peak memory of a sweep per cell (row x column): 8 B (int64 / float64 / object pointer) in
# each of ~3 live copies (per-model blocks, their concatenation, the DataFrame) plus the CSV
# or JSON text. Calibrated on this machine: 5,000,000 rows x 36 columns written as CSV
# peaked at 6.5 GB resident (/usr/bin/time -v), 36 B per cell; 40 B keeps a margin.
BYTES_PER_CELL = 40
# A sweep may use at most this fraction of the memory available when it starts.
MEMORY_FRACTION = 0.5


def available_memory_bytes() -> float | None:
    """Memory the system can give now (Linux ``MemAvailable``; else free physical pages;
    None when neither is known)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def sweep_memory_bytes(num_rows: int, num_columns: int) -> float:
    """Peak bytes a sweep of ``num_rows`` rows and ``num_columns`` columns allocates."""
    return float(num_rows) * num_columns * BYTES_PER_CELL


def check_memory(num_rows: int, num_columns: int, available: float | None = None) -> None:
    """Refuse a sweep whose peak memory is above ``MEMORY_FRACTION`` of the memory
    available (``force`` does not lift this: it would only end in MemoryError or swap)."""
    needed = sweep_memory_bytes(num_rows, num_columns)
    available = available_memory_bytes() if available is None else available
    if available is not None and needed > MEMORY_FRACTION * available:
        raise WorkloadError(
            f"the sweep has {num_rows:,} configurations x {num_columns} columns: about "
            f"{needed / 2**30:.1f} GiB at its peak, more than half of the "
            f"{available / 2**30:.1f} GiB of memory available; narrow it"
        )


def check_frame(frame) -> None:
    """The last line of defence: every time, FLOP and byte column finite and non-negative
    (speedups may be NaN: no baseline for a text-only model)."""
    for column in frame.columns:
        if column.endswith(("_flops", "_time_s", "_bytes")) or column == "ttft_s":
            values = frame[column].to_numpy(dtype=np.float64)
            bad = ~(np.isfinite(values) & (values >= 0))
            if bad.any():
                row = frame.iloc[int(np.argmax(bad))]
                raise WorkloadError(
                    f"{column} came out as {values[bad][0]!r} for {row['model']} on "
                    f"{row['hardware']} ({row['num_visual_tokens']} visual tokens, batch "
                    f"{row['batch_size']}): not a finite non-negative number; check the "
                    "hardware profile (rates and bandwidth positive, not denormal)")

"""Timing real kernels: the device, its clock, and the repeat-and-take-the-median loop.

All device-specific logic of the validator lives here, behind a small ``Timer``
abstraction, so the rest of the code (calibration kernels, model timing, hooks) is the same
on a CPU and on a CUDA GPU:

- ``WallTimer``: ``time.perf_counter`` (CPU, wall clock).
- ``ThreadTimer``: ``time.thread_time`` (CPU time of the calling thread; with one intra-op
  thread every kernel runs on the calling thread, so time spent descheduled by other jobs on
  a shared machine is not counted).
- ``CudaTimer``: CUDA events recorded on the current stream; elapsed times are read after
  one synchronisation, so timing does not serialise the GPU between marks.

A ``Mark`` is whatever a timer's ``mark()`` returns; ``elapsed_s(start, end)`` turns two
marks into seconds and may synchronise the device first.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from fpcost.costmodel.errors import FpcostError
from fpcost.costmodel.units import MEGA, MILLI

DEVICES = ("cpu", "cuda")
# How repeated timings are summarised. The median is the default; the minimum is the
# least-disturbed pass, the usual estimator on a machine shared with other jobs (noise
# from them only ever adds time).
STATISTICS = {"median": statistics.median, "min": min}
CLOCKS = ("wall", "thread")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Bits per element of each dtype, for the cost model's QuantPlan.
DTYPE_BITS = {"float32": 32, "bfloat16": 16, "float16": 16}


class DeviceError(FpcostError):
    """A device that is absent, a clock it cannot use, or a workload it cannot hold."""


class Timer(Protocol):
    def mark(self) -> Any: ...

    def elapsed_s(self, start: Any, end: Any) -> float: ...

    def synchronize(self) -> None: ...


class WallTimer:
    """Wall-clock time on the host (``perf_counter``); CPU kernels are synchronous."""

    name = "wall"

    def mark(self) -> float:
        return time.perf_counter()

    def elapsed_s(self, start: float, end: float) -> float:
        return end - start

    def synchronize(self) -> None:
        pass


class ThreadTimer(WallTimer):
    """CPU time of the calling thread (``thread_time``): valid with one intra-op thread."""

    name = "thread"

    def mark(self) -> float:
        return time.thread_time()


class CudaTimer:
    """CUDA events on the current stream; ``elapsed_s`` synchronises on the end event."""

    name = "cuda-events"

    def __init__(self, cuda: Any = None) -> None:
        self._cuda = cuda if cuda is not None else torch.cuda  # injectable for tests

    def mark(self) -> Any:
        event = self._cuda.Event(enable_timing=True)
        event.record()
        return event

    def elapsed_s(self, start: Any, end: Any) -> float:
        end.synchronize()
        return start.elapsed_time(end) * MILLI  # elapsed_time is in milliseconds

    def synchronize(self) -> None:
        self._cuda.synchronize()


@dataclass(frozen=True)
class Device:
    """The device kernels run on, and how they are timed."""

    type: str  # "cpu" or "cuda"
    torch_device: torch.device
    timer: Any  # a Timer
    name: str
    num_threads: int

    @property
    def profile_device_type(self) -> str:
        """The ``device_type`` of a hardware profile for this device."""
        return "gpu" if self.type == "cuda" else "cpu"


def resolve_device(name: str, clock: str = "wall", num_threads: int | None = None,
                   cuda: Any = None) -> Device:
    """The device called ``name`` ("cpu" or "cuda"), or a one-line ``DeviceError``.

    ``clock`` applies to the CPU only ("wall" or "thread"; "thread" needs one thread).
    ``num_threads`` is the intra-op thread count to time with (default: torch's current).
    ``cuda`` replaces ``torch.cuda`` (tests mock the GPU with it).
    """
    cuda = cuda if cuda is not None else torch.cuda
    if name not in DEVICES:
        raise DeviceError(f"--device {name!r} is unknown; valid: {', '.join(DEVICES)}")
    if clock not in CLOCKS:
        raise DeviceError(f"--clock {clock!r} is unknown; valid: {', '.join(CLOCKS)}")
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                    or num_threads < 1):
        raise DeviceError(f"--threads {num_threads!r} must be a positive integer")
    threads = num_threads or torch.get_num_threads()
    if name == "cuda":
        if not cuda.is_available():
            raise DeviceError(
                f"--device cuda: no CUDA GPU is available here (torch {torch.__version__}); "
                "use --device cpu"
            )
        if clock != "wall":
            raise DeviceError("--clock thread applies to --device cpu only; CUDA is timed with events")
        index = cuda.current_device()
        return Device("cuda", torch.device("cuda", index), CudaTimer(cuda),
                      str(cuda.get_device_name(index)), threads)
    if clock == "thread" and threads != 1:
        raise DeviceError(f"--clock thread times the calling thread only; it needs --threads 1, "
                          f"not {threads}")
    timer = ThreadTimer() if clock == "thread" else WallTimer()
    return Device("cpu", torch.device("cpu"), timer, cpu_name(), threads)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's processor."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine() or "cpu"


def _meminfo_bytes(key: str) -> float | None:
    """A /proc/meminfo field (``MemTotal``, ``MemAvailable``), in bytes; None off Linux."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) * 1024  # the file's "kB" are KiB
    return None


def memory_bytes(device: Device, cuda: Any = None) -> tuple[float, float]:
    """(total, available) memory of ``device`` in bytes."""
    cuda = cuda if cuda is not None else torch.cuda
    if device.type == "cuda":
        free, total = cuda.mem_get_info(device.torch_device)
        return float(total), float(free)
    total = _meminfo_bytes("MemTotal")
    available = _meminfo_bytes("MemAvailable")
    if total is None or available is None:
        import os

        total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        available = total
    return total, available


@contextlib.contextmanager
def fixed_threads(num_threads: int) -> Iterator[None]:
    """Run the body with ``num_threads`` intra-op threads; restore the old count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_repeats(fn: Callable[[], Any], timer: Any, warmup: int, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    if repeats < 1:
        raise DeviceError(f"repeats = {repeats!r} must be at least 1")
    for _ in range(warmup):
        fn()
    timer.synchronize()
    times = []
    for _ in range(repeats):
        start = timer.mark()
        fn()
        end = timer.mark()
        times.append(timer.elapsed_s(start, end))
    return times


def occupancy_clock(device: Device) -> Callable[[], float] | None:
    """The process's CPU-time clock when it can tell whether the process held its cores
    (a CPU timed on the wall clock); None otherwise (CUDA events, the thread clock)."""
    if device.type == "cpu" and getattr(device.timer, "name", "") == "wall":
        return time.process_time
    return None


def time_repeats_occupied(fn: Callable[[], Any], device: Device, warmup: int, repeats: int
                          ) -> tuple[list[float], list[float] | None]:
    """(seconds of each of ``repeats`` calls, and each call's occupancy — CPU time over
    wall time × threads — where ``occupancy_clock`` has a clock)."""
    if repeats < 1:
        raise DeviceError(f"repeats = {repeats!r} must be at least 1")
    timer, cpu = device.timer, occupancy_clock(device)
    for _ in range(warmup):
        fn()
    timer.synchronize()
    times, occupancies = [], []
    for _ in range(repeats):
        cpu_start = cpu() if cpu else 0.0
        start = timer.mark()
        fn()
        end = timer.mark()
        elapsed = timer.elapsed_s(start, end)
        times.append(elapsed)
        if cpu:
            occupancies.append((cpu() - cpu_start) / (elapsed * device.num_threads))
    return times, (occupancies if cpu else None)


def summarize(times_s: list[float], statistic: str = "median") -> float:
    """``times_s`` reduced by ``statistic`` ("median" or "min")."""
    if statistic not in STATISTICS:
        raise DeviceError(f"--statistic {statistic!r} is unknown; valid: {', '.join(STATISTICS)}")
    return STATISTICS[statistic](times_s)


def measure_s(fn: Callable[[], Any], timer: Any, warmup: int = 1, repeats: int = 5,
                  statistic: str = "median") -> float:
    """Seconds of one call of ``fn``: ``repeats`` timed calls after ``warmup`` untimed ones,
    reduced by ``statistic`` (the median unless told otherwise)."""
    return summarize(time_repeats(fn, timer, warmup, repeats), statistic)


FMA_UNITS_PER_CORE = 2  # two 256/512-bit FMA pipes: Intel since Haswell, AMD since Zen 2
FLOPS_PER_FMA = 2
FP32_BYTES = 4
SIMD_BITS = {"avx512f": 512, "avx2": 256, "avx": 256, "sse2": 128}


def nominal_cpu_peak(num_threads: int) -> tuple[float, str] | None:
    """(FP32 FLOP/s, derivation) a spec sheet would give for ``num_threads`` cores:
    cores × nominal clock × SIMD lanes × 2 (FMA) × 2 FMA units; None off Linux."""
    flags: set[str] = set()
    mhz = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "cpu mhz" and mhz is None:
                    mhz = float(value)
    if mhz is None or not flags:
        return None
    bits = max((b for flag, b in SIMD_BITS.items() if flag in flags), default=64)
    lanes = bits // (8 * FP32_BYTES)
    fma = "fma" in flags or "avx512f" in flags
    per_cycle = lanes * (FLOPS_PER_FMA if fma else 1) * FMA_UNITS_PER_CORE
    peak = num_threads * mhz * MEGA * per_cycle
    return peak, (f"{num_threads} core(s) x {mhz:.0f} MHz (/proc/cpuinfo) x {per_cycle} FP32 "
                  f"FLOP/cycle ({bits}-bit SIMD, {'FMA' if fma else 'no FMA'}, "
                  f"{FMA_UNITS_PER_CORE} units)")

"""The device's own ceilings, timed: matrix multiplies per dtype over a shape ladder, an
element-wise kernel at cache-sized to larger sizes, a large copy, and the cache sizes; each
measurement keeps the dispersion of its passes (``fpcost.costmodel.noise``). Shapes too
slow for the device (bf16 GEMMs on a CPU without bf16 units run at ~1 GFLOP/s) are skipped
once the best rate seen so far predicts a call longer than ``MAX_CALL_S``."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from fpcost.costmodel.calibration import MatmulSample, VectorSample
from fpcost.costmodel.noise import Dispersion
from fpcost.costmodel.units import GIGA, KILO, MEGA, MILLI

from .timing import DTYPES, Device, measure_s, summarize, time_repeats_occupied

Progress = Callable[[str], None]

CALIBRATE_DTYPES = (*DTYPES, "int8")
# Matrix shapes (m, k, n), smallest first: decode-like and skinny products, then square ones
# large enough to reach the peak. The GPU ladder is the CPU one scaled up.
MATMUL_SHAPES = {
    "cpu": ((16, 1024, 1024), (64, 1024, 1024), (2048, 64, 2048), (256, 1024, 2816),
            (1024, 1024, 1024), (512, 2048, 5632), (2048, 2048, 2048)),
    "cuda": ((16, 4096, 4096), (128, 4096, 4096), (8192, 128, 8192), (1024, 4096, 11008),
             (4096, 4096, 4096), (8192, 8192, 8192)),
}
VECTOR_SIZES = {"cpu": (2**14, 2**16, 2**18, 2**20), "cuda": (2**20, 2**22, 2**24)}
COPY_BYTES = {"cpu": 512 * MEGA, "cuda": 2 * GIGA}  # ≫ last-level cache, small next to memory
MAX_CALL_S = {"cpu": 1.0, "cuda": 0.5}
INNER_LOOP_SECONDS = 2 * MILLI  # batch tiny kernels into calls of at least this long
INT8_MIN_ROWS = 17  # torch._int_mm needs m > 16
GPU_REGISTER_FILE_BYTES = 256 * KILO  # per SM, LLM-Viewer's on-chip buffer (docs/hardware.md)
SUITE_DTYPE = {"cpu": "float32", "cuda": "float16"}

def _repeat(fn: Callable[[], object], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            fn()

    return run


def _timed_passes(device: Device, fn: Callable[[], object], warmup: int, repeats: int,
                  approx_s: float | None = None) -> tuple[list[float], list[float] | None]:
    """(seconds of one call of ``fn`` in each of ``repeats`` timed passes, their
    occupancies); tiny kernels are looped so a timed pass lasts at least
    ``INNER_LOOP_SECONDS`` (``approx_s`` is a first guess of one call)."""
    inner = 1
    if approx_s is not None and approx_s < INNER_LOOP_SECONDS:
        inner = min(4096, math.ceil(INNER_LOOP_SECONDS / max(approx_s, 1e-7)))
    times, occupancies = time_repeats_occupied(_repeat(fn, inner), device, warmup, repeats)
    return [t / inner for t in times], occupancies


def timed_call_s(device: Device, fn: Callable[[], object], warmup: int, repeats: int,
           approx_s: float | None = None, statistic: str = "median",
           dispersions: dict[str, Dispersion] | None = None, label: str = "") -> float:
    """Seconds of one call of ``fn``, the passes reduced by ``statistic``; their dispersion
    is recorded in ``dispersions[label]``."""
    passes, occupancies = _timed_passes(device, fn, warmup, repeats, approx_s)
    if dispersions is not None:
        dispersions[label] = Dispersion.of(passes, occupancies)
    return summarize(passes, statistic)


def _matmul_fn(dtype: str, m: int, k: int, n: int, device: torch.device) -> Callable[[], object]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    if dtype == "int8":
        a = torch.randint(-8, 8, (m, k), dtype=torch.int8, generator=gen).to(device)
        b = torch.randint(-8, 8, (k, n), dtype=torch.int8, generator=gen).to(device)
        return lambda: torch._int_mm(a, b)
    a = torch.randn(m, k, generator=gen).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(k, n, generator=gen).to(device=device, dtype=DTYPES[dtype])
    return lambda: torch.mm(a, b)


def measure_matmuls(device: Device, dtype: str, warmup: int, repeats: int,
                    progress: Progress | None = None, statistic: str = "median",
                    dispersions: dict[str, Dispersion] | None = None) -> list[MatmulSample]:
    """The shape ladder in ``dtype``; shapes predicted to take longer than the per-call
    budget (at the best rate so far) are skipped. int8 without ``torch._int_mm`` support
    returns no samples."""
    samples: list[MatmulSample] = []
    best_rate = None
    for m, k, n in MATMUL_SHAPES[device.type]:
        if dtype == "int8":
            m = max(m, INT8_MIN_ROWS)
        flops = 2.0 * m * k * n
        if best_rate is not None and flops / best_rate > MAX_CALL_S[device.type]:
            continue
        fn = _matmul_fn(dtype, m, k, n, device.torch_device)
        try:
            fn()  # a first call: does this dtype run here, and how fast?
        except RuntimeError:
            if dtype == "int8":
                return []
            raise
        approx = measure_s(fn, device.timer, 0, 1)
        time_s = timed_call_s(device, fn, warmup, repeats, approx, statistic, dispersions,
                        f"matmul {dtype} {m}x{k}x{n}")
        sample = MatmulSample(dtype, m, k, n, time_s)
        samples.append(sample)
        best_rate = max(best_rate or 0.0, sample.flops_per_s)
        if progress:
            progress(f"matmul {dtype} {sample.shape}")
    return samples


def measure_vector(device: Device, dtype: str, warmup: int, repeats: int,
                   progress: Progress | None = None, statistic: str = "median",
                   dispersions: dict[str, Dispersion] | None = None) -> list[VectorSample]:
    """``addcmul`` (out = a + b·c: 2 FLOP/element) over cache-sized to larger tensors."""
    samples = []
    for size in VECTOR_SIZES[device.type]:
        a, b, c, out = (torch.rand(size, device=device.torch_device).to(DTYPES[dtype])
                        for _ in range(4))
        fn = lambda a=a, b=b, c=c, out=out: torch.addcmul(a, b, c, out=out)  # noqa: E731
        approx = measure_s(fn, device.timer, 1, 3)
        samples.append(VectorSample(dtype, size, 2, timed_call_s(
            device, fn, warmup, repeats, approx, statistic, dispersions,
            f"element-wise {dtype} {size}")))
        if progress:
            progress(f"element-wise {dtype} {size}")
    return samples


def measure_copy(device: Device, warmup: int, repeats: int, statistic: str = "median",
                 dispersions: dict[str, Dispersion] | None = None) -> tuple[float, float]:
    """(bytes of the copied tensor, seconds) of one large float32 copy."""
    num_bytes = COPY_BYTES[device.type]
    num_elements = int(num_bytes // 4)
    src = torch.ones(num_elements, device=device.torch_device)
    dst = torch.empty_like(src)
    seconds = timed_call_s(device, lambda: dst.copy_(src), warmup, repeats, None, statistic,
                     dispersions, "copy")
    return float(num_elements * 4), seconds


def cpu_cache_bytes(level: str = "2") -> float | None:
    """Per-core L2 (or ``level``) cache size from sysfs (Linux), in bytes."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")):
        try:
            if (index / "level").read_text().strip() == level:
                text = (index / "size").read_text().strip().upper()
                multiplier = {"K": 1024, "M": 1024**2}.get(text[-1], 1)
                return float(text.rstrip("KM")) * multiplier
        except (OSError, ValueError):
            continue
    return None


def onchip_buffer(device: Device) -> tuple[float, str]:
    """(bytes, source): the on-chip buffer the FlashAttention tile is sized from."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device.torch_device).multi_processor_count
        return sms * GPU_REGISTER_FILE_BYTES, (
            f"derived: {sms} SMs x 256 KB register file (LLM-Viewer's on-chip buffer)")
    l2 = cpu_cache_bytes()
    if l2 is None:
        l2 = 512 * 1024
        return l2 * device.num_threads, "assumed: 512 KiB L2 per core (sysfs unreadable) x threads"
    return l2 * device.num_threads, f"measured: per-core L2 {l2:.0f} B (sysfs) x {device.num_threads} threads"


def measure_ceilings(device, dtypes, warmup, repeats, statistic, dispersions, progress):
    """(matmul samples, vector samples, copy bytes, copy seconds)."""
    matmul: list[MatmulSample] = []
    vector: list[VectorSample] = []
    for dtype in dtypes:
        matmul += measure_matmuls(device, dtype, warmup, repeats, progress, statistic, dispersions)
        if dtype in DTYPES:
            vector += measure_vector(device, dtype, warmup, repeats, progress, statistic,
                                     dispersions)
    if not any(s.dtype == "float32" for s in vector):  # build_profile needs the FP32 rate
        vector += measure_vector(device, "float32", warmup, repeats, progress, statistic,
                                 dispersions)
    copy_bytes, copy_time_s = measure_copy(device, warmup, repeats, statistic, dispersions)
    if progress:
        progress("copy bandwidth")
    return matmul, vector, copy_bytes, copy_time_s

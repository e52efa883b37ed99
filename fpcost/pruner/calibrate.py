"""``fpcost calibrate``, the torch side: time the device's own ceilings and one operator of
a decoder layer at a time, then hand the numbers to ``fpcost.costmodel.calibration``.

Every measurement is the median of ``repeats`` timed calls after ``warmup`` untimed ones,
at a fixed intra-op thread count (``fixed_threads``). Shapes too slow for the device (bf16
GEMMs on a CPU without bf16 units run at ~1 GFLOP/s) are skipped once the best rate seen so
far predicts a call longer than ``max_call_s``.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fpcost.costmodel.calibration import (
    CeilingMeasurements,
    KernelCase,
    MatmulSample,
    VectorSample,
    build_profile,
    calibrated,
    fit_kernel_efficiencies,
    kernel_suite,
    nominal_profile,
    shortfall_notes,
)
from fpcost.costmodel.hardware import HardwareProfile
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.units import GIGA, KILO, MEGA, MILLI

from .timing import (
    DTYPE_BITS,
    DTYPES,
    Device,
    DeviceError,
    fixed_threads,
    measure_s,
    memory_bytes,
    nominal_cpu_peak,
    summarize,
)

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

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CalibrationResult:
    profile: HardwareProfile  # calibrated: measured ceilings and fitted efficiencies
    measurements: CeilingMeasurements
    kernel_cases: tuple[KernelCase, ...]
    kernel_times_s: tuple[float, ...]
    # Datasheet-style profile (nominal SIMD peak, efficiency 1); CPUs only: a GPU's
    # datasheet figures are the built-in profiles.
    nominal: HardwareProfile | None = None


def _repeat(fn: Callable[[], object], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            fn()

    return run


def _timed(device: Device, fn: Callable[[], object], warmup: int, repeats: int,
           approx_s: float | None = None, statistic: str = "median") -> float:
    """Median seconds of one call of ``fn``; tiny kernels are looped so a timed call lasts
    at least ``INNER_LOOP_SECONDS`` (``approx_s`` is a first guess of one call)."""
    inner = 1
    if approx_s is not None and approx_s < INNER_LOOP_SECONDS:
        inner = min(1024, math.ceil(INNER_LOOP_SECONDS / max(approx_s, 1e-7)))
    total = measure_s(_repeat(fn, inner), device.timer, warmup, repeats, statistic)
    return total / inner


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
                    progress: Progress | None = None, statistic: str = "median") -> list[MatmulSample]:
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
        time_s = _timed(device, fn, warmup, repeats, approx, statistic)
        sample = MatmulSample(dtype, m, k, n, time_s)
        samples.append(sample)
        best_rate = max(best_rate or 0.0, sample.flops_per_s)
        if progress:
            progress(f"matmul {dtype} {sample.shape}")
    return samples


def measure_vector(device: Device, dtype: str, warmup: int, repeats: int,
                   progress: Progress | None = None, statistic: str = "median") -> list[VectorSample]:
    """``addcmul`` (out = a + b·c: 2 FLOP/element) over cache-sized to larger tensors."""
    samples = []
    for size in VECTOR_SIZES[device.type]:
        a, b, c, out = (torch.rand(size, device=device.torch_device).to(DTYPES[dtype])
                        for _ in range(4))
        fn = lambda a=a, b=b, c=c, out=out: torch.addcmul(a, b, c, out=out)  # noqa: E731
        approx = measure_s(fn, device.timer, 1, 3)
        samples.append(VectorSample(dtype, size, 2,
                                    _timed(device, fn, warmup, repeats, approx, statistic)))
        if progress:
            progress(f"element-wise {dtype} {size}")
    return samples


def measure_copy(device: Device, warmup: int, repeats: int,
                 statistic: str = "median") -> tuple[float, float]:
    """(bytes of the copied tensor, median seconds) of one large float32 copy."""
    num_bytes = COPY_BYTES[device.type]
    num_elements = int(num_bytes // 4)
    src = torch.ones(num_elements, device=device.torch_device)
    dst = torch.empty_like(src)
    seconds = measure_s(lambda: dst.copy_(src), device.timer, warmup, repeats, statistic)
    return float(num_elements * 4), seconds


def _cpu_l2_bytes() -> float | None:
    """Per-core L2 size from sysfs (Linux), in bytes."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
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
    l2 = _cpu_l2_bytes()
    if l2 is None:
        l2 = 512 * 1024
        return l2 * device.num_threads, "assumed: 512 KiB L2 per core (sysfs unreadable) x threads"
    return l2 * device.num_threads, f"measured: per-core L2 {l2:.0f} B (sysfs) x {device.num_threads} threads"


# ---------------------------------------------------------------------------------------------
# Single-operator kernels of a decoder layer


def kernel_fn(case: KernelCase, dtype: torch.dtype, device: torch.device) -> Callable[[], object]:
    """A closure running ``case``'s operator the way transformers' Llama runs it."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

    llm, s = case.llm, case.num_tokens
    h, ffn, heads, d = llm.hidden_size, llm.intermediate_size, llm.num_attention_heads, llm.resolved_head_dim
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):  # (shape), N(0, 1) in dtype on the device
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    name = case.op_name
    if name in ("q_proj", "gate_proj", "down_proj"):
        in_f, out_f = {"q_proj": (h, h), "gate_proj": (h, ffn), "down_proj": (ffn, h)}[name]
        x, w = rand(1, s, in_f), rand(out_f, in_f) * in_f**-0.5
        return lambda: F.linear(x, w)
    if name == "fused_attention":
        q, k, v = rand(1, heads, s, d), rand(1, heads, s, d), rand(1, heads, s, d)  # (B, H, S, D)
        cos, sin = rand(1, s, d), rand(1, s, d)  # (B, S, D) rotary tables

        def attention():
            q_rot, k_rot = apply_rotary_pos_emb(q, k, cos, sin)
            return F.scaled_dot_product_attention(q_rot, k_rot, v, is_causal=True)

        return attention
    if name == "attn_norm":
        norm = LlamaRMSNorm(h).to(device=device, dtype=dtype)
        x = rand(1, s, h)
        return lambda: norm(x)
    if name == "mlp_act":
        gate, up = rand(1, s, ffn), rand(1, s, ffn)
        return lambda: F.silu(gate) * up
    if name == "attn_add":
        a, b = rand(1, s, h), rand(1, s, h)
        return lambda: a + b
    raise DeviceError(f"no kernel for operator {name!r}")


def calibration_steps(device_type: str, dtypes: Sequence[str]) -> int:
    """How many progress steps ``calibrate`` reports (an upper bound: skipped shapes
    count as done at the end)."""
    shapes = len(MATMUL_SHAPES[device_type]) * len(dtypes)
    vectors = len(VECTOR_SIZES[device_type]) * len([d for d in dtypes if d in DTYPES])
    suite = len(kernel_suite("gpu" if device_type == "cuda" else "cpu"))
    return shapes + vectors + 1 + suite


def calibrate(device: Device, dtypes: Sequence[str], name: str, warmup: int = 1,
              repeats: int = 5, progress: Progress | None = None,
              statistic: str = "median") -> CalibrationResult:
    """Measure ``device`` and return a calibrated profile (nothing is written).
    ``statistic`` ("median" or "min") reduces each measurement's repeats."""
    summarize([1.0], statistic)  # an unknown statistic fails before any measuring
    for dtype in dtypes:
        if dtype not in CALIBRATE_DTYPES:
            raise DeviceError(f"--dtype {dtype!r} is unknown; valid: {', '.join(CALIBRATE_DTYPES)}")
    suite_dtype = SUITE_DTYPE[device.type]
    with torch.inference_mode(), fixed_threads(device.num_threads):
        matmul: list[MatmulSample] = []
        vector: list[VectorSample] = []
        for dtype in dtypes:
            matmul += measure_matmuls(device, dtype, warmup, repeats, progress, statistic)
            if dtype in DTYPES:
                vector += measure_vector(device, dtype, warmup, repeats, progress, statistic)
        if not any(s.dtype == "float32" for s in vector):  # build_profile needs the FP32 rate
            vector += measure_vector(device, "float32", warmup, repeats, progress, statistic)
        copy_bytes, copy_time_s = measure_copy(device, warmup, repeats, statistic)
        if progress:
            progress("copy bandwidth")
        total_bytes, _ = memory_bytes(device)
        buffer_bytes, buffer_source = onchip_buffer(device)
        measurements = CeilingMeasurements(
            device_type=device.profile_device_type, device_name=device.name,
            matmul=tuple(matmul), vector=tuple(vector), copy_bytes=copy_bytes,
            copy_time_s=copy_time_s, memory_bytes=total_bytes, onchip_buffer_bytes=buffer_bytes,
            onchip_buffer_source=buffer_source,
            provenance=_provenance(device, dtypes, suite_dtype, warmup, repeats, statistic),
        )
        measurements = _with_shortfalls(measurements)
        profile = build_profile(measurements, name)
        cases = kernel_suite(device.profile_device_type)
        times = []
        for case in cases:
            fn = kernel_fn(case, DTYPES[suite_dtype], device.torch_device)
            approx = measure_s(fn, device.timer, 1, 1)
            times.append(_timed(device, fn, warmup, repeats, approx, statistic))
            if progress:
                progress(f"kernel {case.label}")
    bits = DTYPE_BITS[suite_dtype]
    quant = QuantPlan.uniform(bits)
    efficiencies = fit_kernel_efficiencies(cases, times, profile, quant)
    how = (f"measured: fitted over this class's share of {len(cases)} single-operator "
           f"{suite_dtype} kernels (Llama layer shapes; causal SDPA with rotary), relative "
           "least squares against the roofline on the measured ceilings")
    nominal = None
    peak = nominal_cpu_peak(device.num_threads) if device.type == "cpu" else None
    if peak is not None:
        nominal = nominal_profile(measurements, f"{name}-nominal", *peak)
    return CalibrationResult(calibrated(profile, efficiencies, how), measurements,
                             tuple(cases), tuple(times), nominal)


def _provenance(device: Device, dtypes, suite_dtype, warmup, repeats, statistic) -> dict[str, str]:
    return {
        "device": device.name,
        "device_kind": device.type,
        "torch": torch.__version__,
        "threads": str(device.num_threads),
        "clock": device.timer.name,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dtypes": ", ".join(dtypes),
        "efficiency_dtype": suite_dtype,
        "statistic": f"{statistic} of {repeats} after {warmup} warm-up",
        "tool": "fpcost calibrate",
    }


def _with_shortfalls(measured: CeilingMeasurements) -> CeilingMeasurements:
    from dataclasses import replace

    return replace(measured, provenance={**measured.provenance, **shortfall_notes(measured)})

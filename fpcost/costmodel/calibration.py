"""Calibration arithmetic: measured kernel times in, a calibrated ``HardwareProfile`` out.

``fpcost calibrate`` (the torch side lives in ``fpcost.pruner.calibrate``) measures

1. ceilings: matrix-multiply throughput per dtype over a ladder of shapes (the peak is the
   best shape; small and skinny shapes show where they fall short), the bandwidth of a large
   copy, and the throughput of a cache-resident element-wise kernel;
2. the fixed time of one kernel launch (tiny calls of the same modules);
3. one module of a decoder layer at a time, as transformers' Llama runs them, each
   predicted by the kernels the runtime launches for it (kernel_fit.py: the suite and the
   per-class efficiency fit).

Per operator class the efficiency is the factor that brings the predicted busy times of
that class's modules (measured time less their launches) closest to the measured ones in
relative terms (``fit_efficiency``). All
numbers are SI (seconds, FLOP/s, bytes/s); nothing here touches torch or files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .errors import HardwareError
from .hardware import HardwareProfile
from .ops import matmul_flops

# dtype name -> the profile ceiling its matmul rate fills.
MATMUL_DTYPES = ("float32", "bfloat16", "float16", "int8")
HALF_DTYPES = ("bfloat16", "float16")
VECTOR_DTYPES = ("float32", "bfloat16", "float16")
COPY_TRAFFIC_FACTOR = 2  # a copy reads and writes every byte
ELEMENTWISE_OPERANDS = 4  # addcmul: out = a + b·c reads three tensors, writes one
FP32_BYTES = 4


@dataclass(frozen=True)
class MatmulSample:
    """One timed (m × k) @ (k × n) product in ``dtype``."""

    dtype: str
    m: int
    k: int
    n: int
    time_s: float

    @property
    def flops(self) -> float:
        return float(matmul_flops(self.m, self.k, self.n))

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.time_s

    @property
    def shape(self) -> str:
        return f"{self.m}x{self.k}x{self.n}"


@dataclass(frozen=True)
class VectorSample:
    """One timed element-wise kernel over ``num_elements`` elements."""

    dtype: str
    num_elements: int
    flops_per_element: int
    time_s: float

    @property
    def flops_per_s(self) -> float:
        return self.num_elements * self.flops_per_element / self.time_s


@dataclass(frozen=True)
class CeilingMeasurements:
    """Everything ``fpcost calibrate`` measured about a device's ceilings, plus where."""

    device_type: str  # "cpu" or "gpu"
    device_name: str
    matmul: tuple[MatmulSample, ...]
    vector: tuple[VectorSample, ...]
    copy_bytes: float  # size of the copied tensor
    copy_time_s: float
    memory_bytes: float
    onchip_buffer_bytes: float
    onchip_buffer_source: str
    provenance: dict[str, str] = field(default_factory=dict)
    cache_bytes: float | None = None  # CPU: the last-level cache (sysfs)
    cache_source: str = ""

    @property
    def copy_bandwidth_bytes_per_s(self) -> float:
        """Bytes moved (read + written) per second by the large copy."""
        return COPY_TRAFFIC_FACTOR * self.copy_bytes / self.copy_time_s


def peak_sample(samples: Sequence, dtypes: Sequence[str]):
    """The fastest sample (highest FLOP/s) among those of ``dtypes``, or None."""
    chosen = [s for s in samples if s.dtype in dtypes]
    return max(chosen, key=lambda s: s.flops_per_s, default=None)


def build_profile(measured: CeilingMeasurements, name: str, description: str = "") -> HardwareProfile:
    """An uncalibrated (efficiency-free) profile whose ceilings are the measured ones.

    CPU: ``tensor.fp32`` is the FP32 GEMM peak and ``vector.*`` the element-wise rates.
    GPU: the FP32 GEMM runs on the CUDA cores (TF32 off), so its rate is the vector FP32
    ceiling. A dtype that was not measured takes the FP32 rate, and its source says so.
    """
    fp32 = peak_sample(measured.matmul, ("float32",))
    half = peak_sample(measured.matmul, HALF_DTYPES)
    int8 = peak_sample(measured.matmul, ("int8",))
    vec32 = peak_sample(measured.vector, ("float32",))
    vec16 = peak_sample(measured.vector, HALF_DTYPES)
    where = f"on {measured.device_name}"
    if fp32 is None and half is None:
        raise HardwareError("calibration measured no float32 or half-precision matmul; "
                            "nothing to build a profile from")
    base = fp32 or half
    sources: dict[str, str] = {}

    def matmul_source(sample, fallback_note: str) -> str:
        if sample is None:
            return f"not measured ({fallback_note}): the {base.dtype} GEMM rate {where} is recorded"
        return (f"measured: best {sample.dtype} GEMM rate over the shape ladder (statistic in [provenance]), "
                f"{sample.shape} {where}")

    tensor_fp16 = (half or base).flops_per_s
    sources["tensor_fp16_flops_per_s"] = matmul_source(half, "no float16/bfloat16 in --dtype")
    tensor_int8 = (int8 or base).flops_per_s
    sources["tensor_int8_ops_per_s"] = matmul_source(
        int8, "int8 not requested or torch._int_mm unsupported on this device")
    vector_fp32 = vec32.flops_per_s if vec32 else None
    tensor_fp32 = None
    if measured.device_type == "cpu":
        tensor_fp32 = base.flops_per_s
        sources["tensor_fp32_flops_per_s"] = matmul_source(fp32, "no float32 in --dtype")
        if vec32 is None:
            raise HardwareError("calibration measured no float32 element-wise kernel")
        sources["vector_fp32_flops_per_s"] = (
            f"measured: best float32 addcmul (2 FLOP/element), "
            f"{vec32.num_elements} elements {where}")
    else:
        vector_fp32 = base.flops_per_s if fp32 else (vector_fp32 or base.flops_per_s)
        sources["vector_fp32_flops_per_s"] = (
            f"measured: float32 GEMM on the CUDA cores (TF32 off), {base.shape} {where}"
            if fp32 else f"not measured: no float32 in --dtype; the {base.dtype} rate is recorded")
    if vec16 is not None:
        vector_fp16 = vec16.flops_per_s
        sources["vector_fp16_flops_per_s"] = (
            f"measured: best {vec16.dtype} addcmul (2 FLOP/element), "
            f"{vec16.num_elements} elements {where}")
    else:
        vector_fp16 = vector_fp32
        sources["vector_fp16_flops_per_s"] = ("not measured (no float16/bfloat16 in --dtype): "
                                             "the float32 element-wise rate is recorded")
    cache_bandwidth = None
    if measured.device_type == "cpu":
        # addcmul reads three operands and writes one: bytes moved at the best (cache-resident) size
        cache_bandwidth = vec32.flops_per_s / vec32.flops_per_element * ELEMENTWISE_OPERANDS * 4
        sources["cache_bandwidth_bytes_per_s"] = (
            f"measured: bytes moved by the best float32 addcmul (3 reads + 1 write per element), "
            f"{vec32.num_elements} elements {where}")
        if measured.cache_bytes is not None:
            sources["cache_bytes"] = measured.cache_source
    sources["hbm_bandwidth_bytes_per_s"] = (
        f"measured: copy of {measured.copy_bytes:.4g} B, counted as read + write, {where}")
    sources["memory_bytes"] = f"measured: total device memory {where}"
    sources["onchip_buffer_bytes"] = measured.onchip_buffer_source
    return HardwareProfile(
        name=name,
        description=description or f"calibrated {measured.device_name}",
        device_type=measured.device_type,
        memory_bytes=measured.memory_bytes,
        hbm_bandwidth_bytes_per_s=measured.copy_bandwidth_bytes_per_s,
        onchip_buffer_bytes=measured.onchip_buffer_bytes,
        tensor_fp16_flops_per_s=tensor_fp16,
        tensor_int8_ops_per_s=tensor_int8,
        vector_fp16_flops_per_s=vector_fp16,
        vector_fp32_flops_per_s=vector_fp32,
        tensor_fp32_flops_per_s=tensor_fp32,
        cache_bandwidth_bytes_per_s=cache_bandwidth,
        cache_bytes=measured.cache_bytes if cache_bandwidth else None,
        sources=sources,
        provenance=dict(measured.provenance),
    )


def gemm_ceiling_without_weights(profile: HardwareProfile, measured: CeilingMeasurements,
                                 weight_rate: float) -> HardwareProfile:
    """``profile`` (a CPU's) with its FP32 GEMM ceiling recomputed without the time its peak
    shape spent reading its k × n weights at ``weight_rate``: the compute rate that the
    runtime profiles combine with that weight stream (``kernel_split_s``). Unchanged when
    there is no FP32 sample, or the weight read would take half the call or more (then the
    rate cannot be trusted)."""
    peak = peak_sample(measured.matmul, ("float32",))
    if profile.device_type != "cpu" or peak is None:
        return profile
    weight_s = peak.k * peak.n * FP32_BYTES / weight_rate
    if weight_s >= peak.time_s / 2:
        return profile
    rate = peak.flops / (peak.time_s - weight_s)
    key = "tensor_fp32_flops_per_s"
    sources = {**profile.sources, key: profile.sources.get(key, "measured") + (
        f"; less its {peak.k}x{peak.n} fp32 weight read at the fitted weight bandwidth "
        f"({1e3 * weight_s:.3g} ms of {1e3 * peak.time_s:.3g} ms): the compute rate")}
    return replace(profile, tensor_fp32_flops_per_s=rate, sources=sources)


def shortfall_notes(measured: CeilingMeasurements) -> dict[str, str]:
    """Provenance lines recording each matmul shape's rate as a fraction of its dtype's
    peak: where small and skinny products fall short."""
    notes = {}
    for sample in measured.matmul:
        peak = peak_sample(measured.matmul, (sample.dtype,))
        notes[f"matmul.{sample.dtype}.{sample.shape}"] = (
            f"{sample.flops_per_s:.4g} FLOP/s = {sample.flops_per_s / peak.flops_per_s:.2f} of peak")
    for sample in measured.vector:
        notes[f"vector.{sample.dtype}.{sample.num_elements}"] = f"{sample.flops_per_s:.4g} FLOP/s"
    return notes


def calibrated(profile: HardwareProfile, efficiencies: dict[str, float], how: str,
               launch_s: float | None = None, launch_how: str = "",
               weight_rate: float | None = None, weight_how: str = "",
               sdpa_call_s: float | None = None, sdpa_how: str = "") -> HardwareProfile:
    """``profile`` with ``efficiencies`` (and the per-kernel ``launch_s``, the GEMM weight
    bandwidth ``weight_rate``) applied; each efficiency's source says ``how``, the launch
    time's ``launch_how``, the weight bandwidth's ``weight_how``."""
    sources = dict(profile.sources)
    for op_class in efficiencies:
        sources[f"efficiency.{op_class}"] = how
    if launch_s is not None:
        sources["kernel_launch_s"] = launch_how or "measured"
    if weight_rate is not None:
        sources["weight_bandwidth_bytes_per_s"] = weight_how or "measured"
    if sdpa_call_s is not None:
        sources["sdpa_call_s"] = sdpa_how or "measured"
    return replace(profile, efficiency=dict(efficiencies), sources=sources,
                   kernel_launch_s=launch_s if launch_s is not None else profile.kernel_launch_s,
                   weight_bandwidth_bytes_per_s=(weight_rate if weight_rate is not None
                                                 else profile.weight_bandwidth_bytes_per_s),
                   sdpa_call_s=sdpa_call_s if sdpa_call_s is not None else profile.sdpa_call_s)


def nominal_profile(measured: CeilingMeasurements, name: str, peak_flops_per_s: float,
                    peak_source: str) -> HardwareProfile:
    """A datasheet-style profile: every compute ceiling at the nominal peak
    ``peak_flops_per_s`` (for a CPU: cores × clock × SIMD FLOP per cycle, the figure a spec
    sheet gives), efficiency 1. Bandwidth and memory have no such figure here and keep the
    measured values; their sources say so. The "before" of a calibration."""
    measured_profile = build_profile(measured, name)
    sources = {key: f"nominal: {peak_source}" for key in (
        "tensor_fp16_flops_per_s", "tensor_int8_ops_per_s", "vector_fp16_flops_per_s",
        "vector_fp32_flops_per_s")}
    if measured.device_type == "cpu":
        sources["tensor_fp32_flops_per_s"] = f"nominal: {peak_source}"
    for key in ("hbm_bandwidth_bytes_per_s", "memory_bytes", "onchip_buffer_bytes"):
        sources[key] = measured_profile.sources[key] + " (no nominal figure: measured)"
    return replace(
        measured_profile, cache_bandwidth_bytes_per_s=None, cache_bytes=None,
        description=f"nominal (datasheet-style) peaks of {measured.device_name}",
        tensor_fp16_flops_per_s=peak_flops_per_s, tensor_int8_ops_per_s=peak_flops_per_s,
        vector_fp16_flops_per_s=peak_flops_per_s, vector_fp32_flops_per_s=peak_flops_per_s,
        tensor_fp32_flops_per_s=peak_flops_per_s if measured.device_type == "cpu" else None,
        sources=sources,
    )

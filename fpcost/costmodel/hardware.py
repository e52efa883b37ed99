"""The hardware a workload runs on: memory system and compute ceilings, in SI units.

A profile is data (see ``fpcost/hardware_profiles/data/*.toml``); this module only defines
its shape and the rule that picks a ceiling for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import HardwareError

# Operator classes that a calibrated profile may carry an efficiency for (issue: calibrate).
OPERATOR_CLASSES = ("matmul", "attention", "vector", "norm")

# Every rate and size of a profile, in SI units (bytes, bytes/s, FLOP/s), lies in this range:
# below 1 or above 1e24 is a unit mix-up, and would turn roofline times into subnormal noise,
# zero or inf. Profile files are checked against tighter per-key ranges when read.
SI_RANGE = (1.0, 1e24)
LAUNCH_RANGE_S = (1e-9, 1.0)  # a kernel launch or dispatch: 1 ns..1 s
# Efficiency factors: fractions of a ceiling (above 1 only when a ceiling was set too low).
EFFICIENCY_RANGE = (1e-6, 1e3)

# "cpu" profiles are written by calibration: tensor_* then means the measured matrix rate,
# vector_* the measured element-wise rate.
DEVICE_TYPES = ("gpu", "cpu")
# The link between the GPUs of one server that tensor- and pipeline-parallel traffic takes
# (parallel.py); "none": the device is not linked to others (parallelism is refused).
INTERCONNECT_KINDS = ("nvlink3", "nvlink4", "pcie4", "pcie5", "none")


@dataclass(frozen=True)
class HardwareProfile:
    """Dense peak rates and memory of one device.

    Rates are dense (never the 2x "with sparsity" datasheet figures). ``tensor_*`` rates are
    matrix-unit rates; ``vector_*`` are the CUDA-core (non-tensor) rates at which element-wise
    operators run. A missing optional peak is ``None``.
    """

    name: str
    description: str
    memory_bytes: float
    hbm_bandwidth_bytes_per_s: float
    onchip_buffer_bytes: float
    tensor_fp16_flops_per_s: float
    tensor_int8_ops_per_s: float
    vector_fp16_flops_per_s: float
    vector_fp32_flops_per_s: float
    tensor_int4_ops_per_s: float | None = None
    tensor_fp8_flops_per_s: float | None = None
    tensor_tf32_flops_per_s: float | None = None
    # FP32 matrix rate where FP32 matmuls do not run on the vector units: measured GEMM
    # throughput of a calibrated CPU profile. GPUs leave it unset (see peak_flops_per_s).
    tensor_fp32_flops_per_s: float | None = None
    device_type: str = "gpu"
    # Fraction of each ceiling actually reached, per operator class (1.0 = datasheet).
    efficiency: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    # Where a calibrated profile was measured (device, torch version, threads, date); free-form.
    provenance: dict[str, str] = field(default_factory=dict)
    # Fixed time of one kernel launch / dispatch, measured by ``fpcost calibrate`` and used
    # by the runtime execution profiles (runtime.py); None: not measured (no launch term).
    kernel_launch_s: float | None = None
    # Bandwidth of element-wise kernels on cache-resident activations (calibrated CPUs: the
    # bytes the best element-wise kernel moves per second); None: activations at the memory
    # bandwidth. Used by the runtime execution profiles only.
    cache_bandwidth_bytes_per_s: float | None = None
    cache_bytes: float | None = None  # capacity behind that bandwidth (a CPU's last-level cache)
    # Rate at which a CPU GEMM reads and packs its weight panels before computing on them
    # (calibrated CPUs: fitted on cold nn.Linear calls, no efficiency applied); None: the
    # weights at the memory bandwidth. Used by the runtime execution profiles only.
    weight_bandwidth_bytes_per_s: float | None = None
    # Fixed time of one SDPA call beyond its kernel launch (calibrated CPUs: transformers'
    # sdpa_attention_forward and the CPU flash kernel's per-call setup, fitted with the
    # attention efficiency); None: no such term. Used by the runtime execution profiles only.
    sdpa_call_s: float | None = None
    # The GPU-to-GPU link (``INTERCONNECT_KINDS``), its bandwidth per direction per GPU and
    # the fixed latency of one transfer step (one hop of a ring collective, or one send);
    # None: not given (tensor / pipeline parallelism is then refused on this profile).
    interconnect_kind: str | None = None
    interconnect_bandwidth_bytes_per_s: float | None = None
    interconnect_latency_s: float | None = None

    def __post_init__(self) -> None:
        if self.device_type not in DEVICE_TYPES:
            raise HardwareError(
                f"profile {self.name!r}: device_type {self.device_type!r} is unknown; "
                f"valid: {', '.join(DEVICE_TYPES)}"
            )
        for name in (
            "memory_bytes",
            "hbm_bandwidth_bytes_per_s",
            "onchip_buffer_bytes",
            "tensor_fp16_flops_per_s",
            "tensor_int8_ops_per_s",
            "vector_fp16_flops_per_s",
            "vector_fp32_flops_per_s",
        ):
            _check_positive(self.name, name, getattr(self, name))
        for name in ("tensor_int4_ops_per_s", "tensor_fp8_flops_per_s", "tensor_tf32_flops_per_s",
                     "tensor_fp32_flops_per_s", "cache_bandwidth_bytes_per_s", "cache_bytes",
                     "weight_bandwidth_bytes_per_s", "interconnect_bandwidth_bytes_per_s"):
            value = getattr(self, name)
            if value is not None:
                _check_positive(self.name, name, value)
        if self.interconnect_kind is not None and self.interconnect_kind not in INTERCONNECT_KINDS:
            raise HardwareError(
                f"profile {self.name!r}: interconnect kind {self.interconnect_kind!r} is unknown; "
                f"valid: {', '.join(INTERCONNECT_KINDS)}"
            )
        for name in ("kernel_launch_s", "sdpa_call_s", "interconnect_latency_s"):
            if getattr(self, name) is not None:
                _check_positive(self.name, name, getattr(self, name), LAUNCH_RANGE_S)
        for op_class, factor in self.efficiency.items():
            if op_class not in OPERATOR_CLASSES:
                raise HardwareError(
                    f"profile {self.name!r}: efficiency class {op_class!r} is unknown; "
                    f"valid: {', '.join(OPERATOR_CLASSES)}"
                )
            low, high = EFFICIENCY_RANGE
            if isinstance(factor, bool) or not (isinstance(factor, (int, float))
                                                and low <= factor <= high):
                raise HardwareError(
                    f"profile {self.name!r}: efficiency[{op_class!r}] = {factor!r} must be a "
                    f"number in [{low:g}, {high:g}]"
                )

    def peak_flops_per_s(self, unit: str, precision: str) -> float:
        """Ceiling for an operator that runs on ``unit`` ("tensor" or "vector") at
        ``precision`` ("fp32", "fp16", "int8", "int4").

        Fallbacks follow what the kernels do: INT4 without an INT4 tensor peak (Hopper) runs
        at the INT8 rate; FP32 matmuls run on the CUDA cores because PyTorch leaves TF32 off
        by default (unless the profile gives a measured FP32 matrix rate, as CPU ones do);
        INT8/INT4 element-wise work runs in FP16 after dequantization.
        """
        if unit == "tensor":
            if precision == "fp16":
                return self.tensor_fp16_flops_per_s
            if precision == "int8":
                return self.tensor_int8_ops_per_s
            if precision == "int4":
                if self.tensor_int4_ops_per_s is not None:
                    return self.tensor_int4_ops_per_s
                return self.tensor_int8_ops_per_s
            if precision == "fp32":
                if self.tensor_fp32_flops_per_s is not None:
                    return self.tensor_fp32_flops_per_s
                return self.vector_fp32_flops_per_s
        elif unit == "vector":
            if precision == "fp32":
                return self.vector_fp32_flops_per_s
            if precision in ("fp16", "int8", "int4"):
                return self.vector_fp16_flops_per_s
        raise HardwareError(
            f"no ceiling for unit {unit!r} at precision {precision!r}; units: tensor, vector; "
            "precisions: fp32, fp16, int8, int4"
        )

    def efficiency_for(self, op_class: str) -> float:
        """Calibrated fraction of the ceilings reached by ``op_class`` (1.0 if uncalibrated)."""
        return self.efficiency.get(op_class, 1.0)

    @property
    def weight_stream_s_per_byte(self) -> float:
        """Seconds per weight byte streamed apart from compute and the other traffic: on a
        calibrated CPU (``weight_bandwidth_bytes_per_s`` set) 1 / that rate, since a CPU GEMM
        reads and packs its weights before computing and ``fpcost calibrate`` fits the rate
        with the matmul efficiency as time = roofline / efficiency + weight bytes / rate (no
        efficiency on the stream); else 0: weights are memory traffic like any other byte."""
        rate = self.weight_bandwidth_bytes_per_s
        return 1.0 / rate if rate else 0.0


def _check_positive(profile: str, field_name: str, value: object,
                    bounds: tuple[float, float] = SI_RANGE) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HardwareError(f"profile {profile!r}: {field_name} = {value!r} must be a number")
    low, high = bounds
    if not low <= value <= high:  # NaN fails too
        raise HardwareError(
            f"profile {profile!r}: {field_name} = {value!r} must be a number in [{low:g}, {high:g}]"
        )

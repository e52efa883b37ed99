"""The roofline: an operator takes as long as the slower of its compute and its memory
traffic, each at the device's ceiling (scaled by a calibrated efficiency, if any).

Plain arithmetic only, so the same function times one operator (floats) or a whole sweep
(numpy arrays), and the estimate path never imports numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

from .hardware import HardwareProfile
from .ops import Op


@dataclass(frozen=True)
class OpTiming:
    """Roofline times of one instance of an operator, in seconds."""

    compute_time_s: float
    memory_time_s: float


def time_op(op: Op, hardware: HardwareProfile) -> OpTiming:
    """Compute time (tensor FLOPs at the tensor peak for the operator's precision plus
    vector FLOPs at the CUDA-core rate) and memory time (all bytes at the memory bandwidth)
    of one instance of ``op``. The operator's time is the larger of the two.

    A calibrated CPU profile (``weight_bandwidth_bytes_per_s`` set) reads the weights at
    that rate instead, the one ``fpcost calibrate`` fitted for a GEMM reading its cold
    weights (no efficiency applies to it, as in ``runtime.kernel_time_s``): a one-thread
    GEMV streams them at about that rate (measured here: a 6-layer x 768 LLM's 42 linears
    on one token, 151 MB, 12-14 GB/s, against 38 GB/s for a copy counted read + write), so
    at the copy bandwidth a CPU decode step came out 2.5x fast."""
    efficiency = hardware.efficiency_for(op.op_class)
    compute_time_s = (
        op.tensor_flops / hardware.peak_flops_per_s("tensor", op.precision)
        + op.vector_flops / hardware.peak_flops_per_s("vector", op.vector_precision)
    )
    other_bytes = op.memory_access_bytes - op.weight_bytes
    memory_time_s = (other_bytes / hardware.hbm_bandwidth_bytes_per_s / efficiency
                     + op.weight_bytes * hardware.weight_read_s_per_byte(op.op_class))
    return OpTiming(compute_time_s / efficiency, memory_time_s)

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
    of one instance of ``op``. The operator's time is the larger of the two."""
    efficiency = hardware.efficiency_for(op.op_class)
    compute_time_s = (
        op.tensor_flops / hardware.peak_flops_per_s("tensor", op.precision)
        + op.vector_flops / hardware.peak_flops_per_s("vector", op.vector_precision)
    )
    memory_time_s = op.memory_access_bytes / hardware.hbm_bandwidth_bytes_per_s
    return OpTiming(compute_time_s / efficiency, memory_time_s / efficiency)

"""The roofline: an operator takes as long as the slower of its compute and its memory
traffic, each at the device's ceiling (scaled by a calibrated efficiency, if any)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hardware import HardwareProfile
from .ops import Op


@dataclass(frozen=True)
class OpTiming:
    """Roofline times of one instance of an operator, in seconds."""

    compute_time_s: float
    memory_time_s: float

    @property
    def time_s(self):
        return np.maximum(self.compute_time_s, self.memory_time_s)

    @property
    def bound(self):
        """"compute" when compute time ≥ memory time, else "memory" (LLM-Viewer's rule)."""
        return np.where(self.compute_time_s >= self.memory_time_s, "compute", "memory")


def time_op(op: Op, hardware: HardwareProfile) -> OpTiming:
    """Compute time (tensor FLOPs at the tensor peak plus vector FLOPs at the CUDA-core
    rate) and memory time (all bytes at the memory bandwidth) of one instance of ``op``."""
    efficiency = hardware.efficiency_for(op.op_class)
    compute_time_s = 0.0
    if _nonzero(op.tensor_flops):
        compute_time_s = op.tensor_flops / hardware.peak_flops_per_s("tensor", op.precision)
    if _nonzero(op.vector_flops):
        compute_time_s = compute_time_s + op.vector_flops / hardware.peak_flops_per_s(
            "vector", op.vector_precision
        )
    memory_time_s = op.memory_access_bytes / hardware.hbm_bandwidth_bytes_per_s
    return OpTiming(compute_time_s / efficiency, memory_time_s / efficiency)


def _nonzero(value) -> bool:
    return bool(np.any(value != 0))

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

    A calibrated CPU profile (``weight_bandwidth_bytes_per_s`` set) streams the weights
    apart, at that rate, with no efficiency, and the stream is in both times, so the
    operator takes max(compute, other traffic) + the stream: the model ``fpcost calibrate``
    fitted the rate and the matmul efficiency with (``runtime.kernel_time_s``). Measured
    here: a one-thread decode step reads its weights at about that rate, not at the copy
    bandwidth (a 6-layer x 768 LLM's 42 linears on one token, 151 MB, at 12-17 GB/s against
    a 38 GB/s copy: at the copy bandwidth decode came out 2.5x fast), and a 74-token prefill
    of that LLM took its FLOPs at the GEMM peak plus about that read (66 ms bare; 54 ms
    predicted without the stream)."""
    efficiency = hardware.efficiency_for(op.op_class)
    compute_time_s = (
        op.tensor_flops / hardware.peak_flops_per_s("tensor", op.precision)
        + op.vector_flops / hardware.peak_flops_per_s("vector", op.vector_precision)
    )
    stream_s_per_byte = hardware.weight_stream_s_per_byte  # 0 unless a calibrated CPU
    streamed_bytes = op.weight_bytes * (stream_s_per_byte > 0)  # 0 bytes: GPU times unchanged
    stream_s = op.weight_bytes * stream_s_per_byte
    memory_time_s = (op.memory_access_bytes - streamed_bytes) / hardware.hbm_bandwidth_bytes_per_s
    return OpTiming(compute_time_s / efficiency + stream_s, memory_time_s / efficiency + stream_s)

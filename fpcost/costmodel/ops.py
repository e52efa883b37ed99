"""Operator records: what one operator of one layer reads, writes and computes.

A FLOP is two per multiply-add; ``matmul_flops`` is the one place that says so.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOPS_PER_MULTIPLY_ADD = 2

# Operator classes, used by calibration (efficiency per class) and in breakdowns.
MATMUL = "matmul"  # linear layers: weights × activations
ATTENTION = "attention"  # q·kᵀ and scores·v (and the fused FlashAttention kernel)
VECTOR = "vector"  # element-wise: softmax, activation, residual add
NORM = "norm"  # RMSNorm / LayerNorm


def matmul_flops(m, k, n):
    """FLOPs of an (m × k) @ (k × n) product: 2 per multiply-add. Works on numpy arrays."""
    return FLOPS_PER_MULTIPLY_ADD * m * k * n


@dataclass(frozen=True)
class Op:
    """One operator of one layer (``count`` identical instances, e.g. one per layer).

    Compute is split by the unit it runs on: ``tensor_flops`` at the tensor peak for
    ``precision``, ``vector_flops`` at the CUDA-core rate for ``vector_precision``.
    Byte terms are per instance; the five of them add up to the memory access.
    Values are floats, or numpy arrays of one shape when a sweep builds many at once.
    """

    stage: str
    block: str
    name: str
    op_class: str
    precision: str
    vector_precision: str
    count: int
    tensor_flops: float = 0.0
    vector_flops: float = 0.0
    weight_bytes: float = 0.0
    act_read_bytes: float = 0.0
    act_write_bytes: float = 0.0
    kv_read_bytes: float = 0.0
    kv_write_bytes: float = 0.0

    @property
    def flops(self):
        return self.tensor_flops + self.vector_flops

    @property
    def memory_access_bytes(self):
        """All bytes read and written: weights, activations in and out, KV cache in and out."""
        return (
            self.weight_bytes
            + self.act_read_bytes
            + self.act_write_bytes
            + self.kv_read_bytes
            + self.kv_write_bytes
        )


# Every per-instance FLOP and byte count must be an integer float64 holds exactly (and, far
# below int64's 2**63, one the vectorised sweep's int64 arithmetic cannot overflow).
EXACT_LIMIT = 2**53
NUMERIC_FIELDS = ("tensor_flops", "vector_flops", "weight_bytes", "act_read_bytes",
                  "act_write_bytes", "kv_read_bytes", "kv_write_bytes")


def check_exact(ops, what: str = "the workload") -> None:
    """Refuse (``WorkloadError``) operators whose FLOP or byte count per instance is negative,
    not finite, or above ``EXACT_LIMIT`` (values may be numbers or numpy arrays)."""
    from .errors import WorkloadError

    for op in ops:
        for name in NUMERIC_FIELDS:
            value = getattr(op, name)
            if hasattr(value, "max"):  # an array: its extremes
                low, high = value.min(), value.max()
            else:
                low = high = value
            if not (0 <= low and high <= EXACT_LIMIT):  # also false for NaN
                raise WorkloadError(
                    f"{what} is too large to count exactly: {op.stage} {op.name} {name} per "
                    f"layer would be {float(high):.3g}, above 2**53 ≈ 9.0e15 (what float64 holds "
                    "exactly); use fewer tokens or a smaller batch"
                )

"""Accounting modes: which counting conventions an estimate follows.

``llm-viewer`` reproduces LLM-Viewer (2024), the tool behind the paper's Table 3, quirks
included (docs/accounting.md). ``fpcost`` (the default) corrects each quirk. Every correction is
its own flag, so ``docs/accounting.md`` can show what each one moves.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from .errors import WorkloadError


@dataclass(frozen=True)
class Accounting:
    """Counting conventions. Each flag is True in ``fpcost`` and False in ``llm-viewer``."""

    name: str
    # Prefill q·kᵀ loads Q sized with the query heads (LLM-Viewer: the KV heads, wrong under GQA).
    q_load_query_heads: bool
    # q/k/v/o widths from head_dim (LLM-Viewer: hidden_size × kv_heads / heads).
    projections_from_head_dim: bool
    # The SwiGLU activation spans intermediate_size (LLM-Viewer: hidden_size).
    swiglu_ffn_width: bool
    # A residual add reads both of its inputs (LLM-Viewer: one).
    residual_reads_both: bool
    # LM head at 2 FLOPs per multiply-add, activations scaled by batch (LLM-Viewer: 1, unbatched).
    lm_head_full: bool
    # Element-wise operators run at the CUDA-core rate (LLM-Viewer: the tensor peak).
    vector_ops_on_cuda_cores: bool
    # Each matmul at the peak of its own precision, INT4 included (LLM-Viewer: INT8 peak if
    # all widths ≤ 8 bits, else FP16).
    precision_per_operator: bool
    # FlashAttention writes its output once, sized s×d (LLM-Viewer: twice, sized s×s).
    flash_output_s_by_d: bool
    # FlashAttention skips the K/V tiles above the causal diagonal, as its kernels do
    # (LLM-Viewer: every tile, the full s×s). Unfused attention never skips (scores materialized).
    flash_causal_tiles: bool

    @property
    def corrections(self) -> tuple[str, ...]:
        """Names of the correction flags, in declaration order."""
        return tuple(f.name for f in fields(self) if f.name != "name")

    def with_flag(self, flag: str, value: bool) -> Accounting:
        if flag not in self.corrections:
            raise WorkloadError(f"unknown accounting flag {flag!r}; valid: {', '.join(self.corrections)}")
        return replace(self, name=f"{self.name}+{flag}={value}", **{flag: value})


NUM_FLAGS = 9
FPCOST = Accounting("fpcost", *([True] * NUM_FLAGS))
LLM_VIEWER = Accounting("llm-viewer", *([False] * NUM_FLAGS))

ACCOUNTING_MODES = {mode.name: mode for mode in (FPCOST, LLM_VIEWER)}


def get_accounting(name: str) -> Accounting:
    try:
        return ACCOUNTING_MODES[name]
    except KeyError:
        raise WorkloadError(
            f"accounting mode {name!r} is unknown; valid: {', '.join(ACCOUNTING_MODES)}"
        ) from None

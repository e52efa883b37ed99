"""Invariants of the Qwen-VL tower operators over random batches of images and videos."""

import math
from dataclasses import fields

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies_qwen import qwen_grid, qwen_grids

from fpcost.costmodel.families.qwen_vl_ops import qwen_vision_tower_ops
from fpcost.costmodel.families.qwen_vl_presets import qwen_vl_preset
from fpcost.costmodel.ops import ATTENTION, Op
from fpcost.costmodel.quant import QuantPlan

QUANT = QuantPlan()
A6000_BUFFER_BYTES = 21504e3  # on-chip buffer LLM-Viewer uses for the A6000
TERMS = [f.name for f in fields(Op) if f.name.endswith(("_flops", "_bytes"))]
presets = st.sampled_from(["qwen2-vl-7b", "qwen2.5-vl-7b"])


def _totals(ops):
    return {term: sum(op.count * getattr(op, term) for op in ops) for term in TERMS}


@settings(max_examples=40, deadline=None)
@given(name=presets, grids=qwen_grids, flash=st.booleans())
def test_terms_are_finite_non_negative_and_packing_is_additive(name, grids, flash):
    """Every term is finite and ≥ 0; the packed batch costs exactly the sum of its images
    (attention never crosses an image, every other operator is per token), weights aside."""
    vision = qwen_vl_preset(name).vision
    packed = qwen_vision_tower_ops(vision, QUANT, grids, flash, A6000_BUFFER_BYTES)
    for op in packed:
        for term in TERMS:
            value = getattr(op, term)
            assert math.isfinite(value) and value >= 0, (op.name, term, value)
    alone = [_totals(qwen_vision_tower_ops(vision, QUANT, [g], flash, A6000_BUFFER_BYTES))
             for g in grids]
    for term, value in _totals(packed).items():
        if term == "weight_bytes":  # weights are read once per pass, however many images
            assert all(t[term] == value for t in alone)
        else:
            assert value == sum(t[term] for t in alone), term


@settings(max_examples=30, deadline=None)
@given(name=presets, grid=qwen_grid)
def test_flash_computes_the_same_matmuls(name, grid):
    """The fused kernel computes every score (no causal mask in the tower): its tensor FLOPs
    equal q·kᵀ plus scores·v of the unfused operators."""
    vision = qwen_vl_preset(name).vision

    def attention_flops(flash):
        ops = qwen_vision_tower_ops(vision, QUANT, [grid], flash, A6000_BUFFER_BYTES)
        return sum(op.count * op.tensor_flops for op in ops if op.op_class == ATTENTION)

    assert attention_flops(True) == attention_flops(False)


@settings(max_examples=30, deadline=None)
@given(grids=qwen_grids)
def test_windows_never_cost_more_than_full_attention(grids):
    vision = qwen_vl_preset("qwen2.5-vl-7b").vision
    ops = qwen_vision_tower_ops(vision, QUANT, grids, False, 0)
    per_block = {(op.block, op.name): op.tensor_flops for op in ops}
    assert per_block[("window_blocks", "qk_matmul")] <= per_block[("full_blocks", "qk_matmul")]
    assert per_block[("window_blocks", "qkv")] == per_block[("full_blocks", "qkv")]

"""Operators of the Qwen2-VL / Qwen2.5-VL vision tower and patch merger.

Conventions are vision.py's (its ``_Builder``): linear layers on the tensor cores with the
bias add (one FLOP per output element) in the epilogue, element-wise work on the CUDA cores,
five byte terms, 16-bit unless ``quant`` says otherwise. The tower runs every image and video
of the batch at once, as transformers does: ``grids`` lists their patch grids (layout module),
and all token rows are packed into one sequence of Σ t·h·w patches.

- ``embeddings``: ``patch_embed``, the bias-free Conv3d (kernel = stride = 2 × 14 × 14) as a
  matmul (patches × 1176) @ (1176 × width); ``rotary``-embedding tables are not costed (a few
  sin/cos per position, shared by all blocks);
- Qwen2.5-VL only: ``window_permute``, the gather into window order before the blocks, and
  ``window_unpermute`` of the merged tokens after the merger (bytes only);
- per block (``count`` = blocks of that kind; Qwen2.5-VL's full- and window-attention blocks
  are two groups, ``full_blocks`` and ``window_blocks``): ``norm1`` (LayerNorm / RMSNorm),
  ``qkv`` (width → 3·width, bias), ``rotary`` (2-D RoPE on q and k: q·cos + rotate_half(q)·sin),
  attention within each segment (q·kᵀ, softmax, scores·v, or one fused FlashAttention
  operator; segments = temporal slices of each image, or Qwen2.5-VL's windows), ``proj``,
  ``attn_add``, ``norm2``, then ``fc1`` / quick GELU / ``fc2`` (Qwen2-VL) or
  ``gate_proj`` / ``up_proj`` / SwiGLU / ``down_proj`` with biases (Qwen2.5-VL), ``mlp_add``;
- ``merger``: ``ln_q`` over every patch, the 2×2 groups viewed as rows of 4·width,
  ``mlp_0`` (4·width → 4·width), GELU, ``mlp_2`` (4·width → LLM width).

Attention over segments of unequal lengths (windows at an image's edges are partial) is
costed per distinct length and summed, so each term is exact for every window.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import fields, replace

from ..llm import ADD_FLOPS_PER_ELEMENT, NORM_FLOPS_PER_ELEMENT, SWIGLU_FLOPS_PER_ELEMENT
from ..ops import NORM, Op
from ..quant import QuantPlan
from ..vision import GELU_FLOPS_PER_ELEMENT, _Builder
from .qwen_vl_layout import VisionGrid, full_attention_seqlens, window_attention_seqlens
from .qwen_vl_spec import QwenVisionSpec

# q·cos + rotate_half(q)·sin: two multiplies and one add per element (the negation inside
# rotate_half is a copy with a sign flip, not counted).
ROTARY_FLOPS_PER_ELEMENT = 3
ROTARY_TABLES = 2  # cos and sin, each (tokens × head_dim), read once per q and per k
RMS_NORM_PARAMS_PER_CHANNEL = 1


def _sum_ops(groups: list[list[Op]]) -> list[Op]:
    """Operators of several attention groups (one per segment length) merged by name: every
    FLOP and byte term added, the rest taken from the first group."""
    merged = list(groups[0])
    numeric = [f.name for f in fields(Op) if f.name.endswith(("_flops", "_bytes"))]
    for group in groups[1:]:
        for i, op in enumerate(group):
            merged[i] = replace(merged[i], **{k: getattr(merged[i], k) + getattr(op, k)
                                              for k in numeric})
    return merged


def segment_attention_ops(b: _Builder, block: str, seqlens: list[int], heads: int, head_dim: int,
                          count: int, flash_attention: bool, onchip_buffer_bytes: float) -> list[Op]:
    """Bidirectional attention within each segment of ``seqlens`` patches (segments of equal
    length share one set of terms)."""
    groups = [b.attention(block, num, heads, length, length, head_dim, count, flash_attention,
                          onchip_buffer_bytes)
              for length, num in sorted(Counter(seqlens).items())]
    return _sum_ops(groups)


def _rms_norm(b: _Builder, block: str, name: str, rows, width: int, count: int) -> Op:
    return b.vector(block, name, rows * width, NORM_FLOPS_PER_ELEMENT, count,
                    weight_elements=RMS_NORM_PARAMS_PER_CHANNEL * width, op_class=NORM)


def _norm(vision: QwenVisionSpec, b: _Builder, block, name, rows, width, count) -> Op:
    if vision.windowed:  # Qwen2.5-VL: RMSNorm
        return _rms_norm(b, block, name, rows, width, count)
    return b.norm(block, name, rows, width, count)  # Qwen2-VL: LayerNorm


def _rotary_op(b: _Builder, block: str, rows, width: int, head_dim: int, count: int) -> Op:
    q_and_k = 2 * rows * width
    op = b.vector(block, "rotary", q_and_k, ROTARY_FLOPS_PER_ELEMENT, count)
    tables = 2 * ROTARY_TABLES * rows * head_dim * b.a  # cos and sin, for q and for k
    return replace(op, act_read_bytes=op.act_read_bytes + tables)


def vision_block_ops(vision: QwenVisionSpec, b: _Builder, block: str, rows: int,
                     seqlens: list[int], count: int, flash_attention: bool,
                     onchip_buffer_bytes: float) -> list[Op]:
    """One kind of vision block over ``rows`` packed patches, attending within ``seqlens``."""
    d, ffn = vision.hidden_size, vision.intermediate_size
    ops = [
        _norm(vision, b, block, "norm1", rows, d, count),
        b.linear(block, "qkv", rows, d, 3 * d, count),
        _rotary_op(b, block, rows, d, vision.head_dim, count),
        *segment_attention_ops(b, block, seqlens, vision.num_heads, vision.head_dim, count,
                               flash_attention, onchip_buffer_bytes),
        b.linear(block, "proj", rows, d, d, count),
        b.vector(block, "attn_add", rows * d, ADD_FLOPS_PER_ELEMENT, count, num_inputs=2),
        _norm(vision, b, block, "norm2", rows, d, count),
    ]
    if vision.windowed:  # SwiGLU with biases: down(silu(gate(x)) · up(x))
        ops += [
            b.linear(block, "gate_proj", rows, d, ffn, count),
            b.linear(block, "up_proj", rows, d, ffn, count),
            b.vector(block, "mlp_act", rows * ffn, SWIGLU_FLOPS_PER_ELEMENT, count, num_inputs=2),
            b.linear(block, "down_proj", rows, ffn, d, count),
        ]
    else:  # fc1, quick GELU, fc2
        ops += [
            b.linear(block, "fc1", rows, d, ffn, count),
            b.vector(block, "mlp_act", rows * ffn, GELU_FLOPS_PER_ELEMENT, count),
            b.linear(block, "fc2", rows, ffn, d, count),
        ]
    ops.append(b.vector(block, "mlp_add", rows * d, ADD_FLOPS_PER_ELEMENT, count, num_inputs=2))
    return ops


def merger_ops(vision: QwenVisionSpec, b: _Builder, rows: int) -> list[Op]:
    """The patch merger over ``rows`` patches: norm per patch, then an MLP per 2×2 group."""
    d, wide = vision.hidden_size, vision.merger_hidden_size
    merged = rows // vision.spatial_merge_size**2
    return [
        _norm(vision, b, "merger", "ln_q", rows, d, 1),
        b.linear("merger", "mlp_0", merged, wide, wide, 1),
        b.vector("merger", "mlp_act", merged * wide, GELU_FLOPS_PER_ELEMENT, 1),
        b.linear("merger", "mlp_2", merged, wide, vision.out_hidden_size, 1),
    ]


def qwen_vision_tower_ops(vision: QwenVisionSpec, quant: QuantPlan, grids: list[VisionGrid],
                          flash_attention: bool, onchip_buffer_bytes: float,
                          stage: str = "vision") -> list[Op]:
    """Operators of one forward pass of the tower and merger over all ``grids`` (every image
    and video of the batch, packed as transformers packs them)."""
    if not grids:
        return []
    b = _Builder(stage, quant)
    d = vision.hidden_size
    rows = sum(g.num_patches for g in grids)
    ops = [b.linear("embeddings", "patch_embed", rows, vision.patch_input_size, d, 1, bias=False)]
    if vision.windowed:  # hidden states gathered into window order (bytes only)
        ops.append(b.vector("embeddings", "window_permute", rows * d, 0, 1))
    full = full_attention_seqlens(grids)
    if vision.num_full_attention_blocks:
        block = "full_blocks" if vision.windowed else "blocks"
        ops += vision_block_ops(vision, b, block, rows, full, vision.num_full_attention_blocks,
                                flash_attention, onchip_buffer_bytes)
    if vision.num_window_attention_blocks:
        windows = window_attention_seqlens(grids, vision.window_size, vision.patch_size,
                                           vision.spatial_merge_size)
        ops += vision_block_ops(vision, b, "window_blocks", rows, windows,
                                vision.num_window_attention_blocks, flash_attention,
                                onchip_buffer_bytes)
    ops += merger_ops(vision, b, rows)
    if vision.windowed:  # merged tokens put back in raster order
        merged = rows // vision.spatial_merge_size**2
        ops.append(b.vector("merger", "window_unpermute", merged * vision.out_hidden_size, 0, 1))
    return ops


"""Operator graph of a Llama-family decoder for one forward pass (prefill or one decode step).

Per decoder layer: attn_norm, q/k/v/o projections (with their bias adds when the config's
``attention_bias`` / ``mlp_bias`` say so), q·kᵀ, softmax, scores·v (or one fused
FlashAttention operator), attn_add, mlp_norm, gate/up/down projections, the SwiGLU
activation, mlp_add; then the LM head once. Counts are per layer and carry
``count = num_hidden_layers``.

Conventions shared with LLM-Viewer: softmax 5 FLOPs per element (max, subtract, exp, sum,
divide), a norm 7 (sum, subtract, pow, sum, divide, multiply, add), a residual add 1, the
SwiGLU activation 2; attention counts the full s×s score matrix. Where ``Accounting``
flags differ, the ``llm-viewer`` branch reproduces LLM-Viewer (2024) exactly. Unfused
attention materializes the whole s_q × s_kv score matrix (no causal saving); the fused
FlashAttention operator skips the tiles above the causal diagonal under ``fpcost``.

Token counts may be ints or numpy integer arrays (sweeps build many passes at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from .accounting import Accounting
from .flash import flash_attention_row_block, flash_work
from .ops import ATTENTION, MATMUL, NORM, VECTOR, Op, matmul_flops
from .quant import QuantPlan
from .spec import LLMSpec

SOFTMAX_FLOPS_PER_ELEMENT = 5
NORM_FLOPS_PER_ELEMENT = 7
ADD_FLOPS_PER_ELEMENT = 1
SWIGLU_FLOPS_PER_ELEMENT = 2
KV_TENSORS = 2  # K and V


@dataclass(frozen=True)
class DecoderPass:
    """One forward pass: ``num_query_tokens`` new tokens per sample attend to
    ``num_kv_tokens`` cached-or-new tokens. Prefill: both = prompt length. Decode step
    (LLM-Viewer's convention): 1 query token over a cache of ``num_kv_tokens``."""

    stage: str
    num_query_tokens: object
    num_kv_tokens: object
    batch_size: object


def decoder_ops(
    llm: LLMSpec,
    quant: QuantPlan,
    step: DecoderPass,
    accounting: Accounting,
    flash_attention: bool,
    onchip_buffer_bytes: float,
    block: str = "decoder",
) -> list[Op]:
    """Operators of one decoder layer (``count`` = layers) plus the LM head, for one pass."""
    ops = _linear_ops(llm, quant, step, accounting, block)
    if flash_attention:
        ops.append(_fused_attention_op(llm, quant, step, accounting, onchip_buffer_bytes, block))
    else:
        ops.extend(_attention_ops(llm, quant, step, accounting, block))
    ops.extend(_elementwise_ops(llm, quant, step, accounting, block))
    ops.append(_lm_head_op(llm, quant, step, accounting))
    return ops


def _precisions(quant: QuantPlan, accounting: Accounting) -> tuple[str, str, str]:
    """(linear, attention-matmul, element-wise) precisions under the accounting mode."""
    if accounting.precision_per_operator:
        return quant.linear_precision, quant.attention_precision, quant.vector_precision
    shared = quant.llm_viewer_precision
    return shared, shared, shared


def _vector_op(stage, block, name, op_class, flops, accounting, quant, count, **byte_terms) -> Op:
    """An element-wise operator: CUDA-core FLOPs, or tensor FLOPs under LLM-Viewer."""
    _, _, vector_precision = _precisions(quant, accounting)
    if accounting.vector_ops_on_cuda_cores:
        return Op(stage, block, name, op_class, vector_precision, quant.vector_precision, count,
                  vector_flops=flops, **byte_terms)
    return Op(stage, block, name, op_class, vector_precision, quant.vector_precision, count,
              tensor_flops=flops, **byte_terms)


def _projection_shapes(llm: LLMSpec, accounting: Accounting) -> dict[str, tuple[float, float]]:
    """(in_features, out_features) of each linear layer of a decoder layer."""
    h, ffn = llm.hidden_size, llm.intermediate_size
    if accounting.projections_from_head_dim:
        q, kv = llm.q_size, llm.kv_size
    else:  # LLM-Viewer: q and o are h×h; k and v are h × (h · kv_heads / heads), a float
        q, kv = h, h * llm.num_key_value_heads / llm.num_attention_heads
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, ffn),
        "up_proj": (h, ffn),
        "down_proj": (ffn, h),
    }


ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")  # biased by attention_bias
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")  # biased by mlp_bias


def _has_bias(llm: LLMSpec, name: str) -> bool:
    """Whether projection ``name`` has a bias (LlamaConfig's ``attention_bias`` covers q, k,
    v and o; ``mlp_bias`` gate, up and down)."""
    return llm.attention_bias if name in ATTENTION_PROJECTIONS else llm.mlp_bias


def _linear_ops(llm, quant, step, accounting, block) -> list[Op]:
    """The seven projections of a layer. A bias adds, as vision.py counts a ViT's, one FLOP
    per output element in the matmul's epilogue and ``out_features`` weights to load."""
    linear_precision, _, _ = _precisions(quant, accounting)
    tokens = step.batch_size * step.num_query_tokens  # rows of every projection's input
    ops = []
    for name, (in_features, out_features) in _projection_shapes(llm, accounting).items():
        writes_kv = name in ("k_proj", "v_proj")  # k and v land in the KV cache
        out_elements = tokens * out_features
        bias = _has_bias(llm, name)
        ops.append(Op(
            step.stage, block, name, MATMUL, linear_precision, quant.vector_precision,
            llm.num_hidden_layers,
            tensor_flops=matmul_flops(tokens, in_features, out_features)
            + (out_elements if bias else 0),
            weight_bytes=(in_features * out_features + (out_features if bias else 0))
            * quant.weight_bytes_per_element,
            act_read_bytes=tokens * in_features * quant.act_bytes_per_element,
            act_write_bytes=0 if writes_kv else out_elements * quant.act_bytes_per_element,
            kv_write_bytes=out_elements * quant.kv_bytes_per_element if writes_kv else 0,
        ))
    return ops


def _head_dim(llm: LLMSpec, accounting: Accounting) -> int:
    if accounting.projections_from_head_dim:
        return llm.resolved_head_dim
    return llm.hidden_size // llm.num_attention_heads  # LLM-Viewer's head_size


def _attention_ops(llm, quant, step, accounting, block) -> list[Op]:
    """Unfused attention: q·kᵀ, softmax and scores·v, the s_q × s_kv scores materialized."""
    _, attention_precision, _ = _precisions(quant, accounting)
    b, s_q, s_kv = step.batch_size, step.num_query_tokens, step.num_kv_tokens
    heads, kv_heads, d = llm.num_attention_heads, llm.num_key_value_heads, _head_dim(llm, accounting)
    a, kv = quant.act_bytes_per_element, quant.kv_bytes_per_element
    score_elements = b * heads * s_q * s_kv
    # LLM-Viewer sizes the prefill Q load with the KV heads (its decode uses the query heads).
    q_heads = heads if (accounting.q_load_query_heads or step.stage != "prefill") else kv_heads
    layers = llm.num_hidden_layers
    return [
        Op(step.stage, block, "qk_matmul", ATTENTION, attention_precision, quant.vector_precision,
           layers,
           tensor_flops=matmul_flops(b * heads * s_q, d, s_kv),
           act_read_bytes=b * s_q * q_heads * d * a,
           act_write_bytes=score_elements * a,
           kv_read_bytes=b * s_kv * kv_heads * d * kv),
        _vector_op(step.stage, block, "softmax", VECTOR,
                   SOFTMAX_FLOPS_PER_ELEMENT * score_elements, accounting, quant, layers,
                   act_read_bytes=score_elements * a, act_write_bytes=score_elements * a),
        Op(step.stage, block, "sv_matmul", ATTENTION, attention_precision, quant.vector_precision,
           layers,
           tensor_flops=matmul_flops(b * heads * s_q, s_kv, d),
           act_read_bytes=score_elements * a,
           act_write_bytes=b * s_q * heads * d * a,
           kv_read_bytes=b * s_kv * kv_heads * d * kv),
    ]


def _fused_attention_op(llm, quant, step, accounting, onchip_buffer_bytes, block) -> Op:
    """FlashAttention: one fused operator; K and V are re-read once per tile of query rows.
    With ``flash_causal_tiles`` the tiles above the causal diagonal are skipped (flash.py)."""
    _, attention_precision, _ = _precisions(quant, accounting)
    b, s_q, s_kv = step.batch_size, step.num_query_tokens, step.num_kv_tokens
    heads, d = llm.num_attention_heads, _head_dim(llm, accounting)
    a, kv = quant.act_bytes_per_element, quant.kv_bytes_per_element
    rows_per_tile = flash_attention_row_block(onchip_buffer_bytes, kv, d)
    work = flash_work(s_q, s_kv, rows_per_tile, causal=accounting.flash_causal_tiles)
    matmuls = 2 * matmul_flops(b * heads, d, work.score_elements)  # q·kᵀ and scores·v
    softmax = SOFTMAX_FLOPS_PER_ELEMENT * b * heads * work.score_elements
    if accounting.flash_output_s_by_d:
        output_bytes = b * heads * s_q * d * a  # written once
    else:
        output_bytes = 2 * b * heads * s_q * s_kv * a  # LLM-Viewer: "initialize O and save O", s×s
    if accounting.vector_ops_on_cuda_cores:
        compute = {"tensor_flops": matmuls, "vector_flops": softmax}
    else:
        compute = {"tensor_flops": matmuls + softmax}
    return Op(
        step.stage, block, "fused_attention", ATTENTION, attention_precision,
        quant.vector_precision, llm.num_hidden_layers,
        act_read_bytes=b * heads * s_q * d * a,
        act_write_bytes=output_bytes,
        kv_read_bytes=work.kv_rows_read * b * heads * d * kv * KV_TENSORS,
        **compute,
    )


def _elementwise_ops(llm, quant, step, accounting, block) -> list[Op]:
    """The two norms, the two residual adds and the SwiGLU activation of one layer."""
    tokens = step.batch_size * step.num_query_tokens
    h = llm.hidden_size
    a = quant.act_bytes_per_element
    layers = llm.num_hidden_layers
    hidden_elements = tokens * h
    ops = [
        _vector_op(step.stage, block, name, NORM, NORM_FLOPS_PER_ELEMENT * hidden_elements,
                   accounting, quant, layers,
                   act_read_bytes=hidden_elements * a, act_write_bytes=hidden_elements * a)
        for name in ("attn_norm", "mlp_norm")
    ]
    add_inputs = 2 if accounting.residual_reads_both else 1
    ops += [
        _vector_op(step.stage, block, name, VECTOR, ADD_FLOPS_PER_ELEMENT * hidden_elements,
                   accounting, quant, layers,
                   act_read_bytes=add_inputs * hidden_elements * a,
                   act_write_bytes=hidden_elements * a)
        for name in ("attn_add", "mlp_add")
    ]
    act_width = llm.intermediate_size if accounting.swiglu_ffn_width else h
    act_elements = tokens * act_width
    ops.append(_vector_op(step.stage, block, "mlp_act", VECTOR,
                          SWIGLU_FLOPS_PER_ELEMENT * act_elements, accounting, quant, layers,
                          act_read_bytes=2 * act_elements * a,  # gate and up
                          act_write_bytes=act_elements * a))
    return ops


def _lm_head_op(llm, quant, step, accounting) -> Op:
    """The LM head for the last position of each sample (what generation needs)."""
    linear_precision, _, _ = _precisions(quant, accounting)
    h, vocab = llm.hidden_size, llm.vocab_size
    w, a = quant.weight_bytes_per_element, quant.act_bytes_per_element
    b = step.batch_size
    if accounting.lm_head_full:
        flops = matmul_flops(b, h, vocab)
        act_read, act_write = b * h * a, b * vocab * a
    else:  # LLM-Viewer: one op per multiply-add, activations not scaled by batch
        flops = b * h * vocab
        act_read, act_write = h * a, vocab * a
    return Op(step.stage, "lm_head", "lm_head", MATMUL, linear_precision, quant.vector_precision,
              1, tensor_flops=flops, weight_bytes=h * vocab * w,
              act_read_bytes=act_read, act_write_bytes=act_write)

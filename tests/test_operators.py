"""Direction (a): every operator of a tiny decoder, counted by hand.

Tiny LLM: hidden 8, 2 layers, 2 heads of width 4, 1 KV head, FFN 12, vocabulary 10.
Workload: batch 2, prompt 3 tokens, FP16 everywhere (2 bytes per element).
"""

import pytest

from fpcost.costmodel.accounting import FPCOST, LLM_VIEWER
from fpcost.costmodel.llm import DecoderPass, decoder_ops
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import LLMSpec

TINY = LLMSpec(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
               intermediate_size=12, vocab_size=10)
FP16 = QuantPlan()
PREFILL = DecoderPass("prefill", num_query_tokens=3, num_kv_tokens=3, batch_size=2)
DECODE = DecoderPass("decode", num_query_tokens=1, num_kv_tokens=3, batch_size=2)
BUFFER = 21504e3

FIELDS = ("tensor_flops", "vector_flops", "weight_bytes", "act_read_bytes", "act_write_bytes",
          "kv_read_bytes", "kv_write_bytes")


def ops_by_name(step, accounting, flash=False):
    return {op.name: op for op in decoder_ops(TINY, FP16, step, accounting, flash, BUFFER)}


def values(op):
    return tuple(getattr(op, f) for f in FIELDS)


# name: (tensor FLOPs, vector FLOPs, weight B, act read B, act write B, KV read B, KV write B)
FPCOST_PREFILL = {
    # 6 token rows; q: 8→8, k/v: 8→4 (one KV head), o: 8→8, gate/up: 8→12, down: 12→8
    "q_proj": (2 * 6 * 8 * 8, 0, 8 * 8 * 2, 6 * 8 * 2, 6 * 8 * 2, 0, 0),
    "k_proj": (2 * 6 * 8 * 4, 0, 8 * 4 * 2, 6 * 8 * 2, 0, 0, 6 * 4 * 2),
    "v_proj": (2 * 6 * 8 * 4, 0, 8 * 4 * 2, 6 * 8 * 2, 0, 0, 6 * 4 * 2),
    "o_proj": (2 * 6 * 8 * 8, 0, 8 * 8 * 2, 6 * 8 * 2, 6 * 8 * 2, 0, 0),
    "gate_proj": (2 * 6 * 8 * 12, 0, 8 * 12 * 2, 6 * 8 * 2, 6 * 12 * 2, 0, 0),
    "up_proj": (2 * 6 * 8 * 12, 0, 8 * 12 * 2, 6 * 8 * 2, 6 * 12 * 2, 0, 0),
    "down_proj": (2 * 6 * 12 * 8, 0, 12 * 8 * 2, 6 * 12 * 2, 6 * 8 * 2, 0, 0),
    # scores: batch 2 × heads 2 × 3 × 3 = 36 elements; Q read with the 2 query heads
    "qk_matmul": (2 * (2 * 2 * 3) * 4 * 3, 0, 0, 2 * 3 * 2 * 4 * 2, 36 * 2, 2 * 3 * 1 * 4 * 2, 0),
    "softmax": (0, 5 * 36, 0, 36 * 2, 36 * 2, 0, 0),
    "sv_matmul": (2 * (2 * 2 * 3) * 3 * 4, 0, 0, 36 * 2, 2 * 3 * 2 * 4 * 2, 2 * 3 * 1 * 4 * 2, 0),
    # 6 × 8 = 48 hidden elements; the adds read both inputs; SwiGLU spans 6 × 12 = 72
    "attn_norm": (0, 7 * 48, 0, 48 * 2, 48 * 2, 0, 0),
    "mlp_norm": (0, 7 * 48, 0, 48 * 2, 48 * 2, 0, 0),
    "attn_add": (0, 48, 0, 2 * 48 * 2, 48 * 2, 0, 0),
    "mlp_add": (0, 48, 0, 2 * 48 * 2, 48 * 2, 0, 0),
    "mlp_act": (0, 2 * 72, 0, 2 * 72 * 2, 72 * 2, 0, 0),
    # last position of each of the 2 samples: 2 FLOPs per multiply-add
    "lm_head": (2 * 2 * 8 * 10, 0, 8 * 10 * 2, 2 * 8 * 2, 2 * 10 * 2, 0, 0),
}


@pytest.mark.parametrize("name", sorted(FPCOST_PREFILL))
def test_fpcost_prefill_counts(name):
    assert values(ops_by_name(PREFILL, FPCOST)[name]) == FPCOST_PREFILL[name]


def test_llm_viewer_prefill_quirks():
    ops = ops_by_name(PREFILL, LLM_VIEWER)
    # everything element-wise counts as tensor FLOPs
    assert ops["softmax"].vector_flops == 0 and ops["softmax"].tensor_flops == 5 * 36
    # prefill Q load sized with the single KV head
    assert ops["qk_matmul"].act_read_bytes == 3 * 4 * 2 * 1 * 2
    # SiLU sized with the hidden size, not the FFN width
    assert values(ops["mlp_act"]) == (2 * 48, 0, 0, 2 * 48 * 2, 48 * 2, 0, 0)
    # residual add reads one input
    assert ops["attn_add"].act_read_bytes == 48 * 2
    # LM head: 1 op per multiply-add, activations not scaled by batch
    assert values(ops["lm_head"]) == (2 * 8 * 10, 0, 8 * 10 * 2, 8 * 2, 10 * 2, 0, 0)
    assert all(op.precision == "fp16" for op in ops.values())


def test_decode_counts():
    ops = ops_by_name(DECODE, FPCOST)
    # one query token per sample over a cache of 3
    assert values(ops["qk_matmul"]) == (2 * 4 * 4 * 3, 0, 0, 2 * 2 * 4 * 2, 2 * 2 * 3 * 2,
                                        2 * 3 * 1 * 4 * 2, 0)
    assert values(ops["k_proj"]) == (2 * 2 * 8 * 4, 0, 8 * 4 * 2, 2 * 8 * 2, 0, 0, 2 * 4 * 2)
    assert ops["softmax"].vector_flops == 5 * 2 * 2 * 3
    lv = ops_by_name(DECODE, LLM_VIEWER)
    # LLM-Viewer's decode Q load uses the query heads
    assert lv["qk_matmul"].act_read_bytes == 4 * 2 * 2 * 2


def test_flash_attention_fused_operator():
    # rows per tile = min(ceil(buffer / (2 B · 4)), 4) = 4, so one tile for 3 query rows
    fp = ops_by_name(PREFILL, FPCOST, flash=True)["fused_attention"]
    assert fp.tensor_flops == 2 * 12 * 4 * 3 * 2 and fp.vector_flops == 5 * 36
    assert fp.act_read_bytes == 2 * 2 * 3 * 4 * 2
    assert fp.act_write_bytes == 2 * 2 * 3 * 4 * 2  # output written once, s × d
    assert fp.kv_read_bytes == 1 * 2 * 2 * 3 * 4 * 2 * 2  # K and V, every query head
    lv = ops_by_name(PREFILL, LLM_VIEWER, flash=True)["fused_attention"]
    assert lv.act_write_bytes == 2 * 36 * 2  # twice, sized s × s
    assert lv.tensor_flops == fp.tensor_flops + fp.vector_flops


def test_precision_follows_the_matmul():
    w4a16 = QuantPlan(4, 16, 16)
    ops = {op.name: op for op in decoder_ops(TINY, w4a16, PREFILL, FPCOST, False, BUFFER)}
    assert ops["q_proj"].precision == "fp16"  # weight-only quantization dequantizes to FP16
    assert ops["q_proj"].weight_bytes == 8 * 8 * 0.5  # int4 = half a byte
    w4a4 = QuantPlan.uniform(4)
    ops = {op.name: op for op in decoder_ops(TINY, w4a4, PREFILL, FPCOST, False, BUFFER)}
    assert ops["q_proj"].precision == "int4" and ops["softmax"].vector_precision == "fp16"
    lv = {op.name: op for op in decoder_ops(TINY, w4a4, PREFILL, LLM_VIEWER, False, BUFFER)}
    assert {op.precision for op in lv.values()} == {"int8"}


# LlamaConfig's attention_bias (q, k, v, o) and mlp_bias (gate, up, down): one bias add per
# output element (a tensor FLOP in the matmul's epilogue) and out_features more weights, as
# vision.py counts a ViT's biases. 6 token rows, FP16.
BIASED = {
    "q_proj": (2 * 6 * 8 * 8 + 6 * 8, (8 * 8 + 8) * 2),
    "k_proj": (2 * 6 * 8 * 4 + 6 * 4, (8 * 4 + 4) * 2),
    "v_proj": (2 * 6 * 8 * 4 + 6 * 4, (8 * 4 + 4) * 2),
    "o_proj": (2 * 6 * 8 * 8 + 6 * 8, (8 * 8 + 8) * 2),
    "gate_proj": (2 * 6 * 8 * 12 + 6 * 12, (8 * 12 + 12) * 2),
    "up_proj": (2 * 6 * 8 * 12 + 6 * 12, (8 * 12 + 12) * 2),
    "down_proj": (2 * 6 * 12 * 8 + 6 * 8, (12 * 8 + 8) * 2),
}


@pytest.mark.parametrize("attention_bias", [False, True])
@pytest.mark.parametrize("mlp_bias", [False, True])
def test_attention_and_mlp_biases_are_counted(attention_bias, mlp_bias):
    from dataclasses import replace

    llm = replace(TINY, attention_bias=attention_bias, mlp_bias=mlp_bias)
    ops = {op.name: op for op in decoder_ops(llm, FP16, PREFILL, FPCOST, False, BUFFER)}
    for name, (flops, weight_bytes) in BIASED.items():
        biased = attention_bias if name in ("q_proj", "k_proj", "v_proj", "o_proj") else mlp_bias
        plain = FPCOST_PREFILL[name]
        expected = (flops, weight_bytes) if biased else (plain[0], plain[2])
        assert (ops[name].tensor_flops, ops[name].weight_bytes) == expected, name
        # activations and the KV cache are what they are without a bias
        assert values(ops[name])[3:] == plain[3:], name
    # nothing else changes
    for name in set(FPCOST_PREFILL) - set(BIASED):
        assert values(ops[name]) == FPCOST_PREFILL[name], name


@pytest.mark.parametrize("attention_bias", [False, True])
@pytest.mark.parametrize("mlp_bias", [False, True])
def test_projection_weights_equal_the_parameter_count(attention_bias, mlp_bias):
    """The weights the projections load are the layer's parameters less its two RMSNorms
    (params.py, itself checked against transformers)."""
    from dataclasses import replace

    from fpcost.costmodel.params import RMS_NORM_PARAMS_PER_CHANNEL, llm_layer_params

    llm = replace(TINY, attention_bias=attention_bias, mlp_bias=mlp_bias)
    ops = decoder_ops(llm, FP16, PREFILL, FPCOST, False, BUFFER)
    loaded = sum(op.weight_bytes for op in ops if op.name in BIASED) / FP16.weight_bytes_per_element
    assert loaded == llm_layer_params(llm) - 2 * RMS_NORM_PARAMS_PER_CHANNEL * llm.hidden_size

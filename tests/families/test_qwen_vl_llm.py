"""The Qwen2 LLM's FLOPs against FlopCounterMode on transformers' Qwen2-VL / Qwen2.5-VL models, built on
the ``meta`` device at full width (depth 1 and 2: the difference is one decoder layer, the
rest is the LM head on the last position). FlopCounterMode counts the matmuls, not the bias
adds (nor norms, rotary, softmax, activations); the attention runs eager, so q·kᵀ and
scores·v are counted matmuls over the whole s × s score matrix, as fpcost's unfused
attention counts them."""

import copy

import pytest

from fpcost.costmodel.accounting import FPCOST
from fpcost.costmodel.families.qwen_vl_llm import qwen2_decoder_ops
from fpcost.costmodel.families.qwen_vl_presets import PRESET_CONFIGS, qwen_vl_preset
from fpcost.costmodel.llm import DecoderPass
from fpcost.costmodel.quant import QuantPlan

QUANT = QuantPlan()
BATCH, TOKENS = 2, 37


def _ops(name):
    step = DecoderPass("prefill", TOKENS, TOKENS, BATCH)
    return qwen2_decoder_ops(qwen_vl_preset(name), QUANT, step, FPCOST, False, 0)


def test_qkv_biases_by_hand():
    ops = {op.name: op for op in _ops("qwen2-vl-7b")}
    rows = BATCH * TOKENS
    assert ops["q_proj"].tensor_flops == 2 * rows * 3584 * 3584 + rows * 3584
    assert ops["k_proj"].tensor_flops == 2 * rows * 3584 * 512 + rows * 512  # 4 KV heads of 128
    assert ops["k_proj"].weight_bytes == (3584 * 512 + 512) * 2
    assert ops["o_proj"].tensor_flops == 2 * rows * 3584 * 3584  # no bias


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def _hf_flops(name, layers):
    config = copy.deepcopy(PRESET_CONFIGS[name])
    config["num_hidden_layers"] = layers
    if config["model_type"] == "qwen2_vl":
        config_cls, model_cls = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
    else:
        config_cls, model_cls = (transformers.Qwen2_5_VLConfig,
                                 transformers.Qwen2_5_VLForConditionalGeneration)
    hf = config_cls(**config)
    hf.text_config._attn_implementation = "eager"
    with torch.device("meta"):
        model = model_cls(hf).eval()
    width = hf.text_config.hidden_size
    embeds = torch.zeros(BATCH, TOKENS, width, device="meta")
    positions = torch.arange(TOKENS, device="meta").expand(3, BATCH, TOKENS)  # M-RoPE: t, h, w
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs_embeds=embeds, position_ids=positions, logits_to_keep=1, use_cache=False)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["qwen2-vl-2b", "qwen2-vl-7b", "qwen2.5-vl-3b"])
def test_decoder_equals_flop_counter(name):
    llm = qwen_vl_preset(name).llm
    ops = _ops(name)
    one, two = _hf_flops(name, 1), _hf_flops(name, 2)
    layer = two - one
    rows = BATCH * TOKENS
    biases = rows * (llm.q_size + 2 * llm.kv_size)
    per_layer = sum(op.tensor_flops for op in ops if op.block == "decoder") - biases
    assert {op.count for op in ops if op.block == "decoder"} == {llm.num_hidden_layers}
    assert per_layer == layer
    lm_head = next(op for op in ops if op.name == "lm_head")
    assert lm_head.tensor_flops == one - layer

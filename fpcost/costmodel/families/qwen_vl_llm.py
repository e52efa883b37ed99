"""The Qwen2 LLM of Qwen2-VL / Qwen2.5-VL: llm.py's Llama-family decoder plus the bias adds
of q_proj, k_proj and v_proj, which Qwen2 always has (o_proj and the MLP have none).

A bias add is one FLOP per output element in the matmul's epilogue and ``out_features``
weights more to load, as vision.py counts a ViT's biases. The LLM's M-RoPE (3-D position ids)
costs what 1-D rotary costs; like llm.py, the decoder does not cost the rotary tables.
"""

from __future__ import annotations

from dataclasses import replace

from ..accounting import Accounting
from ..llm import DecoderPass, decoder_ops
from ..ops import Op
from ..quant import QuantPlan
from ..spec import LLMSpec
from .qwen_vl_spec import QwenVLSpec

BIASED_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def qwen2_decoder_ops(model: QwenVLSpec, quant: QuantPlan, step: DecoderPass,
                      accounting: Accounting, flash_attention: bool,
                      onchip_buffer_bytes: float, block: str = "decoder") -> list[Op]:
    """``decoder_ops`` of the Qwen2 LLM for one pass, with the q/k/v bias adds."""
    ops = decoder_ops(model.llm, quant, step, accounting, flash_attention, onchip_buffer_bytes,
                      block)
    if not model.qkv_bias:
        return ops
    return with_qkv_biases(ops, model.llm, quant, step, block)


def with_qkv_biases(ops: list[Op], llm: LLMSpec, quant: QuantPlan, step: DecoderPass,
                    block: str = "decoder") -> list[Op]:
    """A Llama-family decoder's operators made Qwen2's: q_proj, k_proj and v_proj gain their
    bias add (one FLOP per output element) and bias weights (LLaVA-OneVision's LLM too)."""
    tokens = step.batch_size * step.num_query_tokens
    widths = {"q_proj": llm.q_size, "k_proj": llm.kv_size, "v_proj": llm.kv_size}
    return [replace(op, tensor_flops=op.tensor_flops + tokens * widths[op.name],
                    weight_bytes=op.weight_bytes + widths[op.name] * quant.weight_bytes_per_element)
            if op.block == block and op.name in BIASED_PROJECTIONS else op
            for op in ops]

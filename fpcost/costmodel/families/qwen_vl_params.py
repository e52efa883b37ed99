"""Parameter counts of Qwen2-VL / Qwen2.5-VL, equal to transformers' models (a test builds
``Qwen2VLForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration`` on ``meta``).

Vision tower: the bias-free Conv3d, ``depth`` blocks, the merger (the rotary tables are
buffers, not parameters). LLM: Qwen2 with q/k/v biases and no o_proj bias, RMSNorms, the LM
head unless tied to the embeddings.
"""

from __future__ import annotations

from ..params import LAYER_NORM_PARAMS_PER_CHANNEL, RMS_NORM_PARAMS_PER_CHANNEL, llm_params
from ..spec import LLMSpec
from .qwen_vl_spec import QwenVisionSpec, QwenVLSpec


def _linear(in_features: int, out_features: int, bias: bool = True) -> int:
    return in_features * out_features + (out_features if bias else 0)


def _norm_params(vision: QwenVisionSpec, width: int) -> int:
    per_channel = RMS_NORM_PARAMS_PER_CHANNEL if vision.windowed else LAYER_NORM_PARAMS_PER_CHANNEL
    return per_channel * width


def vision_block_params(vision: QwenVisionSpec) -> int:
    """One vision block: two norms, fused qkv and proj (biases), the MLP (biases)."""
    d, ffn = vision.hidden_size, vision.intermediate_size
    attention = _linear(d, 3 * d) + _linear(d, d)
    if vision.windowed:  # SwiGLU: gate, up, down
        mlp = 2 * _linear(d, ffn) + _linear(ffn, d)
    else:  # fc1, fc2
        mlp = _linear(d, ffn) + _linear(ffn, d)
    return 2 * _norm_params(vision, d) + attention + mlp


def merger_params(vision: QwenVisionSpec) -> int:
    """ln_q over the ViT width, then Linear(4·d, 4·d) and Linear(4·d, LLM width)."""
    wide = vision.merger_hidden_size
    return (_norm_params(vision, vision.hidden_size) + _linear(wide, wide)
            + _linear(wide, vision.out_hidden_size))


def vision_params(vision: QwenVisionSpec) -> int:
    """The whole tower with its merger (675M for Qwen2-VL's released tower)."""
    patch_embed = vision.patch_input_size * vision.hidden_size  # Conv3d, bias=False
    return patch_embed + vision.depth * vision_block_params(vision) + merger_params(vision)


def qwen2_llm_params(llm: LLMSpec, qkv_bias: bool = True) -> int:
    """Qwen2: a Llama-shaped decoder plus biases on q, k and v (q_size + 2·kv_size per layer)."""
    biases = (llm.q_size + 2 * llm.kv_size) * llm.num_hidden_layers if qkv_bias else 0
    return llm_params(llm) + biases


def parameter_counts(model: QwenVLSpec) -> dict[str, int]:
    """Parameters of the LLM, the vision tower (without merger), the merger, and ``total``."""
    merger = merger_params(model.vision)
    counts = {
        "llm": qwen2_llm_params(model.llm, model.qkv_bias),
        "vision": vision_params(model.vision) - merger,
        "projector": merger,
    }
    counts["total"] = sum(counts.values())
    return counts

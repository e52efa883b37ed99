"""Analytic parameter counts, equal to the transformers implementations' (a test builds
each preset on the ``meta`` device and compares)."""

from __future__ import annotations

from .spec import LLMSpec, ModelSpec, ProjectorSpec, VisionSpec

LAYER_NORM_PARAMS_PER_CHANNEL = 2  # weight and bias
RMS_NORM_PARAMS_PER_CHANNEL = 1  # weight only


def _linear(in_features: int, out_features: int, bias: bool) -> int:
    return in_features * out_features + (out_features if bias else 0)


def llm_layer_params(llm: LLMSpec) -> int:
    """One Llama decoder layer: q/k/v/o, gate/up/down, two RMSNorms."""
    h, ffn = llm.hidden_size, llm.intermediate_size
    attention = (
        _linear(h, llm.q_size, llm.attention_bias)
        + 2 * _linear(h, llm.kv_size, llm.attention_bias)
        + _linear(llm.q_size, h, llm.attention_bias)
    )
    mlp = 2 * _linear(h, ffn, llm.mlp_bias) + _linear(ffn, h, llm.mlp_bias)
    return attention + mlp + 2 * RMS_NORM_PARAMS_PER_CHANNEL * h


def llm_params(llm: LLMSpec) -> int:
    """Embeddings, all decoder layers, the final norm and the LM head (unless tied)."""
    embeddings = llm.vocab_size * llm.hidden_size
    lm_head = 0 if llm.tie_word_embeddings else llm.vocab_size * llm.hidden_size
    return (
        embeddings
        + llm.num_hidden_layers * llm_layer_params(llm)
        + RMS_NORM_PARAMS_PER_CHANNEL * llm.hidden_size
        + lm_head
    )


def vision_layer_params(vision: VisionSpec) -> int:
    """One ViT encoder layer: q/k/v/o with biases, two LayerNorms, the two-layer MLP
    (plus DINOv2's two LayerScale vectors)."""
    h, ffn = vision.hidden_size, vision.intermediate_size
    params = (
        4 * _linear(h, h, True)
        + 2 * LAYER_NORM_PARAMS_PER_CHANNEL * h
        + _linear(h, ffn, True)
        + _linear(ffn, h, True)
    )
    if vision.traits.layer_scale:
        params += 2 * h  # layer_scale1, layer_scale2
    return params


def vision_params(vision: VisionSpec) -> int:
    """A whole vision tower as transformers builds it (CLIPVisionModel, SiglipVisionModel
    with its attention-pooling head, Dinov2Model), from its ``traits``: the patch
    convolution (with a bias or not), CLS and mask tokens, position embeddings (CLS
    included), CLIP's pre-LayerNorm, the layers, the final LayerNorm, SigLIP's head."""
    h, traits = vision.hidden_size, vision.traits
    patch_embed = _linear(vision.num_channels * vision.patch_size**2, h, traits.patch_bias)
    tokens = h * (int(traits.cls_token) + int(traits.mask_token))
    positions = vision.num_positions * h
    pre_norm = LAYER_NORM_PARAMS_PER_CHANNEL * h if traits.pre_layernorm else 0
    layers = vision.num_hidden_layers * vision_layer_params(vision)
    final_norm = LAYER_NORM_PARAMS_PER_CHANNEL * h
    head = 0
    if traits.attention_pool_head and vision.use_head:
        head = (
            h  # probe
            + _linear(h, 3 * h, True)  # fused in-projection of nn.MultiheadAttention
            + _linear(h, h, True)  # out projection
            + LAYER_NORM_PARAMS_PER_CHANNEL * h
            + _linear(h, vision.intermediate_size, True)
            + _linear(vision.intermediate_size, h, True)
        )
    return patch_embed + tokens + positions + pre_norm + layers + final_norm + head


def projector_params(projector: ProjectorSpec) -> int:
    v, t = projector.vision_hidden_size, projector.text_hidden_size
    return _linear(v, t, projector.bias) + _linear(t, t, projector.bias)


def parameter_counts(model: ModelSpec) -> dict[str, int]:
    """Parameters of each part of ``model`` (as its family counts them) and their ``total``."""
    from .families import family_of  # the families import this module

    counts = dict(family_of(model).parameter_counts(model))
    counts["total"] = sum(counts.values())
    return counts

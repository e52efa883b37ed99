"""Vision tower and projector: hand counts per operator (direction a), weights against
transformers models built on ``meta`` (direction b), CLIP ViT-L/14-336's published size."""

import pytest

from fpcost.costmodel.memory import weight_bytes_by_part
from fpcost.costmodel.params import parameter_counts, vision_params
from fpcost.costmodel.presets import CLIP_VIT_L14_224, CLIP_VIT_L14_336, PRESETS
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import ProjectorSpec, VisionSpec
from fpcost.costmodel.vision import num_vision_layers_run, projector_ops, vision_tower_ops

FP16 = QuantPlan()
BUFFER = 21504e3
FIELDS = ("tensor_flops", "vector_flops", "weight_bytes", "act_read_bytes", "act_write_bytes",
          "kv_read_bytes", "kv_write_bytes")
# Tiny CLIP: width 8, 2 layers, 2 heads of 4, MLP 16, 28 px images of 14 px patches:
# 4 patches + CLS = T = 5 tokens. Three images: 15 token rows, 12 patch rows.
TINY = VisionSpec(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                  image_size=28, patch_size=14, family="clip")


def by_name(ops):
    return {op.name: op for op in ops}


def values(op):
    return tuple(getattr(op, f) for f in FIELDS)


# name: (tensor FLOPs, vector FLOPs, weight B, act read B, act write B, KV read, KV write)
TINY_CLIP = {
    # conv as a matmul: 12 patch rows × (3·14·14 = 588) @ 588 × 8, no bias in CLIP
    "patch_embed": (2 * 12 * 588 * 8, 0, 588 * 8 * 2, 12 * 588 * 2, 12 * 8 * 2, 0, 0),
    # CLS prepended + positions added: 15 × 8 elements; position table 5 × 8 + class vector 8
    "pos_embed_add": (0, 120, (5 * 8 + 8) * 2, 120 * 2, 120 * 2, 0, 0),
    "pre_layernorm": (0, 7 * 120, 2 * 8 * 2, 120 * 2, 120 * 2, 0, 0),
    "layer_norm1": (0, 7 * 120, 2 * 8 * 2, 120 * 2, 120 * 2, 0, 0),
    # 8 → 8 with bias: 2·15·8·8 FLOPs + 15·8 bias adds; 64 + 8 parameters
    "q_proj": (2 * 15 * 8 * 8 + 120, 0, 72 * 2, 120 * 2, 120 * 2, 0, 0),
    "o_proj": (2 * 15 * 8 * 8 + 120, 0, 72 * 2, 120 * 2, 120 * 2, 0, 0),
    # 3 images × 2 heads × 5 × 5 = 150 scores; q and k (3·2·5·4 each) are activations
    "qk_matmul": (2 * 30 * 4 * 5, 0, 0, 2 * 3 * 2 * 5 * 4 * 2, 150 * 2, 0, 0),
    "softmax": (0, 5 * 150, 0, 150 * 2, 150 * 2, 0, 0),
    "sv_matmul": (2 * 30 * 5 * 4, 0, 0, 150 * 2 + 120 * 2, 120 * 2, 0, 0),
    "attn_add": (0, 120, 0, 2 * 120 * 2, 120 * 2, 0, 0),
    "fc1": (2 * 15 * 8 * 16 + 15 * 16, 0, (128 + 16) * 2, 120 * 2, 240 * 2, 0, 0),
    "mlp_act": (0, 8 * 240, 0, 240 * 2, 240 * 2, 0, 0),
    "fc2": (2 * 15 * 16 * 8 + 120, 0, (128 + 8) * 2, 240 * 2, 120 * 2, 0, 0),
    # CLIP's post_layernorm sees the pooled CLS token only: 3 × 8 elements
    "post_layernorm": (0, 7 * 24, 2 * 8 * 2, 24 * 2, 24 * 2, 0, 0),
}


@pytest.mark.parametrize("name", sorted(TINY_CLIP))
def test_tiny_clip_hand_counts(name):
    ops = by_name(vision_tower_ops(TINY, FP16, 3, 2, False, BUFFER))
    assert values(ops[name]) == TINY_CLIP[name]
    assert ops[name].count == (2 if ops[name].block == "encoder" else 1)


def test_tiny_clip_fused_attention_is_not_causal():
    fused = by_name(vision_tower_ops(TINY, FP16, 3, 2, True, BUFFER))["fused_attention"]
    unfused = by_name(vision_tower_ops(TINY, FP16, 3, 2, False, BUFFER))
    assert fused.tensor_flops == unfused["qk_matmul"].tensor_flops + unfused["sv_matmul"].tensor_flops
    assert fused.vector_flops == unfused["softmax"].vector_flops
    # one tile of ≤ 4 rows... T = 5 rows need 2 tiles of 4: K and V read twice, no s×s traffic
    assert fused.act_read_bytes == 3 * 2 * (5 + 2 * 2 * 5) * 4 * 2
    assert fused.act_write_bytes == 3 * 2 * 5 * 4 * 2


def test_clip_vit_l14_336_flops_per_image():
    """≈ 0.38 TFLOPs per 336-px image in 24 layers (2 FLOPs per multiply-add). Exactly:
    per layer, q/k/v/o and fc1/fc2: 2·577·(4·1024² + 2·1024·4096) = 14,520,680,448;
    their bias adds 577·(4·1024 + 4096 + 1024) = 5,317,632; q·kᵀ and scores·v
    2 · 2·16·577·64·577 = 1,363,677,184; so 15,889,675,264 per layer, × 24 =
    381,352,206,336; plus the patch embedding 2·576·588·1024 = 693,633,024:
    382,045,839,360 tensor FLOPs. Element-wise work adds 1.3 GFLOPs on the CUDA cores."""
    ops = vision_tower_ops(CLIP_VIT_L14_336, FP16, 1, 24, False, BUFFER)
    tensor = sum(op.count * op.tensor_flops for op in ops)
    assert tensor == 382_045_839_360
    assert round(tensor / 1e12, 2) == 0.38
    vector = sum(op.count * op.vector_flops for op in ops)
    assert 1.2e9 < vector < 1.4e9
    # the feature layer (-2) needs 23 of the 24 layers
    assert num_vision_layers_run(CLIP_VIT_L14_336, "feature") == 23
    feature = vision_tower_ops(CLIP_VIT_L14_336, FP16, 1, 23, False, BUFFER)
    assert sum(op.count * op.tensor_flops for op in feature) == 382_045_839_360 - 15_889_675_264
    assert "post_layernorm" not in by_name(feature)


def test_video_llava_frames_are_257_tokens():
    assert CLIP_VIT_L14_224.num_positions == 257
    ops = by_name(vision_tower_ops(CLIP_VIT_L14_224, FP16, 8, 24, False, BUFFER))
    assert ops["q_proj"].act_read_bytes == 8 * 257 * 1024 * 2


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def meta_params(model_cls, config) -> int:
    with torch.device("meta"):
        model = model_cls(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family, use_head", [("clip", True), ("siglip", True), ("siglip", False),
                                              ("dinov2", True)])
def test_weights_read_equal_the_transformers_tower(family, use_head):
    """Every parameter the forward pass reads is loaded once: the tower's weight bytes equal
    2 B × transformers' parameter count (DINOv2's mask token is never read in inference)."""
    spec = VisionSpec(hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                      num_attention_heads=4, image_size=56, patch_size=14, family=family,
                      use_head=use_head)
    common = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=56,
                  patch_size=14)
    if family == "clip":
        cls, config = transformers.CLIPVisionModel, transformers.CLIPVisionConfig(
            intermediate_size=256, **common)
    elif family == "siglip":
        cls, config = transformers.SiglipVisionModel, transformers.SiglipVisionConfig(
            intermediate_size=256, vision_use_head=use_head, **common)
    else:
        cls, config = transformers.Dinov2Model, transformers.Dinov2Config(mlp_ratio=4, **common)
    params = meta_params(cls, config)
    assert vision_params(spec) == params
    read = sum(op.count * op.weight_bytes for op in vision_tower_ops(spec, FP16, 2, 3, False, BUFFER))
    mask_token = spec.hidden_size if family == "dinov2" else 0
    assert read == 2 * (params - mask_token)


def test_clip_vit_l14_336_weights_equal_transformers():
    config = transformers.CLIPVisionConfig(hidden_size=1024, intermediate_size=4096,
                                           num_hidden_layers=24, num_attention_heads=16,
                                           image_size=336, patch_size=14)
    params = meta_params(transformers.CLIPVisionModel, config)
    assert params == 303_507_456
    read = sum(op.count * op.weight_bytes for op in vision_tower_ops(CLIP_VIT_L14_336, FP16, 1, 24,
                                                                    False, BUFFER))
    assert read == 2 * params


def test_llava_15_7b_fp16_weight_bytes():
    """2 bytes × the 7,063,427,072 parameters of llava-hf/llava-1.5-7b-hf (vocabulary 32,064)."""
    parts = weight_bytes_by_part(PRESETS["llava-1.5-7b"], FP16, FP16)
    assert sum(parts.values()) == 2 * 7_063_427_072
    assert parts["vision"] == 2 * 303_507_456
    # a 4-bit LLM leaves the vision tower and projector at 16 bits
    w4 = weight_bytes_by_part(PRESETS["llava-1.5-7b"], QuantPlan(4, 16, 16), FP16)
    assert w4["llm"] == parameter_counts(PRESETS["llava-1.5-7b"])["llm"] / 2
    assert w4["vision"] == parts["vision"] and w4["projector"] == parts["projector"]


def test_projector_hand_counts_and_weights():
    spec = ProjectorSpec(1024, 4096)
    ops = by_name(projector_ops(spec, FP16, 576))
    assert ops["linear_1"].tensor_flops == 2 * 576 * 1024 * 4096 + 576 * 4096
    assert ops["linear_2"].tensor_flops == 2 * 576 * 4096 * 4096 + 576 * 4096
    assert ops["act"].vector_flops == 8 * 576 * 4096
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(hidden_size=1024, num_attention_heads=16),
        text_config=transformers.LlamaConfig(hidden_size=4096))
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    with torch.device("meta"):
        projector = LlavaMultiModalProjector(config)
    params = sum(p.numel() for p in projector.parameters())
    assert sum(op.weight_bytes for op in ops.values()) == 2 * params


def test_builders_take_integer_arrays():
    """The sweep calls the builders with numpy arrays of image and token counts: each entry
    equals the scalar build."""
    import numpy as np

    from fpcost.costmodel.pruning import SelectionSpec
    from fpcost.costmodel.selection_cost import selection_ops

    counts = np.array([1, 3, 16])
    builders = [
        lambda n: vision_tower_ops(CLIP_VIT_L14_336, FP16, n, 24, True, BUFFER),
        lambda n: vision_tower_ops(CLIP_VIT_L14_336, FP16, n, 23, False, BUFFER),
        lambda n: selection_ops(CLIP_VIT_L14_336, SelectionSpec(), n, 24),
        lambda n: projector_ops(ProjectorSpec(1024, 4096), FP16, 576 * n),
    ]
    for build in builders:
        for i, n in enumerate(counts):
            for vector, scalar in zip(build(counts), build(int(n)), strict=True):
                for field in FIELDS:
                    assert np.broadcast_to(getattr(vector, field), counts.shape)[i] == getattr(scalar, field)

"""Hypothesis strategies for the cost model, in one place.

``llm_specs`` draws Llama-family decoders (GQA included) from tiny to larger-than-70B
widths; ``hardware_profiles`` draws devices whose ceilings are ordered as on real GPUs
(FP32 CUDA cores ≤ FP16 tensor ≤ INT8 ≤ INT4), which the monotonicity properties need.
"""

from hypothesis import strategies as st

from fpcost.costmodel.hardware import HardwareProfile
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import LLMSpec
from fpcost.costmodel.units import VALID_BITS

bits = st.sampled_from(VALID_BITS)
quant_plans = st.builds(QuantPlan, bits, bits, bits)
token_counts = st.integers(min_value=1, max_value=200_000)
batch_sizes = st.integers(min_value=1, max_value=512)


@st.composite
def llm_specs(draw):
    kv_heads = draw(st.sampled_from([1, 2, 4, 8, 16]))
    group = draw(st.sampled_from([1, 2, 4, 8]))
    head_dim = draw(st.sampled_from([32, 64, 80, 128, 256]))
    heads = kv_heads * group
    return LLMSpec(
        hidden_size=heads * head_dim,
        num_hidden_layers=draw(st.integers(1, 128)),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=draw(st.integers(1, 65_536)),
        vocab_size=draw(st.integers(1, 262_144)),
    )


@st.composite
def hardware_profiles(draw):
    rate = st.floats(min_value=1e9, max_value=1e16, allow_nan=False, allow_infinity=False)
    vector_fp32 = draw(rate)
    vector_fp16 = vector_fp32 * draw(st.floats(1, 4))
    fp16 = vector_fp16 * draw(st.floats(1, 32))
    int8 = fp16 * draw(st.floats(1, 2))
    int4 = draw(st.one_of(st.none(), st.just(int8 * 2)))
    return HardwareProfile(
        name="random", description="drawn by hypothesis",
        memory_bytes=draw(st.floats(1e9, 1e12)),
        hbm_bandwidth_bytes_per_s=draw(st.floats(1e9, 1e13)),
        onchip_buffer_bytes=draw(st.floats(1e5, 1e8)),
        tensor_fp16_flops_per_s=fp16, tensor_int8_ops_per_s=int8,
        vector_fp16_flops_per_s=vector_fp16, vector_fp32_flops_per_s=vector_fp32,
        tensor_int4_ops_per_s=int4,
    )


accountings = st.sampled_from(["fpcost", "llm-viewer"])


# --- the multimodal pipeline (vision tower, AnyRes, pruning, decode, memory) ---

image_sizes = st.tuples(st.integers(1, 4096), st.integers(1, 4096))  # (width, height) px
output_token_counts = st.integers(min_value=0, max_value=300)
keep_ratios = st.floats(min_value=1e-3, max_value=1.0, allow_nan=False)
vision_layer_modes = st.sampled_from(["all", "feature"])


@st.composite
def vision_specs(draw):
    """ViTs from tiny to ViT-L widths, with or without CLS (SigLIP), at image sizes whose
    patch grid covers the image exactly."""
    from fpcost.costmodel.spec import VisionSpec

    heads = draw(st.sampled_from([1, 2, 4, 16]))
    patch = draw(st.sampled_from([7, 14, 16]))
    return VisionSpec(
        hidden_size=heads * draw(st.sampled_from([8, 32, 64])),
        intermediate_size=draw(st.integers(8, 4096)),
        num_hidden_layers=draw(st.integers(6, 32)),  # ≥ 6: the default selection reads layer -6
        num_attention_heads=heads,
        image_size=patch * draw(st.integers(1, 24)),
        patch_size=patch,
        family=draw(st.sampled_from(["clip", "siglip", "dinov2"])),
        use_head=draw(st.booleans()),
    )


@st.composite
def multimodal_models(draw):
    """LLaVA-style models: an LLM from ``llm_specs``, a ViT, the projector between them;
    one image (llava), several frames (video-llava) or AnyRes crops (llava-next)."""
    from fpcost.costmodel.anyres import anyres_layout, default_image_size
    from fpcost.costmodel.spec import ModelSpec, ProjectorSpec

    llm, vision = draw(llm_specs()), draw(vision_specs())
    kind = draw(st.sampled_from(["llava", "video-llava", "llava-next"]))
    extra: dict = {}
    tokens = vision.num_patches
    if kind == "video-llava":
        extra = {"num_frames": draw(st.integers(1, 8)), "num_vision_towers": 2}
        tokens *= extra["num_frames"]
    elif kind == "llava-next":
        side = vision.image_size
        grid = draw(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=5))
        pins = tuple((side * r, side * c) for r, c in grid)
        extra = {"image_grid_pinpoints": pins}
        tokens = anyres_layout(*default_image_size(pins), pins, side, vision.patch_size).num_visual_tokens
    return ModelSpec(name="drawn", kind=kind, llm=llm, vision=vision,
                     projector=ProjectorSpec(vision.hidden_size, llm.hidden_size),
                     default_num_visual_tokens=tokens, **extra)


# --- Sweeps (fpcost.costmodel.sweep) ----------------------------------------------------
# Grids stay small (a few values per axis) and token counts and batches moderate, so that a
# random LLM's integer counts fit the sweep's exact int64 arithmetic in most draws.

keep_ratio_lists = st.lists(keep_ratios, min_size=1, max_size=5)
visual_token_lists = st.lists(st.integers(0, 4096), min_size=1, max_size=5)
sweep_batch_lists = st.lists(st.integers(1, 64), min_size=1, max_size=3)
text_token_counts = st.integers(min_value=1, max_value=256)


@st.composite
def multimodal_specs(draw):
    """A LLaVA-style ``ModelSpec``: a random Llama-family LLM behind the CLIP-336 tower,
    with a random default number of visual tokens."""
    from fpcost.costmodel.presets import CLIP_VIT_L14_336
    from fpcost.costmodel.spec import ModelSpec, ProjectorSpec

    llm = draw(llm_specs())
    return ModelSpec(
        name=f"random-{llm.hidden_size}x{llm.num_hidden_layers}", kind="llava", llm=llm,
        vision=CLIP_VIT_L14_336, projector=ProjectorSpec(1024, llm.hidden_size),
        default_num_visual_tokens=draw(st.integers(1, 4096)),
    )


preset_names = st.sampled_from(["llava-1.5-7b", "llava-1.5-13b", "videollava", "llava-next-7b"])
sweep_models = st.one_of(preset_names, multimodal_specs())

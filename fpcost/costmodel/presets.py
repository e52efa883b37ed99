"""Built-in models, with the llava-hf / LanguageBind Hugging Face configs' values.

Sources: llava-hf/llava-1.5-7b-hf, llava-hf/llava-1.5-13b-hf,
LanguageBind/Video-LLaVA-7B-hf and llava-hf/llava-v1.6-vicuna-7b-hf ``config.json``
(vocabulary 32,064 = Vicuna's 32,000 plus the added image/pad tokens, padded to 64).
"""

from __future__ import annotations

from dataclasses import replace

from .errors import ConfigError
from .families import family_for_model_type
from .families.llava_onevision_presets import PRESET_CONFIGS as ONEVISION_PRESET_CONFIGS
from .families.qwen_vl_presets import PRESET_CONFIGS as QWEN_VL_PRESET_CONFIGS
from .families.qwen_vl_presets import qwen_vl_preset
from .spec import LLMSpec, ModelSpec, ProjectorSpec, VisionSpec

VICUNA_7B = LLMSpec(
    hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
    intermediate_size=11008, vocab_size=32064, name="vicuna-7b",
)
VICUNA_13B = LLMSpec(
    hidden_size=5120, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
    intermediate_size=13824, vocab_size=32064, name="vicuna-13b",
)
# CLIP ViT-L/14 at 336 px (LLaVA-1.5, LLaVA-NeXT) and at 224 px (Video-LLaVA's towers).
CLIP_VIT_L14_336 = VisionSpec(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    image_size=336, patch_size=14, family="clip", feature_layer=-2, name="clip-vit-l14-336",
)
CLIP_VIT_L14_224 = VisionSpec(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    image_size=224, patch_size=14, family="clip", feature_layer=-2, name="clip-vit-l14-224",
)
# llava-v1.6 AnyRes resolutions, [height, width] as in image_grid_pinpoints. Without an
# image size, LLaVA-NeXT's vision side is costed for the largest pinpoint (672 x 672: 5
# crops, anyres.py) and the LLM for the nominal 2880 tokens.
LLAVA_NEXT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))

PRESETS: dict[str, ModelSpec] = {
    "llava-1.5-7b": ModelSpec(
        name="llava-1.5-7b", kind="llava", llm=VICUNA_7B, vision=CLIP_VIT_L14_336,
        projector=ProjectorSpec(1024, 4096), default_num_visual_tokens=576,
        description="LLaVA-1.5 7B: CLIP ViT-L/14-336 + Vicuna-7B, 576 visual tokens",
    ),
    "llava-1.5-13b": ModelSpec(
        name="llava-1.5-13b", kind="llava", llm=VICUNA_13B, vision=CLIP_VIT_L14_336,
        projector=ProjectorSpec(1024, 5120), default_num_visual_tokens=576,
        description="LLaVA-1.5 13B: CLIP ViT-L/14-336 + Vicuna-13B, 576 visual tokens",
    ),
    "videollava": ModelSpec(
        name="videollava", kind="video-llava", llm=VICUNA_7B, vision=CLIP_VIT_L14_224,
        projector=ProjectorSpec(1024, 4096), default_num_visual_tokens=8 * 256, num_frames=8,
        num_vision_towers=2,
        description="Video-LLaVA 7B: 8 frames x 256 visual tokens + Vicuna-7B",
    ),
    "llava-next-7b": ModelSpec(
        name="llava-next-7b", kind="llava-next", llm=VICUNA_7B, vision=CLIP_VIT_L14_336,
        projector=ProjectorSpec(1024, 4096), default_num_visual_tokens=2880,
        image_grid_pinpoints=LLAVA_NEXT_PINPOINTS,
        description="LLaVA-NeXT (v1.6) Vicuna-7B: AnyRes, nominally 5 x 576 = 2880 visual tokens "
                    "(base + 2x2 crops); --image-size WxH gives transformers' exact count "
                    "(672x672: 2928 with unpadding and newline tokens)",
    ),
}
# Qwen2-VL / Qwen2.5-VL: their published config.json sizes (families/qwen_vl_presets.py),
# read by their families; the default tokens are those of a 1280x720 image (1196).
for _name in QWEN_VL_PRESET_CONFIGS:
    _qwen = qwen_vl_preset(_name)
    PRESETS[_name] = family_for_model_type(_qwen.vision.model_type).model_spec(
        _qwen, f"{_name}: dynamic resolution (14-px patches, 2x2 merger); --image-size WxH sets "
               "the image [default 1280x720: 1196 visual tokens], --min-pixels / --max-pixels "
               "the resize limits")
# LLaVA-OneVision: the llava-hf config.json sizes (families/llava_onevision_presets.py), read
# by its family; the default tokens are those of a 1280x720 image (5967).
for _name, _config in ONEVISION_PRESET_CONFIGS.items():
    _spec = family_for_model_type("llava_onevision").read_config(_config, _name, f"preset {_name}")
    PRESETS[_name] = replace(
        _spec, description=f"{_name}: SigLIP-so400m + Qwen2, AnyRes-max-9 (384-px crops, "
                           "packed, shrunk above 9 crops' tokens); --image-size WxH sets the "
                           f"image [default 1280x720: {_spec.default_num_visual_tokens} visual tokens]")
ALIASES = {"video-llava-7b": "videollava", "video-llava": "videollava"}


def model_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> ModelSpec:
    """The built-in model called ``name`` (case-insensitive; aliases accepted)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        valid = ", ".join(model_names() + sorted(ALIASES))
        raise ConfigError(f"unknown model {name!r}; valid: {valid} (or --config PATH)")
    return PRESETS[key]

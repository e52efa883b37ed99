"""Read a Hugging Face ``config.json`` into a ``ModelSpec`` with the json module only
(loading transformers for a config costs seconds; see DESIGN.md §2).

Accepted: a LLaVA-family config (``llava``, ``video_llava``, ``llava_next``) with
``text_config`` and ``vision_config``, or a bare Llama-family LLM config. llava-hf files
store only the fields that differ from transformers' defaults inside their sub-configs, so
for a sub-config with a known ``model_type`` the missing fields take transformers' default
values (listed below); a bare top-level LLM config must name every size itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from .anyres import anyres_layout, default_image_size
from .errors import ConfigError
from .spec import LLMSpec, ModelSpec, ProjectorSpec, VisionSpec

LLM_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "vocab_size")
# transformers' defaults (LlamaConfig, MistralConfig) for fields a sub-config may omit.
LLM_DEFAULTS = {
    "llama": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "intermediate_size": 11008, "vocab_size": 32000},
    "mistral": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 32000},
}
VISION_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "image_size", "patch_size")
VISION_MODEL_TYPES = {"clip_vision_model": "clip", "siglip_vision_model": "siglip", "dinov2": "dinov2"}
# transformers' defaults (CLIPVisionConfig, SiglipVisionConfig, Dinov2Config).
VISION_DEFAULTS = {
    "clip": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12, "image_size": 224, "patch_size": 32},
    "siglip": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
               "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
    "dinov2": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
               "image_size": 224, "patch_size": 14},
}
LLAVA_KINDS = {"llava": "llava", "video_llava": "video-llava", "llava_next": "llava-next"}
VIDEO_LLAVA_FRAMES = 8  # Video-LLaVA samples 8 frames per video


def load_config_json(path: str | Path) -> ModelSpec:
    """``ModelSpec`` for the config.json at ``path`` (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path.name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name} must hold a JSON object, not {type(data).__name__}")
    return spec_from_config(data, name=path.parent.name or path.stem, origin=path.name)


def spec_from_config(data: dict, name: str = "custom", origin: str = "config.json") -> ModelSpec:
    if "text_config" in data or "vision_config" in data:
        return _multimodal_spec(data, name, origin)
    llm = _llm_spec(data, f"{origin}", name, use_defaults=False)
    return ModelSpec(name=name, kind="llm", llm=llm, description=f"LLM from {origin}")


def _get_int(cfg: dict, key: str, where: str, defaults: dict) -> int:
    if key in cfg:
        value = cfg[key]
    elif key in defaults:
        value = defaults[key]
    else:
        raise ConfigError(f"{where}: required field {key!r} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: {key} = {value!r} must be a positive integer")
    return value


def _llm_spec(cfg: dict, where: str, name: str, use_defaults: bool) -> LLMSpec:
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where} must be a JSON object")
    model_type = cfg.get("model_type")
    defaults = LLM_DEFAULTS.get(model_type, {}) if use_defaults else {}
    values = {key: _get_int(cfg, key, where, defaults) for key in LLM_FIELDS}
    kv_heads = cfg.get("num_key_value_heads", defaults.get("num_key_value_heads"))
    values["num_key_value_heads"] = values["num_attention_heads"] if kv_heads is None else kv_heads
    if cfg.get("head_dim") is not None:
        values["head_dim"] = cfg["head_dim"]
    for flag in ("tie_word_embeddings", "attention_bias", "mlp_bias"):
        values[flag] = bool(cfg.get(flag, False))
    return LLMSpec(**values, name=name)


def _vision_spec(cfg: dict, where: str, feature_layer: int) -> VisionSpec:
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where} must be a JSON object")
    model_type = cfg.get("model_type")
    if model_type not in VISION_MODEL_TYPES:
        raise ConfigError(
            f"{where}: vision tower model_type {model_type!r} is not a supported ViT; valid: "
            f"{', '.join(VISION_MODEL_TYPES)}"
        )
    family = VISION_MODEL_TYPES[model_type]
    defaults = VISION_DEFAULTS[family]
    values = {key: _get_int(cfg, key, where, defaults) for key in VISION_FIELDS if
              key != "intermediate_size" or family != "dinov2"}
    if family == "dinov2":  # DINOv2 gives the MLP width as a ratio
        values["intermediate_size"] = int(values["hidden_size"] * cfg.get("mlp_ratio", 4))
    values["num_channels"] = _get_int(cfg, "num_channels", where, {"num_channels": 3})
    values["use_head"] = bool(cfg.get("vision_use_head", True))  # SiglipVisionConfig's default
    return VisionSpec(**values, family=family, feature_layer=feature_layer, name=f"{family}-vision")


def _multimodal_spec(data: dict, name: str, origin: str) -> ModelSpec:
    model_type = data.get("model_type")
    if model_type not in LLAVA_KINDS:
        raise ConfigError(
            f"{origin}: model_type {model_type!r} is not a supported multimodal model; valid: "
            f"{', '.join(LLAVA_KINDS)}"
        )
    for key in ("text_config", "vision_config"):
        if key not in data:
            raise ConfigError(f"{origin}: required field {key!r} is missing")
    feature_layer = data.get("vision_feature_layer", -2)
    if not isinstance(feature_layer, int) or isinstance(feature_layer, bool):
        raise ConfigError(
            f"{origin}: vision_feature_layer = {feature_layer!r} must be one integer layer index"
        )
    llm = _llm_spec(data["text_config"], f"{origin} text_config", f"{name}-llm", use_defaults=True)
    vision = _vision_spec(data["vision_config"], f"{origin} vision_config", feature_layer)
    strategy = data.get("vision_feature_select_strategy", "default")
    keep_cls = strategy == "full"
    tokens_per_image = vision.num_patches + int(keep_cls and vision.has_cls_token)
    kind = LLAVA_KINDS[model_type]
    extra: dict = {}
    if kind == "video-llava":
        extra = {"num_frames": VIDEO_LLAVA_FRAMES, "num_vision_towers": 2}
        visual_tokens = VIDEO_LLAVA_FRAMES * vision.num_patches
    elif kind == "llava-next":
        pinpoints = tuple(tuple(p) for p in data.get("image_grid_pinpoints", ()))
        if not pinpoints or not all(len(p) == 2 and all(isinstance(v, int) and v > 0 for v in p)
                                    for p in pinpoints):
            raise ConfigError(f"{origin}: image_grid_pinpoints must be a list of [height, width] pairs")
        extra = {"image_grid_pinpoints": pinpoints}
        # nominal count: base image + the largest pinpoint's crops, before unpadding and
        # newline tokens (2880 for llava-v1.6); --image-size gives transformers' exact count
        width, height = default_image_size(pinpoints)
        num_crops = anyres_layout(width, height, pinpoints, vision.image_size, vision.patch_size,
                                  tokens_per_image - vision.num_patches).num_crops
        visual_tokens = num_crops * tokens_per_image
    else:
        visual_tokens = tokens_per_image
    return ModelSpec(
        name=name, kind=kind, llm=llm, vision=vision,
        projector=ProjectorSpec(vision.hidden_size, llm.hidden_size),
        default_num_visual_tokens=visual_tokens, description=f"{kind} from {origin}",
        vision_feature_select_strategy=strategy if isinstance(strategy, str) else repr(strategy),
        **extra,
    )

"""Readers of the parts of a Hugging Face ``config.json`` that several model families share:
one helper per kind of JSON value, a Llama-family ``text_config`` (or a bare LLM config) and
a ViT ``vision_config`` (CLIP, SigLIP, DINOv2), and the fields every LLaVA-style config has.

llava-hf files store only the fields that differ from transformers' defaults inside their
sub-configs, so for a sub-config with a known ``model_type`` the missing fields take
transformers' default values (listed below); a bare top-level LLM config must name every
size itself.

Every field read is checked for its JSON type and range by one helper per kind of value
(``get_int``, ``get_bool``, ``get_choice``, ``get_number``, ``get_object``): ``"false"`` is
not a boolean, ``4.0`` or ``"4"`` not an integer, and the error names the file, the key,
the value and what is valid.
"""

from __future__ import annotations

import math
from dataclasses import replace

from .errors import ConfigError
from .spec import (
    INT_LIMITS,
    LLMSpec,
    ProjectorSpec,
    VisionSpec,
    check_bool,
    check_int,
    feature_layer_range,
    show,
)

LLM_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "vocab_size")
LLM_FLAGS = ("tie_word_embeddings", "attention_bias", "mlp_bias")  # all default to false
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
# LlavaConfig's sub-config types when a sub-config names none.
DEFAULT_TEXT_MODEL_TYPE = "llama"
DEFAULT_VISION_MODEL_TYPE = "clip_vision_model"
DINOV2_MLP_RATIO = (4, 64)  # Dinov2Config's default, and the largest ratio accepted
FEATURE_SELECT_STRATEGIES = ("default", "full")  # drop the CLS token / keep it

REQUIRED = object()  # marks a field without a default


# --- one helper per kind of value ---------------------------------------------------------


def get_value(cfg: dict, key: str, where: str, default: object) -> object:
    """``cfg[key]``, or ``default``; a missing field without a default is an error."""
    if key in cfg:
        return cfg[key]
    if default is REQUIRED:
        raise ConfigError(f"{where}: required field {key!r} is missing")
    return default


def get_int(cfg: dict, key: str, where: str, default: object = REQUIRED) -> int:
    """A JSON integer (not a boolean, float or string) within ``INT_LIMITS[key]``."""
    return check_int(where, key, get_value(cfg, key, where, default))


def get_bool(cfg: dict, key: str, where: str, default: bool) -> bool:
    """A JSON boolean: ``"false"`` and ``0`` are refused rather than read as true/false."""
    return check_bool(where, key, get_value(cfg, key, where, default))


def get_choice(cfg: dict, key: str, where: str, choices, default: object = REQUIRED,
            noun: str = "value", label: str | None = None) -> str:
    """One of the strings ``choices`` (a list or dict is refused, not hashed)."""
    value = get_value(cfg, key, where, default)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{where}: {label or key} {show(value)} is not a supported {noun}; "
                          f"valid: {', '.join(choices)}")
    return value


def get_optional_str(cfg: dict, key: str, where: str, default: str | None) -> str | None:
    value = get_value(cfg, key, where, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: {key} = {show(value)} must be a string")
    return value


def get_number(cfg: dict, key: str, where: str, default: float, low: float, high: float) -> float:
    """A finite JSON number (integer or float, not a boolean) in (low, high]."""
    value = get_value(cfg, key, where, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} = {show(value)} must be a number in ({low:g}, {high:g}]")
    if not (math.isfinite(value) and low < value <= high):
        raise ConfigError(f"{where}: {key} = {show(value)} is out of range; valid: ({low:g}, {high:g}]")
    return value


def get_object(cfg: dict, key: str, where: str) -> dict:
    value = get_value(cfg, key, where, REQUIRED)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} = {show(value)} must be a JSON object")
    return value


# --- the shared parts ---------------------------------------------------------------------


def read_llm_spec(cfg: dict, where: str, name: str, default_model_type: str | None) -> LLMSpec:
    model_type = get_optional_str(cfg, "model_type", where, default_model_type)
    # a bare LLM config (default_model_type None) must name every size itself
    defaults = LLM_DEFAULTS.get(model_type, {}) if default_model_type else {}
    values = {key: get_int(cfg, key, where, defaults.get(key, REQUIRED)) for key in LLM_FIELDS}
    # null (or absent) is how transformers writes "as many KV heads as heads" and
    # "head_dim = hidden_size / num_attention_heads"
    if cfg.get("num_key_value_heads") is None:
        values["num_key_value_heads"] = defaults.get("num_key_value_heads",
                                                     values["num_attention_heads"])
    else:
        values["num_key_value_heads"] = get_int(cfg, "num_key_value_heads", where)
    if cfg.get("head_dim") is not None:
        values["head_dim"] = get_int(cfg, "head_dim", where)
    for flag in LLM_FLAGS:
        values[flag] = get_bool(cfg, flag, where, False)
    return LLMSpec(**values, name=name)


def read_vision_spec(cfg: dict, where: str, feature_layer: object, origin: str) -> VisionSpec:
    model_type = get_choice(cfg, "model_type", where, tuple(VISION_MODEL_TYPES),
                         DEFAULT_VISION_MODEL_TYPE, noun="ViT", label="vision tower model_type")
    family = VISION_MODEL_TYPES[model_type]
    defaults = VISION_DEFAULTS[family]
    values = {key: get_int(cfg, key, where, defaults.get(key, REQUIRED)) for key in VISION_FIELDS
              if key != "intermediate_size" or family != "dinov2"}
    if family == "dinov2":  # DINOv2 gives the MLP width as a ratio: int(hidden * mlp_ratio)
        ratio = get_number(cfg, "mlp_ratio", where, DINOV2_MLP_RATIO[0], 0, DINOV2_MLP_RATIO[1])
        width = int(values["hidden_size"] * ratio)
        low, high = INT_LIMITS["intermediate_size"]
        if not low <= width <= high:
            raise ConfigError(f"{where}: mlp_ratio = {show(ratio)} gives an MLP width of int("
                              f"{values['hidden_size']} x {show(ratio)}) = {width}; valid: {low}..{high}")
        values["intermediate_size"] = width
    values["num_channels"] = get_int(cfg, "num_channels", where, 3)
    values["use_head"] = get_bool(cfg, "vision_use_head", where, True)  # SiglipVisionConfig's default
    # hidden_states holds the embeddings and one state per layer: index -(L+1)..L
    num_layers = values["num_hidden_layers"]
    low, high = feature_layer_range(num_layers)
    if isinstance(feature_layer, bool) or not isinstance(feature_layer, int) or not (
            low <= feature_layer <= high):
        several = " (a list of layers is not supported)" if isinstance(feature_layer, list) else ""
        raise ConfigError(
            f"{origin}: vision_feature_layer = {show(feature_layer)} must be one integer layer "
            f"index in {low}..{high} for the {num_layers}-layer vision tower{several}"
        )
    return VisionSpec(**values, family=family, feature_layer=feature_layer, name=f"{family}-vision")




def read_llava_parts(data: dict, name: str, origin: str) -> tuple[LLMSpec, VisionSpec, str]:
    """What every LLaVA-style config holds: the ``text_config`` LLM, the ``vision_config``
    tower read at ``vision_feature_layer``, and ``vision_feature_select_strategy``."""
    text_where, vision_where = f"{origin} text_config", f"{origin} vision_config"
    llm = read_llm_spec(get_object(data, "text_config", origin), text_where, f"{name}-llm",
                        default_model_type=DEFAULT_TEXT_MODEL_TYPE)
    # transformers 5 ties the LM head when the top level or text_config says so (LlavaConfig)
    if get_bool(data, "tie_word_embeddings", origin, False) and not llm.tie_word_embeddings:
        llm = replace(llm, tie_word_embeddings=True)
    vision = read_vision_spec(get_object(data, "vision_config", origin), vision_where,
                              get_value(data, "vision_feature_layer", origin, -2), origin)
    strategy = get_choice(data, "vision_feature_select_strategy", origin,
                          FEATURE_SELECT_STRATEGIES, "default", noun="strategy")
    return llm, vision, strategy


def llava_projector(llm: LLMSpec, vision: VisionSpec) -> ProjectorSpec:
    """LLaVA's two-layer GELU projector from the tower's width to the LLM's."""
    return ProjectorSpec(vision.hidden_size, llm.hidden_size)

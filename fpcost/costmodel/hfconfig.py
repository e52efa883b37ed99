"""Read a Hugging Face ``config.json`` into a ``ModelSpec`` with the json module only
(loading transformers just for a config costs seconds).

Accepted: a LLaVA-family config (``llava``, ``video_llava``, ``llava_next``) with
``text_config`` and ``vision_config``, or a bare Llama-family LLM config. llava-hf files
store only the fields that differ from transformers' defaults inside their sub-configs, so
for a sub-config with a known ``model_type`` the missing fields take transformers' default
values (listed below); a bare top-level LLM config must name every size itself.

Every field read is checked for its JSON type and range by one helper per kind of value
(``_int``, ``_bool``, ``_choice``, ``_number``, ``_object``): ``"false"`` is not a boolean,
``4.0`` or ``"4"`` not an integer, and the error names the file, the key, the value and
what is valid.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

from .anyres import anyres_layout, default_image_size
from .errors import ConfigError
from .spec import (
    INT_LIMITS,
    LLMSpec,
    ModelSpec,
    ProjectorSpec,
    VisionSpec,
    check_bool,
    check_int,
    check_pinpoints,
    feature_layer_range,
    show,
)
from .units import MEBI

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
LLAVA_KINDS = {"llava": "llava", "video_llava": "video-llava", "llava_next": "llava-next"}
FEATURE_SELECT_STRATEGIES = ("default", "full")  # drop the CLS token / keep it
VIDEO_LLAVA_FRAMES = 8  # Video-LLaVA samples 8 frames per video
MAX_CONFIG_BYTES = 16 * MEBI  # real config.json files are a few KiB

_REQUIRED = object()  # marks a field without a default


def load_config_json(path: str | Path) -> ModelSpec:
    """``ModelSpec`` for the config.json at ``path`` (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    shown = show(str(path), 200)
    try:
        with path.open("rb") as handle:
            raw = handle.read(int(MAX_CONFIG_BYTES) + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {shown} does not exist") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"config file {shown} cannot be read: {reason}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {shown} is larger than {MAX_CONFIG_BYTES / MEBI:g} MiB; "
                          "a config.json is a few KiB")
    return spec_from_config(_parse_json(raw, path.name), name=path.parent.name or path.stem,
                            origin=path.name)


def _parse_json(raw: bytes, origin: str) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{origin} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except _NonFiniteConstant as exc:
        raise ConfigError(f"{origin} holds {exc}, which is not a JSON number") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{origin} is not valid JSON: arrays or objects nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ConfigError(f"{origin} is not valid JSON: {str(exc).split(':')[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a JSON object, not {type(data).__name__}")
    return data


class _NonFiniteConstant(Exception):
    """NaN, Infinity or -Infinity: Python's json module reads them, JSON has no such thing."""


def _reject_constant(name: str) -> None:
    raise _NonFiniteConstant(name)


def spec_from_config(data: dict, name: str = "custom", origin: str = "config.json") -> ModelSpec:
    """``ModelSpec`` for a parsed config.json; ``origin`` (the file name) starts every error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a JSON object, not {type(data).__name__}")
    try:
        if "text_config" in data or "vision_config" in data:
            return _multimodal_spec(data, name, origin)
        llm = _llm_spec(data, origin, name, default_model_type=None)
        return ModelSpec(name=name, kind="llm", llm=llm, description=f"LLM from {origin}")
    except ConfigError as exc:  # a spec's own checks (divisibility): say which file
        message = str(exc)
        raise ConfigError(message if message.startswith(origin) else f"{origin}: {message}") from None


# --- one helper per kind of value ---------------------------------------------------------


def _get(cfg: dict, key: str, where: str, default: object) -> object:
    """``cfg[key]``, or ``default``; a missing field without a default is an error."""
    if key in cfg:
        return cfg[key]
    if default is _REQUIRED:
        raise ConfigError(f"{where}: required field {key!r} is missing")
    return default


def _int(cfg: dict, key: str, where: str, default: object = _REQUIRED) -> int:
    """A JSON integer (not a boolean, float or string) within ``INT_LIMITS[key]``."""
    return check_int(where, key, _get(cfg, key, where, default))


def _bool(cfg: dict, key: str, where: str, default: bool) -> bool:
    """A JSON boolean: ``"false"`` and ``0`` are refused rather than read as true/false."""
    return check_bool(where, key, _get(cfg, key, where, default))


def _choice(cfg: dict, key: str, where: str, choices, default: object = _REQUIRED,
            noun: str = "value", label: str | None = None) -> str:
    """One of the strings ``choices`` (a list or dict is refused, not hashed)."""
    value = _get(cfg, key, where, default)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{where}: {label or key} {show(value)} is not a supported {noun}; "
                          f"valid: {', '.join(choices)}")
    return value


def _optional_str(cfg: dict, key: str, where: str, default: str | None) -> str | None:
    value = _get(cfg, key, where, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: {key} = {show(value)} must be a string")
    return value


def _number(cfg: dict, key: str, where: str, default: float, low: float, high: float) -> float:
    """A finite JSON number (integer or float, not a boolean) in (low, high]."""
    value = _get(cfg, key, where, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} = {show(value)} must be a number in ({low:g}, {high:g}]")
    if not (math.isfinite(value) and low < value <= high):
        raise ConfigError(f"{where}: {key} = {show(value)} is out of range; valid: ({low:g}, {high:g}]")
    return value


def _object(cfg: dict, key: str, where: str) -> dict:
    value = _get(cfg, key, where, _REQUIRED)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} = {show(value)} must be a JSON object")
    return value


# --- the model families --------------------------------------------------------------------


def _llm_spec(cfg: dict, where: str, name: str, default_model_type: str | None) -> LLMSpec:
    model_type = _optional_str(cfg, "model_type", where, default_model_type)
    # a bare LLM config (default_model_type None) must name every size itself
    defaults = LLM_DEFAULTS.get(model_type, {}) if default_model_type else {}
    values = {key: _int(cfg, key, where, defaults.get(key, _REQUIRED)) for key in LLM_FIELDS}
    # null (or absent) is how transformers writes "as many KV heads as heads" and
    # "head_dim = hidden_size / num_attention_heads"
    if cfg.get("num_key_value_heads") is None:
        values["num_key_value_heads"] = defaults.get("num_key_value_heads",
                                                     values["num_attention_heads"])
    else:
        values["num_key_value_heads"] = _int(cfg, "num_key_value_heads", where)
    if cfg.get("head_dim") is not None:
        values["head_dim"] = _int(cfg, "head_dim", where)
    for flag in LLM_FLAGS:
        values[flag] = _bool(cfg, flag, where, False)
    return LLMSpec(**values, name=name)


def _vision_spec(cfg: dict, where: str, feature_layer: object, origin: str) -> VisionSpec:
    model_type = _choice(cfg, "model_type", where, tuple(VISION_MODEL_TYPES),
                         DEFAULT_VISION_MODEL_TYPE, noun="ViT", label="vision tower model_type")
    family = VISION_MODEL_TYPES[model_type]
    defaults = VISION_DEFAULTS[family]
    values = {key: _int(cfg, key, where, defaults.get(key, _REQUIRED)) for key in VISION_FIELDS
              if key != "intermediate_size" or family != "dinov2"}
    if family == "dinov2":  # DINOv2 gives the MLP width as a ratio: int(hidden * mlp_ratio)
        ratio = _number(cfg, "mlp_ratio", where, DINOV2_MLP_RATIO[0], 0, DINOV2_MLP_RATIO[1])
        width = int(values["hidden_size"] * ratio)
        low, high = INT_LIMITS["intermediate_size"]
        if not low <= width <= high:
            raise ConfigError(f"{where}: mlp_ratio = {show(ratio)} gives an MLP width of int("
                              f"{values['hidden_size']} x {show(ratio)}) = {width}; valid: {low}..{high}")
        values["intermediate_size"] = width
    values["num_channels"] = _int(cfg, "num_channels", where, 3)
    values["use_head"] = _bool(cfg, "vision_use_head", where, True)  # SiglipVisionConfig's default
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


def _multimodal_spec(data: dict, name: str, origin: str) -> ModelSpec:
    kind = LLAVA_KINDS[_choice(data, "model_type", origin, tuple(LLAVA_KINDS),
                               noun="multimodal model")]
    text_where, vision_where = f"{origin} text_config", f"{origin} vision_config"
    llm = _llm_spec(_object(data, "text_config", origin), text_where, f"{name}-llm",
                    default_model_type=DEFAULT_TEXT_MODEL_TYPE)
    # transformers 5 ties the LM head when the top level or text_config says so (LlavaConfig)
    if _bool(data, "tie_word_embeddings", origin, False) and not llm.tie_word_embeddings:
        llm = replace(llm, tie_word_embeddings=True)
    vision = _vision_spec(_object(data, "vision_config", origin), vision_where,
                          _get(data, "vision_feature_layer", origin, -2), origin)
    strategy = _choice(data, "vision_feature_select_strategy", origin, FEATURE_SELECT_STRATEGIES,
                       "default", noun="strategy")
    keep_cls = strategy == "full"
    tokens_per_image = vision.num_patches + int(keep_cls and vision.has_cls_token)
    extra: dict = {}
    if kind == "video-llava":
        extra = {"num_frames": VIDEO_LLAVA_FRAMES, "num_vision_towers": 2}
        visual_tokens = VIDEO_LLAVA_FRAMES * vision.num_patches
    elif kind == "llava-next":
        pinpoints = check_pinpoints(origin, _get(data, "image_grid_pinpoints", origin, _REQUIRED),
                                    vision.image_size)
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
        vision_feature_select_strategy=strategy, **extra,
    )

"""Specs of Qwen2-VL / Qwen2.5-VL and the reader of their ``config.json``.

Field names are transformers' (``Qwen2VLVisionConfig``, ``Qwen2_5_VLVisionConfig``), and they
differ between the two versions:

| meaning                      | Qwen2-VL ``vision_config``  | Qwen2.5-VL ``vision_config`` |
|------------------------------|-----------------------------|------------------------------|
| ViT width                    | ``embed_dim`` (1280)        | ``hidden_size`` (1280)       |
| merger output = LLM width    | ``hidden_size``             | ``out_hidden_size``          |
| MLP width                    | int(embed_dim · mlp_ratio)  | ``intermediate_size`` (3420) |
| MLP                          | fc1, quick GELU, fc2        | SwiGLU gate/up/down, biases  |
| norms (blocks and merger)    | LayerNorm                   | RMSNorm                      |
| attention                    | full, per image             | ``window_size`` px windows   |

Qwen2.5-VL's blocks listed in ``fullatt_block_indexes`` attend over the whole image.

The LLM is Qwen2: the text fields sit at the top level of the released (flat) configs, or
in ``text_config`` where transformers 5's ``save_pretrained`` writes them. Qwen2's attention
has q/k/v biases and a bias-free o_proj, always (no config flag); head_dim is always
hidden_size / num_attention_heads (a ``head_dim`` key is ignored, as transformers does).
Missing fields take transformers' defaults, as for the LLaVA sub-configs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..spec import INT_LIMITS, MAX_IMAGE_SIDE, MAX_WIDTH, LLMSpec, check_bool, check_int, show
from .qwen_vl_layout import PATCH_SIZE, SPATIAL_MERGE_SIZE, TEMPORAL_PATCH_SIZE

QWEN2_VL = "qwen2_vl"
QWEN2_5_VL = "qwen2_5_vl"
MODEL_TYPES = (QWEN2_VL, QWEN2_5_VL)
MAX_DEPTH = 2**14
MAX_MLP_RATIO = 64

# transformers' defaults (Qwen2VLVisionConfig, Qwen2_5_VLVisionConfig, Qwen2VLTextConfig =
# Qwen2_5_VLTextConfig: the 72B sizes). Qwen2_5_VLVisionConfig's default hidden_size is 3584,
# not the released towers' 1280 (their config.json files all state 1280).
VISION_DEFAULTS = {
    QWEN2_VL: {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "mlp_ratio": 4,
               "num_heads": 16},
    QWEN2_5_VL: {"depth": 32, "hidden_size": 3584, "out_hidden_size": 3584,
                 "intermediate_size": 3420, "num_heads": 16, "window_size": 112,
                 "fullatt_block_indexes": [7, 15, 23, 31]},
}
TEXT_DEFAULTS = {"vocab_size": 152064, "hidden_size": 8192, "intermediate_size": 29568,
                 "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8}
TEXT_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "vocab_size")


@dataclass(frozen=True)
class QwenVisionSpec:
    """A Qwen2-VL or Qwen2.5-VL vision tower with its patch merger.

    ``hidden_size`` is the ViT width (Qwen2-VL's ``embed_dim``); ``out_hidden_size`` the
    merger's output (the LLM width). ``fullatt_block_indexes`` is empty for Qwen2-VL, whose
    blocks all attend over the whole image; indexes at or past ``depth`` never run (as in
    transformers, which a reduced-depth test model relies on)."""

    model_type: str
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int = PATCH_SIZE
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE
    spatial_merge_size: int = SPATIAL_MERGE_SIZE
    in_channels: int = 3
    window_size: int | None = None
    fullatt_block_indexes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        owner = f"{self.model_type} vision_config"
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type {show(self.model_type)} is not a Qwen-VL family; "
                              f"valid: {', '.join(MODEL_TYPES)}")
        for name, high in (("depth", MAX_DEPTH), ("hidden_size", MAX_WIDTH),
                           ("intermediate_size", MAX_WIDTH), ("num_heads", MAX_DEPTH),
                           ("out_hidden_size", MAX_WIDTH), ("patch_size", MAX_IMAGE_SIDE),
                           ("temporal_patch_size", 2**6), ("spatial_merge_size", 2**6),
                           ("in_channels", 2**10)):
            check_int(owner, name, getattr(self, name), 1, high)
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"{owner}: width ({self.hidden_size}) must be divisible by "
                              f"num_heads ({self.num_heads})")
        if self.model_type == QWEN2_5_VL:
            check_int(owner, "window_size", self.window_size, 1, MAX_IMAGE_SIDE)
            unit = self.spatial_merge_size * self.patch_size
            if self.window_size < unit:
                raise ConfigError(f"{owner}: window_size = {self.window_size} must be at least "
                                  f"spatial_merge_size x patch_size = {unit} px")
        elif self.window_size is not None or self.fullatt_block_indexes:
            raise ConfigError(f"{owner}: Qwen2-VL has no attention windows")
        for index in self.fullatt_block_indexes:
            check_int(owner, "fullatt_block_indexes", index, 0, MAX_DEPTH)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def windowed(self) -> bool:
        return self.model_type == QWEN2_5_VL

    @property
    def num_full_attention_blocks(self) -> int:
        """Blocks attending over each whole image: all of Qwen2-VL's; Qwen2.5-VL's listed ones."""
        if not self.windowed:
            return self.depth
        return len({i for i in self.fullatt_block_indexes if i < self.depth})

    @property
    def num_window_attention_blocks(self) -> int:
        return self.depth - self.num_full_attention_blocks

    @property
    def patch_input_size(self) -> int:
        """Inputs of one patch into the Conv3d: channels × 2 frames × 14 × 14 = 1176."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def merger_hidden_size(self) -> int:
        """Width of the merger's concatenated 2×2 group: 4 × 1280 = 5120."""
        return self.hidden_size * self.spatial_merge_size**2


@dataclass(frozen=True)
class QwenVLSpec:
    """A Qwen-VL model: its vision tower with merger, and its Qwen2 LLM.

    ``llm`` is an ``LLMSpec`` with ``attention_bias`` false because that flag means biases on
    q, k, v *and* o; Qwen2 has them on q, k, v only (``qkv_bias``), counted by this family."""

    name: str
    vision: QwenVisionSpec
    llm: LLMSpec
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        if self.vision.out_hidden_size != self.llm.hidden_size:
            raise ConfigError(f"{self.name}: the vision merger's output width "
                              f"({self.vision.out_hidden_size}) must equal the LLM's hidden_size "
                              f"({self.llm.hidden_size})")


# --- reading config.json -------------------------------------------------------------------


def _value(cfg: dict, key: str, where: str, defaults: dict) -> object:
    if key in cfg:
        return cfg[key]
    if key in defaults:
        return defaults[key]
    raise ConfigError(f"{where}: required field {key!r} is missing")


def _int(cfg, key, where, defaults, low=1, high=MAX_WIDTH) -> int:
    return check_int(where, key, _value(cfg, key, where, defaults), low, high)


def _object(cfg: dict, key: str, where: str) -> dict:
    value = cfg.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} = {show(value)} must be a JSON object")
    return value


def _vision_spec(cfg: dict, model_type: str, where: str) -> QwenVisionSpec:
    defaults = VISION_DEFAULTS[model_type]
    common = {
        "depth": _int(cfg, "depth", where, defaults, high=MAX_DEPTH),
        "num_heads": _int(cfg, "num_heads", where, defaults, high=MAX_DEPTH),
        "patch_size": _int(cfg, "patch_size", where, {"patch_size": PATCH_SIZE}, high=MAX_IMAGE_SIDE),
        "temporal_patch_size": _int(cfg, "temporal_patch_size", where,
                                    {"temporal_patch_size": TEMPORAL_PATCH_SIZE}, high=2**6),
        "spatial_merge_size": _int(cfg, "spatial_merge_size", where,
                                   {"spatial_merge_size": SPATIAL_MERGE_SIZE}, high=2**6),
        # released configs also carry "in_chans": 3, which transformers ignores
        "in_channels": _int(cfg, "in_channels", where, {"in_channels": 3}, high=2**10),
    }
    if model_type == QWEN2_VL:
        width = _int(cfg, "embed_dim", where, defaults)
        ratio = _value(cfg, "mlp_ratio", where, defaults)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (
                math.isfinite(ratio) and 0 < ratio <= MAX_MLP_RATIO):
            raise ConfigError(f"{where}: mlp_ratio = {show(ratio)} must be a number in "
                              f"(0, {MAX_MLP_RATIO}]")
        mlp = int(width * ratio)  # VisionMlp's width, as Qwen2VLVisionBlock computes it
        if mlp < 1:
            raise ConfigError(f"{where}: mlp_ratio = {show(ratio)} gives an MLP width of {mlp}")
        return QwenVisionSpec(model_type, hidden_size=width, intermediate_size=mlp,
                              out_hidden_size=_int(cfg, "hidden_size", where, defaults), **common)
    indexes = _value(cfg, "fullatt_block_indexes", where, defaults)
    if not isinstance(indexes, (list, tuple)):
        raise ConfigError(f"{where}: fullatt_block_indexes = {show(indexes)} must be a list of "
                          f"block indexes")
    return QwenVisionSpec(
        model_type,
        hidden_size=_int(cfg, "hidden_size", where, defaults),
        intermediate_size=_int(cfg, "intermediate_size", where, defaults),
        out_hidden_size=_int(cfg, "out_hidden_size", where, defaults),
        window_size=_int(cfg, "window_size", where, defaults, high=MAX_IMAGE_SIDE),
        fullatt_block_indexes=tuple(check_int(where, "fullatt_block_indexes", i, 0, MAX_DEPTH)
                                    for i in indexes),
        **common,
    )


def _llm_spec(text: dict, tie: bool, where: str, name: str) -> LLMSpec:
    values = {key: _int(text, key, where, TEXT_DEFAULTS, *INT_LIMITS[key]) for key in TEXT_FIELDS}
    kv = text.get("num_key_value_heads", TEXT_DEFAULTS["num_key_value_heads"])
    values["num_key_value_heads"] = (values["num_attention_heads"] if kv is None else
                                     check_int(where, "num_key_value_heads", kv))
    if check_bool(where, "use_sliding_window", text.get("use_sliding_window", False)):
        raise ConfigError(f"{where}: use_sliding_window = true is not supported (the released "
                          "Qwen2-VL / Qwen2.5-VL models attend over the whole sequence)")
    return LLMSpec(**values, tie_word_embeddings=tie, name=f"{name}-llm")


def qwen_vl_spec_from_config(data: dict, name: str = "custom",
                             origin: str = "config.json") -> QwenVLSpec:
    """``QwenVLSpec`` for a parsed Qwen2-VL / Qwen2.5-VL config.json; errors start with
    ``origin`` and name the key, the value and what is valid."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a JSON object, not {type(data).__name__}")
    model_type = data.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{origin}: model_type {show(model_type)} is not a Qwen-VL model; "
                          f"valid: {', '.join(MODEL_TYPES)}")
    try:
        vision = _vision_spec(_object(data, "vision_config", origin), model_type,
                              f"{origin} vision_config")
        # transformers 5 nests the text part in text_config; the released files are flat
        nested = "text_config" in data and data["text_config"] is not None
        text = _object(data, "text_config", origin) if nested else data
        text_where = f"{origin} text_config" if nested else origin
        # a tie in text_config (pre-5 saves) ties the head too, as Qwen2VLConfig forwards it
        tie = check_bool(origin, "tie_word_embeddings", data.get("tie_word_embeddings", False))
        if nested:
            tie = check_bool(text_where, "tie_word_embeddings",
                             text.get("tie_word_embeddings", False)) or tie
        llm = _llm_spec(text, tie, text_where, name)
        return QwenVLSpec(name=name, vision=vision, llm=llm)
    except ConfigError as exc:  # a spec's own checks: say which file
        message = str(exc)
        raise ConfigError(message if message.startswith(origin) else f"{origin}: {message}") from None

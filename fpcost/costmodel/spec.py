"""Model specifications: frozen dataclasses with Hugging Face field names.

``LLMSpec`` mirrors a Llama-family ``text_config``; ``VisionSpec`` a ViT ``vision_config``
(CLIP, SigLIP, DINOv2); ``ProjectorSpec`` LLaVA's two-layer GELU projector. ``ModelSpec``
ties them together with the model's default visual-token count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError

# Valid range of every size a spec holds, by Hugging Face field name. The upper bounds are
# far above any released model (widths reach 16,384 and 53,248, vocabularies 262,144, depth
# 126, images 1,024 px) yet keep every count the cost model derives from them exact in
# int64 and float64.
MAX_WIDTH = 2**20
MAX_IMAGE_SIDE = 2**14  # pixels
MAX_PINPOINTS = 1024
INT_LIMITS = {
    "hidden_size": (1, MAX_WIDTH),
    "intermediate_size": (1, MAX_WIDTH),
    "head_dim": (1, MAX_WIDTH),
    "num_hidden_layers": (1, 2**14),
    "num_attention_heads": (1, 2**14),
    "num_key_value_heads": (1, 2**14),
    "vocab_size": (1, 2**24),
    "image_size": (1, MAX_IMAGE_SIDE),
    "patch_size": (1, MAX_IMAGE_SIDE),
    "num_channels": (1, 2**10),
    "vision_hidden_size": (1, MAX_WIDTH),
    "text_hidden_size": (1, MAX_WIDTH),
    "num_frames": (1, 2**14),
    "num_vision_towers": (1, 2**4),
}


def show(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so that a one-line error stays short
    (and never converts a huge integer to text, which Python refuses past 4,300 digits)."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"  # log10(2)
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_int(owner: str, name: str, value: object, low: int | None = None,
              high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in [low, high] (default: ``INT_LIMITS[name]``),
    else a ``ConfigError`` naming ``owner``, the field, the value and the valid range."""
    if low is None or high is None:
        low, high = INT_LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}: {name} = {show(value)} must be an integer in {low}..{high}")
    if not low <= value <= high:
        raise ConfigError(f"{owner}: {name} = {show(value)} is out of range; valid: {low}..{high}")
    return value


def check_bool(owner: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: {name} = {show(value)} must be true or false (a boolean)")
    return value


def feature_layer_range(num_hidden_layers: int) -> tuple[int, int]:
    """Valid ``vision_feature_layer`` indices: ``hidden_states`` holds the embedding output
    plus one state per layer, L + 1 in all, indexed from -(L + 1) to L."""
    return -(num_hidden_layers + 1), num_hidden_layers


def _require_positive_int(owner: str, name: str, value: object) -> None:
    check_int(owner, name, value)


@dataclass(frozen=True)
class LLMSpec:
    """A Llama-family decoder: RMSNorm, rotary attention (GQA allowed), SwiGLU MLP."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    head_dim: int | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    name: str = "llm"

    def __post_init__(self) -> None:
        for attr in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "vocab_size",
        ):
            _require_positive_int(self.name, attr, getattr(self, attr))
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(
                    f"{self.name}: hidden_size ({self.hidden_size}) must be divisible by "
                    f"num_attention_heads ({self.num_attention_heads})"
                )
        else:
            _require_positive_int(self.name, "head_dim", self.head_dim)
        for flag in ("tie_word_embeddings", "attention_bias", "mlp_bias"):
            check_bool(self.name, flag, getattr(self, flag))
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"{self.name}: num_attention_heads ({self.num_attention_heads}) must be "
                f"divisible by num_key_value_heads ({self.num_key_value_heads})"
            )

    @property
    def resolved_head_dim(self) -> int:
        """Per-head width: ``head_dim`` if given, else hidden_size / num_attention_heads."""
        if self.head_dim is not None:
            return self.head_dim
        return self.hidden_size // self.num_attention_heads

    @property
    def q_size(self) -> int:
        """Width of the concatenated query heads (= hidden_size for classic Llama)."""
        return self.num_attention_heads * self.resolved_head_dim

    @property
    def kv_size(self) -> int:
        """Width of the concatenated key (or value) heads."""
        return self.num_key_value_heads * self.resolved_head_dim


@dataclass(frozen=True)
class ViTTraits:
    """What tells the ViT towers fpcost costs apart, as transformers builds them
    (CLIPVisionModel, SiglipVisionModel, Dinov2Model): the one table the tower's operators
    (vision.py) and parameter counts (params.py) read instead of testing a tower's name."""

    cls_token: bool  # a CLS token prepended to the patches (a parameter, and one position)
    mask_token: bool  # DINOv2's mask token parameter
    patch_bias: bool  # the patch convolution has a bias
    pre_layernorm: bool  # CLIP's pre_layrnorm after the embeddings
    layer_scale: bool  # DINOv2's two LayerScale vectors per layer
    final_norm: str  # the last norm's module name
    final_norm_on_all_tokens: bool  # False: CLIP norms the pooled CLS output only
    attention_pool_head: bool  # SigLIP's attention-pooling head (when ``use_head``)


VIT_TRAITS = {
    "clip": ViTTraits(cls_token=True, mask_token=False, patch_bias=False, pre_layernorm=True,
                      layer_scale=False, final_norm="post_layernorm",
                      final_norm_on_all_tokens=False, attention_pool_head=False),
    "siglip": ViTTraits(cls_token=False, mask_token=False, patch_bias=True, pre_layernorm=False,
                        layer_scale=False, final_norm="post_layernorm",
                        final_norm_on_all_tokens=True, attention_pool_head=True),
    "dinov2": ViTTraits(cls_token=True, mask_token=True, patch_bias=True, pre_layernorm=False,
                        layer_scale=True, final_norm="layernorm", final_norm_on_all_tokens=True,
                        attention_pool_head=False),
}
VISION_FAMILIES = tuple(VIT_TRAITS)


@dataclass(frozen=True)
class VisionSpec:
    """A ViT image encoder as configured by a Hugging Face ``vision_config``.

    ``feature_layer`` is the hidden-state index LLaVA reads (-2: the penultimate layer);
    transformers still runs all ``num_hidden_layers`` layers. ``use_head`` is SigLIP's
    ``vision_use_head`` (its attention-pooling head; ignored for CLIP and DINOv2).
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    family: str = "clip"
    feature_layer: int = -2
    use_head: bool = True
    name: str = "vision"

    def __post_init__(self) -> None:
        for attr in (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "image_size",
            "patch_size",
            "num_channels",
        ):
            _require_positive_int(self.name, attr, getattr(self, attr))
        if not isinstance(self.family, str) or self.family not in VIT_TRAITS:
            raise ConfigError(
                f"{self.name}: family {self.family!r} is not a supported ViT; "
                f"valid: {', '.join(VISION_FAMILIES)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{self.name}: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        # The patch embedding is a convolution of stride patch_size: a remainder is dropped
        # (SigLIP-so400m: 384 px / 14 px -> 27 x 27 = 729 patches), as in transformers.
        if self.image_size < self.patch_size:
            raise ConfigError(
                f"{self.name}: image_size ({self.image_size}) must be at least "
                f"patch_size ({self.patch_size})"
            )
        check_bool(self.name, "use_head", self.use_head)
        check_int(self.name, "feature_layer", self.feature_layer,
                  *feature_layer_range(self.num_hidden_layers))

    @property
    def traits(self) -> ViTTraits:
        """What this tower's kind builds (``VIT_TRAITS``)."""
        return VIT_TRAITS[self.family]

    @property
    def has_cls_token(self) -> bool:
        """CLIP and DINOv2 prepend a CLS token; SigLIP does not."""
        return self.traits.cls_token

    @property
    def num_patches(self) -> int:
        """Patch tokens per image: floor(image_size / patch_size)^2."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_positions(self) -> int:
        """Tokens the encoder runs on per image: patches plus the CLS token if any."""
        return self.num_patches + int(self.has_cls_token)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_feature_layers(self) -> int:
        """Encoder layers needed to produce hidden state ``feature_layer`` (hidden_states[0]
        is the embedding output, so index -2 of 25 states needs 23 of 24 layers)."""
        return self.feature_layer % (self.num_hidden_layers + 1)  # in range: __post_init__


@dataclass(frozen=True)
class ProjectorSpec:
    """LLaVA's ``mlp2x_gelu`` projector: Linear(vision→llm), GELU, Linear(llm→llm)."""

    vision_hidden_size: int
    text_hidden_size: int
    bias: bool = True

    def __post_init__(self) -> None:
        _require_positive_int("projector", "vision_hidden_size", self.vision_hidden_size)
        _require_positive_int("projector", "text_hidden_size", self.text_hidden_size)


FEATURE_SELECT_STRATEGIES = ("default", "full")  # drop the CLS token / keep it


@dataclass(frozen=True)
class ModelSpec:
    """A whole model: the LLM, optionally a vision tower and projector, and the number of
    visual tokens the LLM receives by default (before any pruning). ``kind`` names the
    model family (``families``) that reads, lays out, costs and counts it. ``vision`` is a
    ``VisionSpec``, or a family's own tower spec that only that family reads (Qwen-VL's
    ``QwenVisionSpec``, whose patch merger stands in for the projector).

    ``num_frames`` > 1 marks a video model whose ``default_num_visual_tokens`` covers all
    frames. ``num_vision_towers`` is 2 for Video-LLaVA (an image and a video tower).
    ``vision_feature_select_strategy`` is the Hugging Face field: "default" drops the CLS
    token from the features the LLM receives, "full" keeps it. ``anyres_max_num_patches`` is
    LLaVA-OneVision's AnyRes cap (``vision_aspect_ratio`` "anyres_max_9": 9).
    """

    name: str
    kind: str
    llm: LLMSpec
    vision: VisionSpec | None = None
    projector: ProjectorSpec | None = None
    default_num_visual_tokens: int = 0
    num_frames: int = 1
    num_vision_towers: int = 1
    image_grid_pinpoints: tuple[tuple[int, int], ...] = field(default_factory=tuple)
    description: str = ""
    vision_feature_select_strategy: str = "default"
    # LLaVA-OneVision's vision_aspect_ratio "anyres_max_N": N crops' worth of grid tokens
    # before the grid is shrunk (0: no cap; read only by that family)
    anyres_max_num_patches: int = 0

    def __post_init__(self) -> None:
        from .families import family_named, family_names  # the families import this module

        if not isinstance(self.kind, str) or self.kind not in family_names():
            raise ConfigError(f"model {self.name!r}: kind {self.kind!r} is unknown; valid: "
                              f"{', '.join(family_names())}")
        family = family_named(self.kind)
        if isinstance(self.default_num_visual_tokens, bool) or not isinstance(
            self.default_num_visual_tokens, int
        ) or self.default_num_visual_tokens < 0:
            raise ConfigError(
                f"model {self.name!r}: default_num_visual_tokens = "
                f"{self.default_num_visual_tokens!r} must be a non-negative integer"
            )
        _require_positive_int(self.name, "num_frames", self.num_frames)
        _require_positive_int(self.name, "num_vision_towers", self.num_vision_towers)
        if self.vision_feature_select_strategy not in FEATURE_SELECT_STRATEGIES:
            raise ConfigError(
                f"model {self.name!r}: vision_feature_select_strategy "
                f"{self.vision_feature_select_strategy!r} is unknown; valid: "
                f"{', '.join(FEATURE_SELECT_STRATEGIES)}"
            )
        family.check_spec(self)


def check_pinpoints(owner: str, pinpoints: object, crop_size: int) -> tuple[tuple[int, int], ...]:
    """LLaVA-NeXT's ``image_grid_pinpoints``: 1 to ``MAX_PINPOINTS`` [height, width] pairs of
    integers, each a multiple of the tower's ``image_size`` (``crop_size``), since AnyRes
    cuts the resized image into whole crops of that size (a smaller pinpoint leaves no crop).
    Returns them as a tuple of tuples; anything else is a one-line ``ConfigError``."""
    what = (f"a list of 1 to {MAX_PINPOINTS} [height, width] pairs of integers, each a "
            f"multiple of the vision image_size ({crop_size}) up to {MAX_IMAGE_SIDE}")
    if not isinstance(pinpoints, (list, tuple)) or not 1 <= len(pinpoints) <= MAX_PINPOINTS:
        raise ConfigError(f"{owner}: image_grid_pinpoints = {show(pinpoints)} must be {what}")
    for pair in pinpoints:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
                not isinstance(v, bool) and isinstance(v, int) and 0 < v <= MAX_IMAGE_SIDE
                and v % crop_size == 0 for v in pair)):
            raise ConfigError(
                f"{owner}: image_grid_pinpoints entry {show(pair)} is not valid; each must be "
                f"[height, width], positive multiples of {crop_size} up to {MAX_IMAGE_SIDE}"
            )
    return tuple((pair[0], pair[1]) for pair in pinpoints)

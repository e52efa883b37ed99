"""Model specifications: frozen dataclasses with Hugging Face field names.

``LLMSpec`` mirrors a Llama-family ``text_config``; ``VisionSpec`` a ViT ``vision_config``
(CLIP, SigLIP, DINOv2); ``ProjectorSpec`` LLaVA's two-layer GELU projector. ``ModelSpec``
ties them together with the model's default visual-token count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError


def _require_positive_int(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{owner}: {name} = {value!r} must be a positive integer")


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


VISION_FAMILIES = ("clip", "siglip", "dinov2")


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
        if self.family not in VISION_FAMILIES:
            raise ConfigError(
                f"{self.name}: family {self.family!r} is not a supported ViT; "
                f"valid: {', '.join(VISION_FAMILIES)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{self.name}: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"{self.name}: image_size ({self.image_size}) must be divisible by "
                f"patch_size ({self.patch_size})"
            )

    @property
    def has_cls_token(self) -> bool:
        """CLIP and DINOv2 prepend a CLS token; SigLIP does not."""
        return self.family != "siglip"

    @property
    def num_patches(self) -> int:
        """Patch tokens per image: (image_size / patch_size)^2."""
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
        num_states = self.num_hidden_layers + 1
        if not -num_states <= self.feature_layer < num_states:
            raise ConfigError(
                f"{self.name}: feature_layer ({self.feature_layer}) is out of range for "
                f"{self.num_hidden_layers} layers; valid: {-num_states}..{num_states - 1}"
            )
        return self.feature_layer % num_states


@dataclass(frozen=True)
class ProjectorSpec:
    """LLaVA's ``mlp2x_gelu`` projector: Linear(vision→llm), GELU, Linear(llm→llm)."""

    vision_hidden_size: int
    text_hidden_size: int
    bias: bool = True

    def __post_init__(self) -> None:
        _require_positive_int("projector", "vision_hidden_size", self.vision_hidden_size)
        _require_positive_int("projector", "text_hidden_size", self.text_hidden_size)


MODEL_KINDS = ("llava", "video-llava", "llava-next", "llm")
FEATURE_SELECT_STRATEGIES = ("default", "full")  # drop the CLS token / keep it


@dataclass(frozen=True)
class ModelSpec:
    """A whole model: the LLM, optionally a vision tower and projector, and the number of
    visual tokens the LLM receives by default (before any pruning).

    ``num_frames`` > 1 marks a video model whose ``default_num_visual_tokens`` covers all
    frames. ``num_vision_towers`` is 2 for Video-LLaVA (an image and a video tower).
    ``vision_feature_select_strategy`` is the Hugging Face field: "default" drops the CLS
    token from the features the LLM receives, "full" keeps it.
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

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(
                f"model {self.name!r}: kind {self.kind!r} is unknown; valid: {', '.join(MODEL_KINDS)}"
            )
        if self.kind != "llm" and (self.vision is None or self.projector is None):
            raise ConfigError(f"model {self.name!r}: a {self.kind} model needs a vision tower and projector")
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
        if self.kind == "llava-next" and not self.image_grid_pinpoints:
            raise ConfigError(f"model {self.name!r}: a llava-next model needs image_grid_pinpoints")

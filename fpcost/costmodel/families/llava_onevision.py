"""LLaVA-OneVision (``model_type`` ``llava_onevision``): a SigLIP tower (no CLS token), LLaVA's
two-layer GELU projector, a Qwen2 LLM (q/k/v biases), and AnyRes-max: LLaVA-NeXT's crops
(anyres.py) with a cap on the grid's tokens.

As transformers computes it (``models/llava_onevision/modeling_llava_onevision.py``,
``LlavaOnevisionModel.pack_image_features``; the processor's ``_get_number_of_features``
agrees), for an image of W × H pixels:

1. the best pinpoint (``image_grid_pinpoints``, up to 2304 × 2304 px in the released
   configs) gives ``rows × cols`` crops of 384 px; the tower runs them plus the base image,
   729 tokens each (27 × 27 patches of 14 px, strategy "full": SigLIP has no CLS);
2. the projector runs on every crop's 729 features; the crops' grid of (27·rows) × (27·cols)
   tokens is unpadded (anyres.py);
3. ``vision_aspect_ratio`` "anyres_max_N" (N = 9): with r = sqrt(h·w / (N·27²)) over the
   unpadded grid's h × w, a grid with r > 1.1 is shrunk bilinearly to
   int(h // r) × int(w // r) (float floor division, as transformers writes it);
4. one ``image_newline`` token per grid row; the base image's 729 tokens come first.

Without an image size the layout is that of a 1280 × 720 image (an HD frame, as for
Qwen-VL): 9 crops, 5967 visual tokens. A video of F frames
(``visual_layout(..., num_frames=F)``; ``estimate --frames F``) runs F base images
through the tower and the projector; each frame's 27 × 27 features are pooled bilinearly to
ceil(27/2)² = 196 tokens, plus one newline token per video: F·196 + 1 tokens. The pooling
itself (an interpolation over F·729 projected features) is not costed.

Pruned, the stages follow the pruner adapter (fpcost/pruner/adapters/llava_onevision.py),
which selects over the packed positions the LLM receives:

- ``projector``: an image the anyres_max shrink leaves alone projects its kept positions
  less its newlines (always kept, never projected); a shrunk image projects every crop
  token (the shrink mixes projected features, then positions are picked); a video projects
  every frame's 729 tokens (projected, pooled 2×2, then selected). Unpruned, every crop's
  729 features, as transformers projects them before unpadding and shrinking;
- ``selection``: freePruner on each crop's (frame's) 729-token map (selection_cost.py; no CLS),
  with its default layers anchored to the hidden state the LLM reads (``vision_feature_layer``
  -1 of 26 layers: pivotal 23, 24, complementary 25), as fpcost prune / generate anchor them
  (``LlavaFamily.effective_selection``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from ..anyres import AnyResLayout, anyres_layout
from ..configread import (
    get_bool,
    get_choice,
    get_object,
    get_value,
    llava_projector,
    read_llm_spec,
    read_vision_spec,
)
from ..errors import ConfigError, WorkloadError
from ..layout import VisualLayout
from ..spec import ModelSpec, check_bool, check_pinpoints, show
from . import register
from .llava import LlavaFamily
from .qwen_vl_llm import with_qkv_biases
from .qwen_vl_params import qwen2_llm_params

DEFAULT_IMAGE_SIZE = (1280, 720)  # width, height: an HD frame (module docstring)
SHRINK_THRESHOLD = 1.1  # pack_image_features shrinks the grid when r exceeds this
VIDEO_POOL = 2  # apply_pooling: each frame's p × p grid to ceil(p / 2)² tokens
ASPECT_RATIO_PATTERN = re.compile(r"^anyres_max_([1-9][0-9]{0,3})$")
TEXT_MODEL_TYPE = "qwen2"
VISION_MODEL_TYPE = "siglip_vision_model"
# LlavaOnevisionConfig's defaults; a dict sub-config takes its own class's defaults
# (Qwen2Config below, SiglipVisionConfig's in configread.py).
DEFAULT_FEATURE_LAYER = -1
DEFAULT_STRATEGY = "full"
DEFAULT_ASPECT_RATIO = "anyres_max_9"
DEFAULT_PINPOINTS = tuple((384 * rows, 384 * cols) for rows in range(1, 7) for cols in range(1, 7))
QWEN2_DEFAULTS = {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
                  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32}


@dataclass(frozen=True)
class OnevisionLayout:
    """AnyRes-max for one image: the crops (``anyres``) and the grid after the shrink."""

    anyres: AnyResLayout
    rows: int  # grid rows the LLM receives (one newline token each)
    cols: int

    @property
    def num_visual_tokens(self) -> int:
        return self.anyres.base_tokens + self.rows * self.cols + self.rows


def shrunk_grid(rows: int, cols: int, side: int, max_num_patches: int) -> tuple[int, int]:
    """The unpadded ``rows × cols`` grid after AnyRes-max's bilinear shrink (``side``:
    patches per crop side, 27); the arithmetic is transformers' own, in Python floats."""
    ratio = math.sqrt(rows * cols / (max_num_patches * side**2))
    if ratio > SHRINK_THRESHOLD:
        return int(rows // ratio), int(cols // ratio)
    return rows, cols


def onevision_layout(width: int, height: int, pinpoints, crop_size: int, patch_size: int,
                     max_num_patches: int) -> OnevisionLayout:
    anyres = anyres_layout(width, height, pinpoints, crop_size, patch_size)
    side = crop_size // patch_size
    rows, cols = shrunk_grid(anyres.unpadded_rows, anyres.unpadded_cols, side, max_num_patches)
    return OnevisionLayout(anyres, rows, cols)


def video_tokens_per_frame(spec: ModelSpec) -> int:
    side = spec.vision.image_size // spec.vision.patch_size
    return math.ceil(side / VIDEO_POOL) ** 2


class LlavaOnevisionFamily(LlavaFamily):
    name = "llava-onevision"
    model_types = ("llava_onevision",)
    uses_image_size = True

    # --- reading --------------------------------------------------------------------------
    def read_config(self, data: dict, name: str, origin: str) -> ModelSpec:
        text_where, vision_where = f"{origin} text_config", f"{origin} vision_config"
        text = get_object(data, "text_config", origin)
        get_choice(text, "model_type", text_where, (TEXT_MODEL_TYPE,), TEXT_MODEL_TYPE,
                   noun="LLM", label="text_config model_type")
        if check_bool(text_where, "use_sliding_window", text.get("use_sliding_window", False)):
            raise ConfigError(f"{text_where}: use_sliding_window = true is not supported (the "
                              "released LLaVA-OneVision models attend over the whole sequence)")
        # Qwen2 has q/k/v biases and no o_proj / MLP bias whatever the file says (no flags)
        llm = read_llm_spec({**QWEN2_DEFAULTS, **text, "attention_bias": False, "mlp_bias": False},
                            text_where, f"{name}-llm", default_model_type=TEXT_MODEL_TYPE)
        if get_bool(data, "tie_word_embeddings", origin, False) and not llm.tie_word_embeddings:
            llm = replace(llm, tie_word_embeddings=True)  # LlavaOnevisionConfig forwards a tie
        vision_cfg = {"model_type": VISION_MODEL_TYPE, **get_object(data, "vision_config", origin)}
        vision = read_vision_spec(vision_cfg, vision_where,
                                  get_value(data, "vision_feature_layer", origin,
                                            DEFAULT_FEATURE_LAYER), origin)
        strategy = get_choice(data, "vision_feature_select_strategy", origin, ("default", "full"),
                              DEFAULT_STRATEGY, noun="strategy")
        pinpoints = get_value(data, "image_grid_pinpoints", origin, None)
        pinpoints = check_pinpoints(origin, DEFAULT_PINPOINTS if pinpoints is None else pinpoints,
                                    vision.image_size)
        aspect = get_value(data, "vision_aspect_ratio", origin, DEFAULT_ASPECT_RATIO)
        match = ASPECT_RATIO_PATTERN.match(aspect) if isinstance(aspect, str) else None
        if match is None:
            raise ConfigError(f"{origin}: vision_aspect_ratio = {show(aspect)} is not supported; "
                              "valid: anyres_max_N with N in 1..9999 (released: anyres_max_9)")
        projector = replace(llava_projector(llm, vision),
                            bias=get_bool(data, "multimodal_projector_bias", origin, True))
        spec = ModelSpec(name=name, kind=self.name, llm=llm, vision=vision, projector=projector,
                         description=f"{self.name} from {origin}",
                         vision_feature_select_strategy=strategy, image_grid_pinpoints=pinpoints,
                         anyres_max_num_patches=int(match.group(1)))
        return replace(spec, default_num_visual_tokens=self.visual_layout(spec).num_visual_tokens)

    def check_spec(self, spec: ModelSpec) -> None:
        super().check_spec(spec)
        owner = f"model {spec.name!r}"
        check_pinpoints(owner, spec.image_grid_pinpoints, spec.vision.image_size)
        n = spec.anyres_max_num_patches
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 9999:
            raise ConfigError(f"{owner}: anyres_max_num_patches = {show(n)} must be an integer "
                              "in 1..9999 (vision_aspect_ratio anyres_max_N)")
        # pack_image_features needs exactly the crop's patch grid from each crop: "full" on a
        # tower without CLS, "default" on one with it
        if (spec.vision_feature_select_strategy == "full") == spec.vision.has_cls_token:
            raise ConfigError(
                f"{owner}: vision_feature_select_strategy "
                f"{spec.vision_feature_select_strategy!r} does not leave the crop's patch grid "
                f"for a {spec.vision.family} tower; valid: "
                f"{'default' if spec.vision.has_cls_token else 'full'}")

    # --- the vision side ------------------------------------------------------------------
    def onevision(self, spec: ModelSpec, image_size) -> OnevisionLayout:
        width, height = image_size or DEFAULT_IMAGE_SIZE
        return onevision_layout(width, height, spec.image_grid_pinpoints, spec.vision.image_size,
                                spec.vision.patch_size, spec.anyres_max_num_patches)

    def visual_layout(self, spec, image_size=None, num_frames=None, pixel_limits=None) -> VisualLayout:
        """One image (AnyRes-max; ``detail`` the ``OnevisionLayout``), or a video of
        ``num_frames`` frames (``detail`` None)."""
        per_crop = spec.vision.num_patches
        if num_frames is not None:
            if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
                raise WorkloadError(f"num_frames = {show(num_frames)} must be a positive integer")
            visual = num_frames * video_tokens_per_frame(spec) + 1
            return VisualLayout(num_frames, spec.vision.num_positions, visual,
                                num_frames * per_crop)
        layout = self.onevision(spec, image_size)
        return VisualLayout(layout.anyres.num_crops, spec.vision.num_positions,
                            layout.num_visual_tokens, layout.anyres.num_crops * per_crop, layout)

    def pruned_projected_tokens(self, spec, layout, num_visual_tokens):
        """As the pruner adapter projects (adapters/llava_onevision.py): a video, every
        frame's crop tokens (projected, then pooled 2×2, then selected); an image the
        anyres_max shrink applies to, every crop token (the shrink mixes projected features,
        then positions are picked); any other image, its kept positions less its newlines
        (one per grid row, always kept and counted, never projected)."""
        detail = layout.detail
        if detail is None or (detail.rows, detail.cols) != (detail.anyres.unpadded_rows,
                                                           detail.anyres.unpadded_cols):
            return layout.num_projected_tokens + 0 * num_visual_tokens  # an array stays one
        kept = num_visual_tokens - detail.rows
        return kept * (kept > 0)

    def tokens_unit(self, spec, layout) -> str:
        return (f"per image (AnyRes-max-{spec.anyres_max_num_patches}: {layout.num_images} crops "
                f"of {spec.vision.image_size} px, packed; --image-size sets the image)")

    # --- the LLM and the weights ----------------------------------------------------------
    def decoder_ops(self, spec, settings, step):
        return with_qkv_biases(super().decoder_ops(spec, settings, step), spec.llm,
                               settings.quant, step)

    def parameter_counts(self, spec):
        return {**super().parameter_counts(spec), "llm": qwen2_llm_params(spec.llm),
                "image_newline": spec.llm.hidden_size}


FAMILY = register(LlavaOnevisionFamily())

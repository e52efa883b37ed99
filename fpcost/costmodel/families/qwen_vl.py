"""Qwen2-VL (``model_type`` ``qwen2_vl``) and Qwen2.5-VL (``qwen2_5_vl``): a ViT with 2-D
rotary over dynamic-resolution images, the 2×2 patch merger, a Qwen2 LLM (q/k/v biases).

What the two families read, lay out and cost comes from the groundwork modules beside this
one: ``qwen_vl_spec`` (the config reader), ``qwen_vl_layout`` (``smart_resize``, patch grids,
windows), ``qwen_vl_ops`` (tower and merger operators), ``qwen_vl_llm`` (the decoder) and
``qwen_vl_params`` (parameter counts), all checked against transformers.

How they fit the stages of ``pipeline.stage_ops``:

- ``vision``: the Conv3d patch embedding and every block, over one sample's patch grid
  (t·h·w patches; Qwen2.5-VL's window permutation included), per-sample FLOPs and
  activation bytes scaled by the batch, weights loaded once;
- ``projector``: the patch merger (``ln_q`` per patch, the MLP per 2×2 group; Qwen2.5-VL's
  un-permutation of the merged tokens), on every merged token, pruned or not: the pruner
  (fpcost/pruner/qwen_vision.py, ``select_merged``) scores in the tower's own pass, whose
  last module is the merger, and then picks among the merger's outputs;
- ``selection``: freePruner as ``select_merged`` computes it, once per image or video
  (``pruning.geometry_selection_ops`` over ``selection_geometry``): per pivotal layer the
  head-averaged map of the t·h·w patches within each attention segment (each temporal slice
  in a full-attention block; each window in a Qwen2.5-VL windowed block), its column sums,
  their 2×2 pooling to merged tokens, a top-k over the merged tokens (k = 0.25 × merged
  tokens); for the complementary layer the rows of the pivotal merged tokens (4 patch rows
  each, against their segment's keys), pooled 2×2 to (pivotal × merged), and the IQR rule
  over them. The pivotal count is data-dependent: the upper bound min(pivotal layers × k,
  merged tokens) is charged, its rows spread over windows as the patches are. The default
  layers stay the paper's (-4, -3 / -2: blocks 28, 29 / 30 of 32, all windowed in
  Qwen2.5-VL), as the pruner keeps them (it anchors no layer on these towers);
- ``prefill`` / ``decode``: the Qwen2 decoder with its q/k/v bias adds.

Image size: ``smart_resize`` with the released preprocessor's limits (min_pixels 3136,
max_pixels 12845056) unless the workload overrides them (``--min-pixels`` /
``--max-pixels``). Without an image size the layout is that of a 1280×720 image (an HD
frame: 1196 tokens): the tokens of a Qwen model depend on the image, and one common size
is a better default than the extremes the pixel limits allow (4 or 16384 tokens).
A video of ``num_frames`` frames (``visual_layout(..., num_frames=F)``) is ceil(F / 2)
temporal patches of the same grid; the CLI does not offer it (no ``--frames`` option).
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import ConfigError
from ..layout import VisualLayout
from ..ops import NUMERIC_FIELDS, Op
from ..selection_cost import SelectionGeometry, geometry_selection_ops
from ..spec import ModelSpec
from ..vision import _Builder
from . import ModelFamily, register
from .qwen_vl_layout import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    check_pixel_limits,
    full_attention_seqlens,
    image_grid,
    video_grid,
    window_attention_seqlens,
)
from .qwen_vl_llm import qwen2_decoder_ops
from .qwen_vl_ops import merger_ops, qwen_vision_tower_ops
from .qwen_vl_params import parameter_counts as qwen_parameter_counts
from .qwen_vl_spec import QWEN2_5_VL, QWEN2_VL, QwenVisionSpec, QwenVLSpec, qwen_vl_spec_from_config

DEFAULT_IMAGE_SIZE = (1280, 720)  # width, height: an HD frame (module docstring)


def scale_by_batch(ops: list[Op], batch_size) -> list[Op]:
    """Operators of one sample made those of ``batch_size`` (an int or an int64 array): every
    FLOP and activation byte term times the batch, the weights loaded once."""
    return [replace(op, **{name: getattr(op, name) * batch_size
                           for name in NUMERIC_FIELDS if name != "weight_bytes"})
            for op in ops]


class Qwen2VLFamily(ModelFamily):
    name = "qwen2-vl"
    model_types = (QWEN2_VL,)
    has_vision = True
    uses_image_size = True
    uses_pixel_limits = True

    # --- reading --------------------------------------------------------------------------
    def read_config(self, data: dict, name: str, origin: str) -> ModelSpec:
        qwen = qwen_vl_spec_from_config(data, name, origin)
        return self.model_spec(qwen, f"{self.name} from {origin}")

    def model_spec(self, qwen: QwenVLSpec, description: str) -> ModelSpec:
        """The ``ModelSpec`` of a Qwen-VL spec: the tower (with merger) in ``vision``, no
        LLaVA projector; the default tokens are those of ``DEFAULT_IMAGE_SIZE``."""
        grid = image_grid(DEFAULT_IMAGE_SIZE[1], DEFAULT_IMAGE_SIZE[0],
                          patch_size=qwen.vision.patch_size,
                          merge_size=qwen.vision.spatial_merge_size)
        return ModelSpec(name=qwen.name, kind=self.name, llm=qwen.llm, vision=qwen.vision,
                         default_num_visual_tokens=grid.num_merged_tokens(
                             qwen.vision.spatial_merge_size),
                         description=description)

    def check_spec(self, spec: ModelSpec) -> None:
        vision = spec.vision
        if not isinstance(vision, QwenVisionSpec) or vision.model_type not in self.model_types:
            raise ConfigError(f"model {spec.name!r}: a {spec.kind} model needs a "
                              f"{self.model_types[0]} vision tower")
        if spec.projector is not None:
            raise ConfigError(f"model {spec.name!r}: a {spec.kind} model has no LLaVA projector "
                              "(its patch merger is part of the vision tower)")
        self.qwen(spec)  # the merger's output width must be the LLM's

    @staticmethod
    def qwen(spec: ModelSpec) -> QwenVLSpec:
        return QwenVLSpec(name=spec.name, vision=spec.vision, llm=spec.llm)

    # --- the vision side ------------------------------------------------------------------
    def visual_layout(self, spec, image_size=None, num_frames=None,
                      pixel_limits=None) -> VisualLayout:
        """One image of ``image_size`` (width, height; default 1280×720) or a video of
        ``num_frames`` such frames, resized by ``smart_resize`` within ``pixel_limits``
        ((min_pixels, max_pixels), either None for the released default). ``detail`` is
        the patch grid (``VisionGrid``)."""
        vision = spec.vision
        low, high = pixel_limits or (None, None)
        low, high = check_pixel_limits(DEFAULT_MIN_PIXELS if low is None else low,
                                       DEFAULT_MAX_PIXELS if high is None else high)
        width, height = image_size or DEFAULT_IMAGE_SIZE
        if num_frames is None:
            grid = image_grid(height, width, low, high, vision.patch_size,
                              vision.spatial_merge_size)
        else:
            grid = video_grid(num_frames, height, width, low, high, vision.patch_size,
                              vision.spatial_merge_size, vision.temporal_patch_size)
        merged = grid.num_merged_tokens(vision.spatial_merge_size)
        # the tower attends within each temporal slice: t "images" of h·w patches
        return VisualLayout(grid.t, grid.h * grid.w, merged, merged, grid)

    def tower_depth(self, spec) -> int:
        return spec.vision.depth

    def num_layers_run(self, spec, settings) -> int:
        """Every block: the merger reads the last one ("feature" changes nothing)."""
        return spec.vision.depth

    def vision_ops(self, spec, layout, settings, batch_size):
        tower = [op for op in qwen_vision_tower_ops(spec.vision, settings.vision_quant,
                                                    [layout.detail], settings.flash_attention,
                                                    settings.onchip_buffer_bytes)
                 if op.block != "merger"]
        return scale_by_batch(tower, batch_size)

    def projector_ops(self, spec, layout, settings, num_tokens):
        """The merger over ``num_tokens`` merged tokens (all samples): merge² patches each."""
        vision = spec.vision
        b = _Builder("projector", settings.vision_quant)
        ops = merger_ops(vision, b, num_tokens * vision.spatial_merge_size**2)
        if vision.windowed:  # merged tokens put back in raster order (bytes only)
            ops.append(b.vector("merger", "window_unpermute", num_tokens * vision.out_hidden_size,
                                0, 1))
        return ops

    def pruned_projected_tokens(self, spec, layout, num_visual_tokens):
        """Every merged token: the merger is the tower's last module, it runs in the same
        pass the pruner scores, and selection picks among its outputs (select_merged)."""
        return layout.num_projected_tokens + 0 * num_visual_tokens  # an array stays an array

    # --- freePruner's selection -----------------------------------------------------------
    def selection_geometry(self, spec, layout) -> SelectionGeometry:
        """One image or video (``layout.detail``'s grid): its t·h·w patches in the tower,
        scored per merged token (2×2 patches); full-attention blocks attend per temporal
        slice, Qwen2.5-VL's other blocks within their windows (``window_attention_seqlens``)."""
        vision, grid = spec.vision, layout.detail
        unit = vision.spatial_merge_size**2
        tokens = grid.t * grid.h * grid.w
        windows, windowed = (), self.windowed_layers(spec)
        if windowed:
            windows = tuple(window_attention_seqlens([grid], vision.window_size,
                                                     vision.patch_size, vision.spatial_merge_size))
        return SelectionGeometry(tokens, tokens // unit, vision.num_heads, vision.head_dim,
                                 vision.depth, tokens // unit, unit,
                                 tuple(full_attention_seqlens([grid])), windows,
                                 frozenset(windowed))

    def windowed_layers(self, spec) -> tuple[int, ...]:
        """Qwen2.5-VL: every block not in ``fullatt_block_indexes``; Qwen2-VL: none."""
        vision = spec.vision
        if not vision.windowed:
            return ()
        return tuple(i for i in range(vision.depth) if i not in vision.fullatt_block_indexes)

    def selection_scored_tokens(self, spec, layout) -> int:
        return layout.num_visual_tokens  # merged tokens of one image / video

    def selection_ops(self, spec, layout, settings, num_images):
        """freePruner over each sample's merged tokens (``select_merged``): the pipeline
        counts ``num_images`` = samples × temporal slices; the pruner scores each image or
        video once, over all of its slices."""
        if settings.selection is None:
            return []
        return geometry_selection_ops(self.selection_geometry(spec, layout), settings.selection,
                                      num_images // layout.num_images, spec.vision.depth,
                                      settings.vision_quant.act_bits)

    def vision_residual_elements(self, spec, layout) -> int:
        return layout.num_images * layout.tokens_per_image * spec.vision.hidden_size

    def tokens_unit(self, spec, layout) -> str:
        grid = layout.detail
        return (f"per image (dynamic resolution: {grid.h}x{grid.w} patches of "
                f"{spec.vision.patch_size} px, merged 2x2; --image-size sets the image)")

    # --- the LLM and the weights ----------------------------------------------------------
    def decoder_ops(self, spec, settings, step):
        return qwen2_decoder_ops(self.qwen(spec), settings.quant, step, settings.accounting,
                                 settings.flash_attention, settings.onchip_buffer_bytes)

    def parameter_counts(self, spec) -> dict[str, int]:
        """``llm``, ``vision`` (patch embedding and blocks), ``projector`` (the merger)."""
        counts = qwen_parameter_counts(self.qwen(spec))
        return {part: counts[part] for part in ("llm", "vision", "projector")}


class Qwen25VLFamily(Qwen2VLFamily):
    """Qwen2.5-VL: the same layout and stages; windowed attention, RMSNorm and SwiGLU in the
    tower are the groundwork modules' (they read ``QwenVisionSpec.windowed``)."""

    name = "qwen2.5-vl"
    model_types = (QWEN2_5_VL,)


QWEN2_VL_FAMILY = register(Qwen2VLFamily())
QWEN2_5_VL_FAMILY = register(Qwen25VLFamily())

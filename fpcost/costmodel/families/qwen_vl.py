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
  un-permutation of the merged tokens). It runs on the merged tokens the LLM receives: the
  merger works on each 2×2 group alone, so merging only the kept groups is exact (a
  pruner must select before merging to get this saving);
- ``selection``: freePruner's selection on these towers is **not modelled** (no stage;
  ``costs_selection`` is false): the pruned request costs the tower, the merger and the LLM
  on the kept tokens, and the report says the selection is left out;
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
from ..spec import ModelSpec
from ..vision import _Builder
from . import ModelFamily, register
from .qwen_vl_layout import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    check_pixel_limits,
    image_grid,
    video_grid,
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
    costs_selection = False

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

    def vision_residual_elements(self, spec, layout) -> int:
        return layout.num_images * layout.tokens_per_image * spec.vision.hidden_size

    def tokens_unit(self, spec, layout) -> str:
        grid = layout.detail
        return (f"per image (dynamic resolution: {grid.h}x{grid.w} patches of "
                f"{spec.vision.patch_size} px, merged 2x2; --image-size sets the image)")

    def selection_note(self, spec) -> str:
        return (f"freePruner's selection on {spec.kind} towers is not modelled: no selection "
                "stage; a pruned request costs the tower, the merger and the LLM on the kept "
                "merged tokens")

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

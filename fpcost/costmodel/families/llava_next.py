"""LLaVA-NeXT (``model_type`` ``llava_next``, v1.6): LLaVA-1.5's parts with AnyRes
(anyres.py): the tower runs the base image plus the crops of the best-fitting pinpoint, and
the LLM receives the base crop's tokens, the unpadded crop grid and one newline token per
grid row. The newline embedding is a parameter of its own (``image_newline``).

Without an image size the LLM is costed for the nominal count the model is quoted with
(2880 = 5 × 576 for llava-v1.6, before unpadding and newline tokens) and the tower for the
largest pinpoint; with one, transformers' exact count. The projector runs on every crop's
features before unpadding (what transformers projects), or the kept tokens when pruned.
"""

from __future__ import annotations

from dataclasses import replace

from ..anyres import anyres_layout, default_image_size
from ..configread import REQUIRED, get_value
from ..layout import VisualLayout
from ..spec import check_pinpoints
from . import register
from .llava import LlavaFamily


class LlavaNextFamily(LlavaFamily):
    name = "llava-next"
    model_types = ("llava_next",)
    uses_image_size = True

    def read_config(self, data, name, origin):
        spec = super().read_config(data, name, origin)
        # nominal count: base image + the largest pinpoint's crops, before unpadding and
        # newline tokens (2880 for llava-v1.6); --image-size gives transformers' exact count
        layout = self.anyres(spec, None)
        tokens_per_crop = spec.vision.num_patches + self.keep_cls(spec)
        return replace(spec, default_num_visual_tokens=layout.num_crops * tokens_per_crop)

    def extra_fields(self, data, origin, vision, strategy) -> dict:
        pinpoints = check_pinpoints(origin, get_value(data, "image_grid_pinpoints", origin, REQUIRED),
                                    vision.image_size)
        return {"image_grid_pinpoints": pinpoints}

    def check_spec(self, spec) -> None:
        super().check_spec(spec)
        check_pinpoints(f"model {spec.name!r}", spec.image_grid_pinpoints, spec.vision.image_size)

    def anyres(self, spec, image_size):
        width, height = image_size or default_image_size(spec.image_grid_pinpoints)
        return anyres_layout(width, height, spec.image_grid_pinpoints, spec.vision.image_size,
                             spec.vision.patch_size, self.keep_cls(spec))

    def visual_layout(self, spec, image_size=None, num_frames=None, pixel_limits=None) -> VisualLayout:
        self.check_frames(spec, num_frames)
        layout = self.anyres(spec, image_size)
        projected = layout.num_crops * (spec.vision.num_patches + self.keep_cls(spec))
        visual = layout.num_visual_tokens if image_size else spec.default_num_visual_tokens
        return VisualLayout(layout.num_crops, spec.vision.num_positions, visual, projected, layout)

    def tokens_unit(self, spec, layout) -> str:
        return (f"per image (AnyRes: {layout.num_images} crops of {spec.vision.image_size} px, "
                "packed; --image-size sets the image)")

    def parameter_counts(self, spec):
        return {**super().parameter_counts(spec), "image_newline": spec.llm.hidden_size}


FAMILY = register(LlavaNextFamily())

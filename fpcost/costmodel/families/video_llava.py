"""Video-LLaVA (``model_type`` ``video_llava``): LLaVA-1.5's parts with two CLIP towers (an
image and a video tower, both kept in memory) and 8 frames per video at 224 px.

Per sample: 8 frames of 257 tokens through the video tower; the LLM receives 8 × 256 (the
original Video-LLaVA drops each frame's CLS, as the paper's 2,048 does; transformers' port
keeps it, 8 × 257 = 2,056: ``--visual-tokens 2056`` is costed as given, the projector
included).
"""

from __future__ import annotations

from dataclasses import replace

from ..layout import VisualLayout
from . import register
from .llava import LlavaFamily

VIDEO_LLAVA_FRAMES = 8  # Video-LLaVA samples 8 frames per video
VIDEO_LLAVA_TOWERS = 2  # an image tower and a video tower


class VideoLlavaFamily(LlavaFamily):
    name = "video-llava"
    model_types = ("video_llava",)

    def read_config(self, data, name, origin):
        spec = super().read_config(data, name, origin)
        # every frame's patches, CLS dropped whatever the strategy (the paper's count)
        return replace(spec, default_num_visual_tokens=spec.num_frames * spec.vision.num_patches)

    def extra_fields(self, data, origin, vision, strategy) -> dict:
        return {"num_frames": VIDEO_LLAVA_FRAMES, "num_vision_towers": VIDEO_LLAVA_TOWERS}

    def visual_layout(self, spec, image_size=None, num_frames=None, pixel_limits=None) -> VisualLayout:
        self.check_frames(spec, num_frames)
        visual = spec.default_num_visual_tokens
        # transformers' port keeps each frame's CLS (8 x 257 = 2056): the projector can see
        # that many, so --visual-tokens up to 2056 is costed as given
        projected = max(visual, spec.num_frames * spec.vision.num_positions)
        return VisualLayout(spec.num_frames, spec.vision.num_positions, visual, projected)

    def tokens_unit(self, spec, layout) -> str:
        return f"per frame ({spec.num_frames} frames of {spec.vision.image_size} px)"


FAMILY = register(VideoLlavaFamily())

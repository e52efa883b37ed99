"""What the vision side of a model runs for one sample, without pruning: the record every
model family returns (``families``) and the pipeline, memory and sweep read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisualLayout:
    """Per sample, without pruning: images the tower runs (frames, AnyRes crops),
    tokens per image in the tower, visual tokens the LLM receives, tokens the projector
    runs on. ``detail`` holds a family's own description of the input (LLaVA-NeXT's
    ``AnyResLayout``; a dynamic-resolution family's patch grids), read only by that family.
    """

    num_images: int
    tokens_per_image: int
    num_visual_tokens: int
    num_projected_tokens: int
    detail: object = None


NO_VISION = VisualLayout(0, 0, 0, 0)

"""Video-LLaVA (``VideoLlavaForConditionalGeneration``): prune per image and per frame.

transformers' Video-LLaVA reads images and videos through two towers and treats them
differently (checked on 5.23, ``get_image_features`` / ``get_video_features``):
- images follow ``vision_feature_select_strategy`` ("default" drops CLS: 256 tokens);
- video frames pass on every token of the feature layer, CLS included, whatever the
  strategy (8 frames x 257 tokens = ``video_seq_length`` 2056).
The adapter follows it: image patches are pruned as in LLaVA; each frame keeps its CLS
feature and prunes its patches, with its own selection, so counts are per frame.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fpcost.pruner.adapters.common import (
    PrunedGeneration,
    PruningError,
    config_token_id,
    find_module,
    generate_from_segments,
)
from fpcost.pruner.adapters.llava import project_images
from fpcost.pruner.adapters.rebuild import Segment
from fpcost.pruner.adapters.stages import StageClock


def generate_video_llava(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    pruner,
    *,
    stage_clock: StageClock | None = None,
    **generate_kwargs,
) -> PrunedGeneration:
    """``generate`` with image and frame tokens pruned by ``pruner``.

    ``inputs``: ``input_ids`` (B, L) and optional ``attention_mask`` (B, L) with the
    processor's placeholders expanded; ``pixel_values`` (or the older name
    ``pixel_values_images``) (num_images, C, H, W) and/or ``pixel_values_videos``
    (num_videos, F, C, H, W). Units in the result: one per image, one per frame.
    ``stage_clock``: both towers' passes add up in "vision", both projections in "projector",
    and ``generate`` is "llm" (``stages.py``); None times nothing.
    """
    images = inputs.get("pixel_values")
    if images is None:
        images = inputs.get("pixel_values_images")
    videos = inputs.get("pixel_values_videos")
    if images is None and videos is None:
        raise PruningError("Video-LLaVA inputs hold neither pixel_values nor pixel_values_videos")

    segments: list[Segment] = []
    features: dict[int, torch.Tensor] = {}
    selections = {}
    if images is not None:
        token_id = config_token_id(model, "image_token_id", "image_token_index")
        tower = find_module(model, "image_tower")
        num_tokens, num_kept, features[token_id], selections["image"] = project_images(
            model, tower, images, pruner, stage_clock=stage_clock
        )
        segments += [Segment(token_id, n, k) for n, k in zip(num_tokens, num_kept, strict=True)]
    if videos is not None:
        if videos.dim() != 5:
            raise PruningError(
                "pixel_values_videos must be (videos, frames, channels, height, width), "
                f"got {tuple(videos.shape)}"
            )
        token_id = config_token_id(model, "video_token_id", "video_token_index")
        tower = find_module(model, "video_tower")
        frames = videos.flatten(0, 1)  # (num_videos * F, C, H, W), video-major like the model
        num_tokens, num_kept, features[token_id], selections["video"] = project_images(
            model, tower, frames, pruner, keep_prefix=True, stage_clock=stage_clock
        )
        segments += [Segment(token_id, n, k) for n, k in zip(num_tokens, num_kept, strict=True)]

    return generate_from_segments(
        model, inputs, segments, features, generate_kwargs, selections, stage_clock
    )

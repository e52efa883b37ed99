"""LLaVA (``LlavaForConditionalGeneration``): prune each image's patch tokens before the LLM.

Seam: vision tower, run once by the pruner → the feature layer LLaVA reads
(``vision_feature_layer``; the "default" strategy drops CLS) → kept tokens only → the
model's own ``multi_modal_projector`` → a prompt rebuilt with K_b placeholders per image →
the model's input embeddings with the features scattered in → ``generate``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fpcost.pruner.adapters.common import (
    PrunedGeneration,
    PruningError,
    config_token_id,
    drop_prefix,
    feature_layers,
    find_module,
    gather_kept,
    generate_from_segments,
    layer_features,
    run_pruner,
)
from fpcost.pruner.adapters.rebuild import Segment
from fpcost.pruner.adapters.stages import StageClock, timed
from fpcost.pruner.api import Selection


def project_images(
    model: nn.Module,
    tower: nn.Module,
    pixel_values: torch.Tensor,
    pruner,
    keep_prefix: bool | None = None,
    stage_clock: StageClock | None = None,
) -> tuple[list[int], list[int], torch.Tensor, Selection]:
    """Prune and project a batch of images (or frames) (B, C, H, W) through ``tower``.

    Returns, per image, the tokens the model would pass on and the tokens kept, the
    projected kept features of all images concatenated (sum K_b, D_text), and the selection.
    ``keep_prefix=None`` follows the model's image path (drop CLS under "default");
    Video-LLaVA frames pass ``True``. ``stage_clock``: the tower pass with the pruner is
    "vision"; reading the feature layer, gathering the kept tokens and the projector are
    "projector".
    """
    if pixel_values.dim() != 4:
        raise PruningError(
            f"pixel_values must be (batch, channels, height, width), "
            f"got {tuple(pixel_values.shape)}"
        )
    weight = next(tower.parameters())
    with torch.no_grad(), timed(stage_clock, "vision"):
        encoded = run_pruner(
            pruner, tower, pixel_values.to(weight.device, weight.dtype), stage_clock
        )
    with torch.no_grad(), timed(stage_clock, "projector"):
        layers = feature_layers(model)
        features = layer_features(encoded, layers)  # (B, N_tokens, D')
        selection = encoded.selection
        num_prefix = features.shape[1] - selection.num_patches
        if keep_prefix is None:
            keep_prefix = not drop_prefix(model, num_prefix)
        kept = gather_kept(features, encoded, layers, keep_prefix)  # B x (K_b, D')
        projector = find_module(model, "multi_modal_projector")
        projected = projector(torch.cat(kept, dim=0))  # (sum K_b, D_text)
    passed_on = selection.num_patches + (num_prefix if keep_prefix else 0)
    return [passed_on] * len(kept), [int(k.shape[0]) for k in kept], projected, selection


def generate_llava(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    pruner,
    *,
    stage_clock: StageClock | None = None,
    **generate_kwargs,
) -> PrunedGeneration:
    """Greedy or sampled ``generate`` with each image's tokens pruned by ``pruner``.

    ``inputs``: ``input_ids`` (B, L) with the processor's placeholders expanded,
    ``attention_mask`` (B, L) optional, ``pixel_values`` (num_images, C, H, W), one image
    per ``<image>`` run in prompt order. ``stage_clock``: times "vision", "projector" and
    "llm" (``stages.py``); None times nothing.
    """
    if inputs.get("image_sizes") is not None:
        raise PruningError("LLaVA with image_sizes (Pixtral-style towers) is not supported")
    pixel_values = inputs["pixel_values"]
    tower = find_module(model, "vision_tower")
    num_tokens, num_kept, projected, selection = project_images(
        model, tower, pixel_values, pruner, stage_clock=stage_clock
    )
    token_id = config_token_id(model, "image_token_id", "image_token_index")
    segments = [Segment(token_id, n, k) for n, k in zip(num_tokens, num_kept, strict=True)]
    return generate_from_segments(
        model,
        inputs,
        segments,
        {token_id: projected},
        generate_kwargs,
        {"image": selection},
        stage_clock,
    )

"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``): a fixed token budget per image, chosen
over the packed (unpadded) positions.

AnyRes splits an image into a base crop plus a grid of crops. The model projects every
crop's patches, then ``pack_image_features`` lays the grid out spatially, *unpads* it
(removes the rows or columns that only hold the letterbox padding), appends a learned
``image_newline`` after every row, and puts the base crop first. A count chosen per crop
would therefore not survive packing. Instead the adapter packs a one-channel map of
source positions through the model's own ``pack_image_features`` (newline marked -1), so
it knows which crop token lands at which packed position, and chooses over the packed
visual positions only:

- ``budget=None``: keep what the pruner kept, among tokens that survive unpadding;
- ``budget=K``: exactly K visual tokens per image (all of them if the image has fewer).
  freePruner: the same rule as ``fpcost prune --budget`` (``selection.budget_order``) over
  the packed positions of all the image's crops together: the adaptive selection at the k
  where its surviving count reaches K, filled from the next k, pivotal first, so both
  pivotal and complementary tokens stay; the pruner is asked for every complementary row
  (``FreePruner.with_complete_rows``) so that this order is exact for any K. Baselines
  (no ``selection.admission``): the pruner's kept tokens first, ranked by
  ``selection.scores`` (truncate), then the best-scored others (fill); ties and missing
  scores fall back to packed order.

Newline tokens are always kept and not counted in the budget: they are a fixed one per
row of the unpadded grid, carry the 2-D layout the LLM was trained with, and the model
emits them whatever the image holds. Kept tokens stay in packed order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

import torch
from torch import nn

from fpcost.pruner.adapters.common import (
    PrunedGeneration,
    PruningError,
    config_token_id,
    drop_prefix,
    feature_layers,
    find_module,
    find_parameter,
    generate_from_segments,
    layer_features,
    run_pruner,
    select_strategy,
)
from fpcost.pruner.adapters.rebuild import Segment
from fpcost.pruner.adapters.stages import StageClock, timed
from fpcost.pruner.api import Selection
from fpcost.pruner.budget import budget_order

NEWLINE = -1  # marks a newline position in the packed source-position map


def _model_function(model: nn.Module, name: str) -> Callable:
    """A module-level helper of the model's own modeling file (moves with the class)."""
    for cls in type(model).__mro__:
        function = getattr(sys.modules.get(cls.__module__), name, None)
        if callable(function):
            return function
    raise PruningError(f"no {name}() in the modeling module of {type(model).__name__}")


def _pack_method(model: nn.Module) -> Callable:
    """The instance's ``pack_image_features`` (on the wrapper or on its inner model)."""
    for module in model.modules():
        method = getattr(module, "pack_image_features", None)
        if callable(method):
            return method
    raise PruningError(f"{type(model).__name__} has no pack_image_features()")


def _crops(
    model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor
) -> tuple[torch.Tensor, list[int]]:
    """All crops of all images, (sum C_i, C, H, W), and the crop count C_i per image."""
    to_num_crops = _model_function(model, "image_size_to_num_patches")
    num_crops = [
        int(
            to_num_crops(
                image_size=size,
                grid_pinpoints=model.config.image_grid_pinpoints,
                patch_size=model.config.vision_config.image_size,
            )
        )
        for size in image_sizes
    ]
    if pixel_values.dim() == 5:  # (num_images, max_crops, C, H, W), padded with empty crops
        if pixel_values.shape[0] != len(num_crops):
            raise PruningError(
                f"pixel_values holds {pixel_values.shape[0]} images "
                f"but image_sizes {len(num_crops)}"
            )
        pixel_values = torch.cat(
            [pv[:n] for pv, n in zip(pixel_values, num_crops, strict=True)], dim=0
        )  # (sum C_i, C, H, W)
    elif pixel_values.dim() != 4 or pixel_values.shape[0] != sum(num_crops):
        raise PruningError(
            f"pixel_values of shape {tuple(pixel_values.shape)} do not hold the "
            f"{sum(num_crops)} crops image_sizes implies"
        )
    return pixel_values, num_crops


def packed_sources(
    model: nn.Module, num_crops: list[int], num_patches: int, image_sizes: torch.Tensor
) -> list[torch.Tensor]:
    """Per image, the flat source index (crop * num_patches + patch) at each packed position,
    or NEWLINE: packed through the model's own ``pack_image_features``. List of (L_i,)."""
    total = sum(num_crops) * num_patches
    sources = torch.arange(total, dtype=torch.float64).view(-1, num_patches, 1)  # (sum C_i, N, 1)
    newline = torch.tensor([float(NEWLINE)], dtype=torch.float64)  # (1,): a 1-channel newline
    packed, _ = _pack_method(model)(
        list(torch.split(sources, num_crops, dim=0)), image_sizes, "default", image_newline=newline
    )  # each (L_i, 1)
    return [p[:, 0].round().to(torch.long) for p in packed]  # each (L_i,)


def choose_positions(
    sources: torch.Tensor,
    kept: torch.Tensor,
    scores: torch.Tensor,
    budget: int | None,
    admission: torch.Tensor | None = None,
) -> torch.Tensor:
    """Packed positions kept for one image: chosen visual positions plus every newline.

    ``sources`` (L,) from ``packed_sources``; ``kept`` (sum C_i * N,) bool, ``scores``
    (sum C_i * N,) float and, for freePruner, ``admission`` (sum C_i * N,) int64, flat over
    all crops. Returns sorted positions (L',).
    """
    positions = torch.nonzero(sources != NEWLINE).squeeze(1)  # (V,) visual positions
    src = sources[positions]  # (V,)
    if budget is None:
        chosen = positions[kept[src]]
    elif admission is not None:  # freePruner's nested rule over the packed positions
        order = budget_order(admission[src][None], scores[src][None])[0]  # (V,)
        chosen = positions[order[: min(budget, positions.numel())]]
    else:
        # best score first, ties by position; then, stably, the pruner's kept tokens first
        order = torch.sort(-scores[src], stable=True).indices  # (V,)
        unkept = (~kept[src][order]).to(torch.int8)  # (V,) 0 = kept
        order = order[torch.sort(unkept, stable=True).indices]  # (V,)
        chosen = positions[order[: min(budget, positions.numel())]]
    newlines = torch.nonzero(sources == NEWLINE).squeeze(1)
    return torch.sort(torch.cat([chosen, newlines])).values


def generate_llava_next(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    pruner,
    budget: int | None = None,
    *,
    stage_clock: StageClock | None = None,
    **generate_kwargs,
) -> PrunedGeneration:
    """``generate`` with each AnyRes image cut to ``budget`` visual tokens (see module doc).

    ``inputs``: ``input_ids`` (B, L), optional ``attention_mask`` (B, L), ``pixel_values``
    (num_images, max_crops, C, H, W) and ``image_sizes`` (num_images, 2) as (height, width).
    ``stage_clock`` (``stages.py``): the crops' tower pass with the pruner is "vision"; the
    packed-position choice, the projector and the newline table are "projector";
    ``generate`` is "llm". None times nothing.
    """
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
    ):
        raise PruningError(f"budget ({budget!r}) must be a positive number of tokens per image")
    if inputs.get("image_sizes") is None:
        raise PruningError("LLaVA-NeXT inputs need image_sizes (num_images, 2)")
    if select_strategy(model) != "default":
        raise PruningError(
            "LLaVA-NeXT packs a square grid of patch tokens; only the 'default' "
            "vision_feature_select_strategy is supported"
        )
    image_sizes = torch.as_tensor(inputs["image_sizes"]).cpu()
    tower = find_module(model, "vision_tower")
    weight = next(tower.parameters())
    crops, num_crops = _crops(model, inputs["pixel_values"], image_sizes)

    if budget is not None and callable(getattr(pruner, "with_complete_rows", None)):
        pruner = pruner.with_complete_rows()  # an exact budget order for any K (module doc)
    with torch.no_grad(), timed(stage_clock, "vision"):
        encoded = run_pruner(pruner, tower, crops.to(weight.device, weight.dtype), stage_clock)
    with torch.no_grad(), timed(stage_clock, "projector"):
        selection: Selection = encoded.selection
        if encoded.merged_features is not None:
            raise PruningError(
                "merging pruners are not supported on LLaVA-NeXT: the packed budget "
                "selects crop tokens, which merged features no longer map to"
            )
        features = layer_features(encoded, feature_layers(model))  # (sum C_i, N_tokens, D')
        num_prefix = features.shape[1] - selection.num_patches
        drop_prefix(model, num_prefix)  # checks there is a CLS to drop
        features = features[:, num_prefix:].flatten(0, 1)  # (sum C_i * N, D')

        kept = torch.zeros(features.shape[0], dtype=torch.bool)  # (sum C_i * N,)
        for crop, indices in enumerate(selection.kept):
            kept[crop * selection.num_patches + indices.cpu()] = True
        if selection.scores is not None:
            scores = selection.scores.detach().float().cpu().flatten()  # (sum C_i * N,)
            if torch.isnan(scores).any():
                raise PruningError("selection scores contain NaN")
        else:
            scores = torch.zeros(features.shape[0])
        admission = (
            None if selection.admission is None else selection.admission.cpu().flatten()
        )  # (sum C_i * N,)

        sources = packed_sources(model, num_crops, selection.num_patches, image_sizes)
        positions = [choose_positions(s, kept, scores, budget, admission) for s in sources]
        # per image (L'_i,): the source index at each kept packed position, or NEWLINE
        picked = [s[p] for s, p in zip(sources, positions, strict=True)]
        # Project the chosen tokens once, in source order (the model's own row order).
        chosen = torch.sort(torch.cat([p[p != NEWLINE] for p in picked])).values  # (M,)
        projector = find_module(model, "multi_modal_projector")
        projected = projector(features[chosen.to(features.device)])  # (M, D_text)
        newline = find_parameter(model, "image_newline").to(projected.dtype)  # (D_text,)
        table = torch.cat([projected, newline[None]], dim=0)  # (M + 1, D_text); row M = newline
        rows = [
            torch.where(p == NEWLINE, chosen.numel(), torch.searchsorted(chosen, p)) for p in picked
        ]
        image_features = table[torch.cat(rows).to(table.device)]  # (sum L'_i, D_text)

    token_id = config_token_id(model, "image_token_id", "image_token_index")
    segments = [
        Segment(token_id, s.numel(), p.numel()) for s, p in zip(sources, picked, strict=True)
    ]
    return generate_from_segments(
        model,
        inputs,
        segments,
        {token_id: image_features},
        generate_kwargs,
        {"image": selection},
        stage_clock,
    )

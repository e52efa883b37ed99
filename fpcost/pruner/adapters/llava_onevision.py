"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): images through AnyRes-max,
videos through 2x2 pooling, both pruned over the positions the LLM receives.

Images. As in LLaVA-NeXT (llava_next.py), the base image and its AnyRes crops each run
through the SigLIP tower (no CLS: strategy "full", 729 tokens at 384 px); the model projects
every crop token, lays the crops out spatially, unpads, then, new in OneVision, *shrinks*
the unpadded grid bilinearly when it holds more than N crops' worth of tokens
("anyres_max_N", r = sqrt(h·w / (N·side²)) > 1.1 → int(h // r) × int(w // r)), appends one
``image_newline`` per row and puts the base image first. A multi-image sample
(``batch_num_images`` > 1) gets only the base image and one newline per image.

Where pruning sits: *after* the shrink, over the packed positions, so that the kept count is
exactly what the LLM receives and keep-all is the model's own packing:

- an image that is not shrunk is packed as a map of source indices through the model's own
  ``pack_image_features`` (shrink disabled), so every packed position is one crop token;
  only the chosen tokens are projected (as for LLaVA-NeXT);
- a shrunk image: every packed position of the shrunk grid is a bilinear mix of up to four
  unpadded tokens; it takes the selection (kept or not, score, freePruner's admission key)
  of its *dominant* source, the one with the largest bilinear weight, which is
  ``interpolate(mode="nearest-exact")`` of the source map to the same size. Its features are
  the model's own: every crop token of that image is projected and packed (shrink included)
  by ``pack_image_features``, and the chosen positions are gathered from the result. The
  shrink mixes projected features, so projecting only kept tokens cannot reproduce it.

``budget`` (images only) is LLaVA-NeXT's rule over those positions (``choose_positions``:
freePruner's nested budget order with ``FreePruner.with_complete_rows``, baselines by score);
without it the pruner's own survivors are kept. Newlines are always kept and counted in both
the token and kept counts, as for LLaVA-NeXT.

Videos. The model runs every frame through the tower, projects all 729 tokens, pools each
frame bilinearly to ceil(27/2)² = 196 (``apply_pooling``), concatenates the frames and adds
one newline per video. Pruning sits after the pooling, at the pooled granularity: each
pooled position takes the selection of its dominant source token (same rule as the shrink)
and the pooled features are the model's own. Budgets do not apply to videos. Counts are per
video (one placeholder run: F·196 visual tokens + 1 newline).

Stages (``stage_clock``): "vision" = tower + selection (images and videos), "projector" =
projection, shrink / pooling and packing, "llm" = prompt rebuild + ``generate``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

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
)
from fpcost.pruner.adapters.llava_next import NEWLINE, _model_function, choose_positions
from fpcost.pruner.adapters.rebuild import Segment
from fpcost.pruner.adapters.stages import timed
from fpcost.pruner.api import Selection

NO_SHRINK = "anyres_max_1000000000"  # a cap no grid reaches: pack_image_features never shrinks


def _inner_model(model: nn.Module) -> nn.Module:
    """The module holding ``image_newline`` and ``pack_image_features`` (LlavaOnevisionModel;
    the wrapper's own ``pack_image_features`` forwards arguments the inner one rejects)."""
    for module in model.modules():
        if "image_newline" in module._parameters and callable(
            getattr(module, "pack_image_features", None)
        ):
            return module
    raise PruningError(f"{type(model).__name__} has no image_newline with pack_image_features()")


def _aspect_ratio(model: nn.Module) -> str:
    value = getattr(model.config, "vision_aspect_ratio", "anyres_max_9")
    if not isinstance(value, str) or not value.startswith("anyres_max_"):
        raise PruningError(f"vision_aspect_ratio ({value!r}) must be 'anyres_max_N'")
    return value


def num_crops(
    model: nn.Module, image_sizes: torch.Tensor, batch_num_images: torch.Tensor | None
) -> list[int]:
    """Crops (base included) the model runs per image: AnyRes for a sample holding one
    image, the base image alone for each image of a multi-image sample."""
    to_num_crops = _model_function(model, "image_size_to_num_patches")
    if batch_num_images is None:
        patching = [True] * len(image_sizes)
    else:
        patching = [int(n) == 1 for n in batch_num_images for _ in range(int(n))]
        if len(patching) != len(image_sizes):
            raise PruningError(
                f"batch_num_images sums to {len(patching)} images but image_sizes "
                f"holds {len(image_sizes)}"
            )
    return [
        int(
            to_num_crops(
                image_size=size,
                grid_pinpoints=model.config.image_grid_pinpoints,
                patch_size=model.config.vision_config.image_size,
            )
        )
        if patch
        else 1
        for size, patch in zip(image_sizes, patching, strict=True)
    ]


def _flat_crops(pixel_values: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """(num_images, max_crops, C, H, W) padded with empty crops -> (sum C_i, C, H, W)."""
    if pixel_values.dim() == 5:
        if pixel_values.shape[0] != len(counts):
            raise PruningError(
                f"pixel_values holds {pixel_values.shape[0]} images but image_sizes {len(counts)}"
            )
        return torch.cat([pv[:n] for pv, n in zip(pixel_values, counts, strict=True)], dim=0)
    if pixel_values.dim() != 4 or pixel_values.shape[0] != sum(counts):
        raise PruningError(
            f"pixel_values of shape {tuple(pixel_values.shape)} do not hold the "
            f"{sum(counts)} crops image_sizes implies"
        )
    return pixel_values


def dominant_sources(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(h, w) source indices -> (rows, cols): at each position of a bilinear resize to rows ×
    cols (align_corners False, as ``interpolate`` defaults), the source with the largest
    weight. Along each axis that is round((i + 0.5)·h/rows − 0.5) = floor((i + 0.5)·h/rows),
    which is exactly ``nearest-exact``."""
    resized = F.interpolate(
        grid.to(torch.float64)[None, None], size=(rows, cols), mode="nearest-exact"
    )  # (1, 1, rows, cols)
    return resized[0, 0].round().to(torch.long)


def packed_sources(
    model: nn.Module, counts: list[int], num_patches: int, image_sizes: torch.Tensor
) -> tuple[list[torch.Tensor], list[bool]]:
    """Per image, the flat source index (crop * num_patches + patch) at each packed position
    the LLM receives, or NEWLINE; and whether the image's grid was shrunk (see module doc).

    Packs a one-channel map of source indices through the model's ``pack_image_features``
    twice: without the shrink (the unpadded grid) and with the model's cap (the shape the
    LLM receives). List of (L_i,) int64."""
    inner = _inner_model(model)
    total = sum(counts) * num_patches
    sources = torch.arange(total, dtype=torch.float64).view(-1, num_patches, 1)  # (sum C_i, N, 1)
    per_image = list(torch.split(sources, counts, dim=0))
    newline = torch.tensor([float(NEWLINE)], dtype=torch.float64)  # (1,): a 1-channel newline
    full, _ = inner.pack_image_features(
        per_image, image_sizes, image_newline=newline, vision_aspect_ratio=NO_SHRINK
    )  # each (L_i, 1), integral
    capped, _ = inner.pack_image_features(
        per_image, image_sizes, image_newline=newline, vision_aspect_ratio=_aspect_ratio(model)
    )  # each (L'_i, 1); mixed values where shrunk
    out, shrunk = [], []
    for count, unshrunk, packed in zip(counts, full, capped, strict=True):
        unshrunk = unshrunk[:, 0].round().to(torch.long)  # (L_i,)
        if packed.shape[0] == unshrunk.shape[0]:
            out.append(unshrunk)
            shrunk.append(False)
            continue
        # base image first, then rows of (cols + 1): cols visual positions and a newline
        base = num_patches if count > 1 else 0
        rows0 = int((unshrunk[base:] == NEWLINE).sum())
        grid = unshrunk[base:].view(rows0, -1)[:, :-1]  # (h, w) unpadded grid, no newlines
        rows = int((packed[base:, 0] == NEWLINE).sum())
        cols = (packed.shape[0] - base) // rows - 1
        small = dominant_sources(grid, rows, cols)  # (rows, cols)
        with_newlines = torch.cat(
            [small, torch.full((rows, 1), NEWLINE, dtype=torch.long)], dim=1
        )  # (rows, cols + 1)
        out.append(torch.cat([unshrunk[:base], with_newlines.flatten()]))
        shrunk.append(True)
    return out, shrunk


def _selection_tensors(
    selection: Selection, num_units: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Flat (num_units * N,) kept mask, scores and admission key (None for baselines)."""
    n = selection.num_patches
    kept = torch.zeros(num_units * n, dtype=torch.bool)
    for unit, indices in enumerate(selection.kept):
        kept[unit * n + indices.cpu()] = True
    if selection.scores is not None:
        scores = selection.scores.detach().float().cpu().flatten()
        if torch.isnan(scores).any():
            raise PruningError("selection scores contain NaN")
    else:
        scores = torch.zeros(num_units * n)
    admission = None if selection.admission is None else selection.admission.cpu().flatten()
    return kept, scores, admission


def _patch_features(model: nn.Module, tower: nn.Module, pixels: torch.Tensor, pruner, clock):
    """Tower + selection on (U, C, H, W); returns the feature layer's patch tokens
    (U, N, D') and the selection."""
    weight = next(tower.parameters())
    with timed(clock, "vision"), torch.no_grad():
        encoded = run_pruner(pruner, tower, pixels.to(weight.device, weight.dtype), clock)
    if encoded.merged_features is not None:
        raise PruningError(
            "merging pruners are not supported on LLaVA-OneVision: its packing selects "
            "crop tokens, which merged features no longer map to"
        )
    selection: Selection = encoded.selection
    features = layer_features(encoded, feature_layers(model))  # (U, N_tokens, D')
    num_prefix = features.shape[1] - selection.num_patches
    if drop_prefix(model, num_prefix):
        features = features[:, 1:]
    elif num_prefix:
        raise PruningError(
            f"vision_feature_select_strategy 'full' passes on {num_prefix} prefix tokens, but "
            "LLaVA-OneVision packs a square grid of patch tokens; use 'default' for a CLS tower"
        )
    return features, selection  # (U, N, D')


def _image_features(model, inputs, pruner, budget, clock):
    """Pruned, packed image features (sum L'_i, D_text), segments and selection."""
    image_sizes = torch.as_tensor(inputs["image_sizes"]).cpu()
    counts = num_crops(model, image_sizes, inputs.get("batch_num_images"))
    crops = _flat_crops(inputs["pixel_values"], counts)
    if budget is not None and callable(getattr(pruner, "with_complete_rows", None)):
        pruner = pruner.with_complete_rows()  # an exact budget order for any K
    tower = find_module(model, "vision_tower")
    features, selection = _patch_features(model, tower, crops, pruner, clock)
    n = selection.num_patches
    with timed(clock, "projector"), torch.no_grad():
        flat = features.flatten(0, 1)  # (sum C_i * N, D')
        kept, scores, admission = _selection_tensors(selection, sum(counts))
        sources, shrunk = packed_sources(model, counts, n, image_sizes)
        positions = [choose_positions(s, kept, scores, budget, admission) for s in sources]
        picked = [s[p] for s, p in zip(sources, positions, strict=True)]  # per image (L'_i,)
        # project once: the chosen tokens of unshrunk images, every token of shrunk ones
        starts = torch.tensor([0, *counts]).cumsum(0)[:-1] * n
        needed = [
            torch.arange(int(start), int(start) + c * n) if s else p[p != NEWLINE]
            for start, c, s, p in zip(starts, counts, shrunk, picked, strict=True)
        ]
        rows_needed = torch.sort(torch.cat(needed)).values  # (M,)
        projector = find_module(model, "multi_modal_projector")
        projected = projector(flat[rows_needed.to(flat.device)])  # (M, D_text)
        newline = find_parameter(model, "image_newline").to(projected.dtype)  # (D_text,)
        inner = _inner_model(model)
        per_image = []
        for i, (start, c) in enumerate(zip(starts, counts, strict=True)):
            if shrunk[i]:  # the model's own packing (shrink included), then a gather
                at = torch.searchsorted(rows_needed, torch.arange(int(start), int(start) + c * n))
                own, _ = inner.pack_image_features(
                    [projected[at.to(projected.device)].view(c, n, -1)],
                    image_sizes[i : i + 1],
                    image_newline=newline,
                    vision_aspect_ratio=_aspect_ratio(model),
                )  # [(L_i, D_text)]
                per_image.append(own[0][positions[i].to(projected.device)])
                continue
            table = torch.cat([projected, newline[None]], dim=0)  # row M = newline
            rows = torch.where(
                picked[i] == NEWLINE, rows_needed.numel(), torch.searchsorted(rows_needed, picked[i])
            )
            per_image.append(table[rows.to(table.device)])  # (L'_i, D_text)
        image_features = torch.cat(per_image, dim=0)  # (sum L'_i, D_text)
    token_id = config_token_id(model, "image_token_id", "image_token_index")
    segments = [
        Segment(token_id, s.numel(), p.numel()) for s, p in zip(sources, picked, strict=True)
    ]
    return image_features, segments, selection


def _pooled_sources(model: nn.Module, num_patches: int) -> torch.Tensor:
    """(P,) the dominant source patch of each pooled position of one frame, the pooled size
    taken from the model's own ``apply_pooling`` on a one-channel map."""
    inner = _inner_model(model)
    side = int(round(num_patches**0.5))
    probe = torch.zeros(1, num_patches, 1, dtype=torch.float64)
    pooled = inner.apply_pooling(probe).shape[1]  # P
    pooled_side = int(round(pooled**0.5))
    if side * side != num_patches or pooled_side**2 != pooled:
        raise PruningError(f"frames of {num_patches} patches do not pool to a square grid")
    grid = torch.arange(num_patches).view(side, side)
    return dominant_sources(grid, pooled_side, pooled_side).flatten()  # (P,)


def _video_features(model, inputs, pruner, clock):
    """Pruned, pooled video features (sum K_v, D_text), segments and selection."""
    videos = inputs["pixel_values_videos"]
    if videos.dim() != 5:
        raise PruningError(
            f"pixel_values_videos must be (videos, frames, channels, height, width), "
            f"got {tuple(videos.shape)}"
        )
    num_videos, num_frames = videos.shape[:2]
    tower = find_module(model, "vision_tower")
    features, selection = _patch_features(model, tower, videos.flatten(0, 1), pruner, clock)
    n = selection.num_patches
    with timed(clock, "projector"), torch.no_grad():
        inner = _inner_model(model)
        projector = find_module(model, "multi_modal_projector")
        pooled = inner.apply_pooling(projector(features))  # (V * F, P, D_text)
        sources = _pooled_sources(model, n)  # (P,)
        kept, scores, admission = _selection_tensors(selection, num_videos * num_frames)
        newline = find_parameter(model, "image_newline").to(pooled.dtype)  # (D_text,)
        out, segments = [], []
        token_id = config_token_id(model, "video_token_id", "video_token_index")
        for v in range(num_videos):
            parts = []
            for f in range(num_frames):
                unit = v * num_frames + f
                at = choose_positions(unit * n + sources, kept, scores, None, admission)  # (K,)
                parts.append(pooled[unit, at.to(pooled.device)])  # (K, D_text)
            parts.append(newline[None])
            out.append(torch.cat(parts, dim=0))  # (K_v + 1, D_text)
            segments.append(Segment(token_id, num_frames * sources.numel() + 1, out[-1].shape[0]))
    return torch.cat(out, dim=0), segments, selection


def generate_llava_onevision(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    pruner,
    *,
    budget: int | None = None,
    stage_clock=None,
    **generate_kwargs,
) -> PrunedGeneration:
    """``generate`` with the visual tokens of images and videos pruned (see module doc).

    ``inputs``: ``input_ids`` (B, L), optional ``attention_mask`` (B, L); images as
    ``pixel_values`` (num_images, max_crops, C, H, W) with ``image_sizes`` (num_images, 2)
    (height, width) and optional ``batch_num_images`` (B,); videos as ``pixel_values_videos``
    (num_videos, F, C, H, W). ``budget``: visual tokens kept per image (newlines aside).
    """
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
    ):
        raise PruningError(f"budget ({budget!r}) must be a positive number of tokens per image")
    has_images = inputs.get("pixel_values") is not None
    has_videos = inputs.get("pixel_values_videos") is not None
    if not has_images and not has_videos:
        raise PruningError("LLaVA-OneVision inputs need pixel_values or pixel_values_videos")
    if budget is not None and not has_images:
        raise PruningError(
            "budget applies to LLaVA-OneVision images; videos keep the pruner's own selection"
        )
    if has_images and inputs.get("image_sizes") is None:
        raise PruningError("LLaVA-OneVision image inputs need image_sizes (num_images, 2)")
    features: dict[int, torch.Tensor] = {}
    segments: list[Segment] = []
    selections: dict[str, Selection] = {}
    if has_images:
        image_features, image_segments, selections["image"] = _image_features(
            model, inputs, pruner, budget, stage_clock
        )
        features[image_segments[0].token_id] = image_features
        segments += image_segments
    if has_videos:
        video_features, video_segments, selections["video"] = _video_features(
            model, inputs, pruner, stage_clock
        )
        features[video_segments[0].token_id] = video_features
        segments += video_segments
    with timed(stage_clock, "llm"):
        return generate_from_segments(
            model, inputs, segments, features, generate_kwargs, selections
        )

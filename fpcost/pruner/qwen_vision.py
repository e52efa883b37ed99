"""freePruner and the baselines on the Qwen2-VL / Qwen2.5-VL vision towers, at the
granularity of merged tokens (what the LLM receives).

``select_merged(pruner, visual, pixel_values, grid_thw)`` runs the tower once (SDPA kept)
with ``qwen_capture.QwenQKCapture`` hooks on the layers the method reads, takes the features
from that same pass (the merger output, ``pooler_output``: bit for bit what
``visual(pixel_values, grid_thw=grid_thw)`` returns) and selects per image (or video) over its
t·h·w/4 merged tokens, indexed in the processor's order (merged raster order per temporal
slice: the order the LLM receives them in).

Methods (``pruner`` as ``methods.get_pruner`` builds it):

- ``freepruner``: paper §3.2–3.3 over merged tokens: per-patch contribution degrees of the
  map each layer really computes (block diagonal over images, temporal slices and, in
  Qwen2.5-VL's windowed blocks, windows), averaged over each 2×2 merge group; top-k per
  pivotal layer with k = k_ratio × merged tokens; complementary tokens = IQR outliers of the
  pivotal tokens' pooled rows (``methods.select_from_scores``, shared with the LLaVA towers).
  Default layers stay the paper's (-4, -3 pivotal, -2 complementary). In Qwen2.5-VL (32
  blocks, full attention at 7, 15, 23, 31) those are blocks 28, 29 and 30: all windowed, so
  each row is zero outside its 8×8-patch window (the map the layer computes). ``settings``
  records the resolved layers and which of them are windowed.
- ``random``, ``uniform``: over merged tokens (uniform on the merged grid; a video's slices
  stacked as rows), with ``ratio`` / ``count``, or freePruner's count per image.
- ``cls`` and ``prumerge+``: refused (``PruningError``): both read a CLS token's attention,
  and these towers have none. PruMerge+ would also replace features by merging, which the
  merger output of the kept tokens does not support.
- ``keep-all``: every merged token, no hooks (``selection`` None).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from fpcost.pruner.api import Selection
from fpcost.pruner.baselines import random_indices, resolve_count, uniform_grid_indices
from fpcost.pruner.budget import NEVER
from fpcost.pruner.errors import PruningError
from fpcost.pruner.methods import (
    FreePruner,
    KeepAllPruner,
    RandomPruner,
    UniformPruner,
    _CountedBaseline,
    select_from_scores,
)
from fpcost.pruner.qwen_capture import (
    ImageAttention,
    QwenAttentionLayer,
    QwenQKCapture,
    find_qwen_attention_layers,
)
from fpcost.pruner.selection import FreePrunerConfig, resolve_layer

SUPPORTED = ("freepruner", "random", "uniform", "keep-all")


@dataclass
class MergedSelection:
    """One tower pass and its selection, per image / video of the batch, in order.

    ``features[i]``: (num_merged_i, D_llm), the merger's output for ALL merged tokens (what
    the LLM receives unpruned). ``kept[i]``: sorted unique int64 indices of kept merged
    tokens. ``num_merged[i]`` = t·h·w/4 of its ``grid_thw`` row. ``selection``: the raw
    ``Selection`` (None for keep-all); images of different sizes share it, so its
    ``num_patches`` is the largest merged count and ``scores`` / ``admission`` are padded on
    the right (-inf / ``budget.NEVER``); ``settings`` is the images' common settings, or
    ``{"per_image": [...]}`` when they differ (k follows each image's merged count).
    ``selection_time_s``: hooks + scoring + choosing, seconds (``EncoderOutput``'s meaning)."""

    features: list[torch.Tensor]
    kept: list[torch.Tensor]
    num_merged: list[int]
    selection: Selection | None
    selection_time_s: float


@dataclass(frozen=True)
class _Image:
    """One image's place in the packed batch."""

    index: int
    t: int
    rows: int  # merged rows (h / 2)
    cols: int  # merged columns (w / 2)
    start: int  # first patch on the packed axis
    merged_start: int  # first merged token on the packed merged axis

    @property
    def num_merged(self) -> int:
        return self.t * self.rows * self.cols


def check_method(pruner) -> None:
    """``PruningError`` for a method the Qwen towers cannot run (no CLS token)."""
    if isinstance(pruner, FreePruner) and pruner.config.include_cls:
        raise PruningError("--include-cls: Qwen2-VL / Qwen2.5-VL vision towers have no CLS "
                           "token; leave it out")
    if isinstance(pruner, (FreePruner, RandomPruner, UniformPruner, KeepAllPruner)):
        return
    name = getattr(pruner, "name", type(pruner).__name__)
    reason = ("reads a CLS token's attention" if name in ("cls", "prumerge+")
              else "is not implemented for them")
    raise PruningError(f"--method {name} {reason}; Qwen2-VL / Qwen2.5-VL vision towers have no "
                       f"CLS token; valid there: {', '.join(SUPPORTED)}")


def _merge_size(visual: nn.Module) -> int:
    size = getattr(visual, "spatial_merge_size", None)
    if size is None:
        size = getattr(getattr(visual, "config", None), "spatial_merge_size", None)
    if not isinstance(size, int) or size < 1:
        raise PruningError(f"{type(visual).__name__} has no spatial_merge_size; expected a "
                           "Qwen2-VL / Qwen2.5-VL vision tower")
    return size


def _images(grid_thw: torch.Tensor, pixel_values: torch.Tensor, merge: int) -> list[_Image]:
    if grid_thw.ndim != 2 or grid_thw.shape[1] != 3 or grid_thw.shape[0] < 1:
        raise PruningError(f"grid_thw must be (num_images, 3); got shape {tuple(grid_thw.shape)}")
    if pixel_values.ndim != 2:
        raise PruningError("pixel_values must be (sum of patches, C·T·P·P) as the Qwen2-VL "
                           f"image processor returns it; got shape {tuple(pixel_values.shape)}")
    images, start, merged = [], 0, 0
    for i, (t, h, w) in enumerate(grid_thw.tolist()):
        if t < 1 or h < merge or w < merge or h % merge or w % merge:
            raise PruningError(f"grid_thw[{i}] = {(t, h, w)}: t must be >= 1 and h, w positive "
                               f"multiples of the merge size {merge}")
        images.append(_Image(i, t, h // merge, w // merge, start, merged))
        start += t * h * w
        merged += t * h * w // merge**2
    if start != pixel_values.shape[0]:
        raise PruningError(f"grid_thw describes {start} patches but pixel_values has "
                           f"{pixel_values.shape[0]} rows")
    return images


def window_order(visual: nn.Module, grid_thw: torch.Tensor,
                 segments: dict[int, torch.Tensor] | None = None) -> torch.Tensor | None:
    """Qwen2.5-VL: ``window_index`` (sum of merged tokens,), the original merged index at each
    tower position, as the tower computes it (transformers' ``get_vision_window_index``);
    None for a tower without windows (Qwen2-VL). ``segments``: captured ``cu_seqlens`` by
    layer; those of windowed layers must be the windows computed here (``PruningError``
    otherwise: the tower's order would not be the one the scores are mapped back with)."""
    full = getattr(visual, "fullatt_block_indexes", None)
    if full is None:
        return None
    from transformers.vision_utils import get_vision_window_index

    index, windows = get_vision_window_index(
        grid_thw.cpu(), spatial_merge_size=visual.spatial_merge_size,
        window_size=visual.window_size, patch_size=visual.patch_size)
    for layer, captured in (segments or {}).items():
        if layer not in full and not torch.equal(captured, windows.to(torch.int64)):
            raise PruningError(f"vision block {layer} attended within other windows than "
                               "transformers' get_vision_window_index gives; cannot map its "
                               "scores back to the merged tokens' order")
    return index.to(torch.int64)


def windowed_layers(visual: nn.Module, num_layers: int) -> list[int]:
    """Resolved block indices that attend within windows (none for Qwen2-VL)."""
    full = getattr(visual, "fullatt_block_indexes", None)
    return [] if full is None else [i for i in range(num_layers) if i not in set(full)]


def _capture_layers(pruner, num_layers: int) -> tuple[int, ...]:
    if isinstance(pruner, KeepAllPruner):
        return ()
    return tuple(pruner.capture_layers(num_layers))


def select_merged(pruner, visual: nn.Module, pixel_values: torch.Tensor,
                  grid_thw: torch.Tensor) -> MergedSelection:
    """One pass of the Qwen-VL tower ``visual`` on ``pixel_values`` (sum patches, C·T·14·14)
    and ``grid_thw`` (n, 3), the merger output per image and ``pruner``'s selection over each
    image's merged tokens (module docstring)."""
    check_method(pruner)
    merge = _merge_size(visual)
    images = _images(grid_thw, pixel_values, merge)
    layers_found = find_qwen_attention_layers(visual)
    num_layers = len(layers_found)
    layers = _capture_layers(pruner, num_layers)
    clock = getattr(pruner, "clock", time.perf_counter)
    with torch.no_grad():
        if layers:
            with QwenQKCapture(layers_found, layers, clock) as capture:
                output = visual(pixel_values, grid_thw=grid_thw)
            hook_s = capture.elapsed_s
        else:
            capture, output = None, visual(pixel_values, grid_thw=grid_thw)
            hook_s = 0.0
        merged = getattr(output, "pooler_output", output)  # (sum merged, D_llm)
        counts = [image.num_merged for image in images]
        if merged.ndim != 2 or merged.shape[0] != sum(counts):
            raise PruningError(f"the tower's merger output has shape {tuple(merged.shape)}, "
                               f"expected ({sum(counts)}, D) merged tokens")
        features = list(torch.split(merged, counts))
        start = clock()
        if isinstance(pruner, KeepAllPruner):
            kept, selection = [torch.arange(n) for n in counts], None
        else:
            kept, selection = _select(pruner, visual, grid_thw, images, capture, layers_found,
                                      merge)
        selection_time_s = hook_s + clock() - start
    return MergedSelection(features, kept, counts, selection, selection_time_s)


def _select(pruner, visual, grid_thw, images, capture, layers_found, merge):
    order = window_order(visual, grid_thw, capture.segments if capture is not None else None)
    windowed = windowed_layers(visual, len(layers_found))
    picks = []
    generator = torch.Generator().manual_seed(pruner.seed) if isinstance(pruner, RandomPruner) else None
    for image in images:
        stop = image.start + image.num_merged * merge**2
        if order is None:
            local = torch.arange(image.num_merged)
        else:
            local = order[image.merged_start:image.merged_start + image.num_merged] - image.merged_start
        qk, segments = (capture.qk, capture.segments) if capture is not None else ({}, {})
        attention = ImageAttention(qk, segments, layers_found, image.start, stop, local,
                                   merge**2, getattr(pruner, "head_reduce", "mean"))
        picks.append(_select_image(pruner, attention, image, windowed, generator))
    return [p.kept[0] for p in picks], _combine(picks)


def freepruner_image(pruner: FreePruner, attention: ImageAttention,
                     windowed: list[int]) -> Selection:
    """freePruner on one image's merged tokens (module docstring); ``settings`` adds the
    token unit and the resolved layers that are windowed."""
    n = attention.num_merged
    num_layers = len(attention.layers_found)
    config: FreePrunerConfig = pruner.resolved_config(n)
    if config.budget is not None and config.budget > n:
        raise PruningError(f"--budget {config.budget} exceeds the image's {n} merged tokens")
    pivotal = config.pivotal_layers(num_layers)
    comp_layer = resolve_layer(config.complementary_layer, num_layers, "complementary_layer")
    degrees = torch.stack([attention.degrees(layer) for layer in pivotal])[:, None]  # (L, 1, M)

    def vectors(rows: torch.Tensor | None) -> torch.Tensor:
        if config.direction == "column":
            return attention.map(comp_layer).T[None]  # (1, M, M): column p as a vector
        return attention.rows(comp_layer, rows)[None]  # (1, R, M)

    selection = select_from_scores(config, degrees, vectors, pruner.complete_rows)
    settings = config.settings(num_layers, n)
    settings["token_unit"] = "merged 2x2"
    settings["windowed_layers"] = [i for i in (*pivotal, comp_layer) if i in windowed]
    selection.settings = settings
    return selection


def _select_image(pruner, attention: ImageAttention, image: _Image, windowed: list[int],
                  generator) -> Selection:
    n = image.num_merged
    if isinstance(pruner, FreePruner):
        return freepruner_image(pruner, attention, windowed)
    assert isinstance(pruner, _CountedBaseline)
    if pruner.match is not None:
        count = freepruner_image(FreePruner(pruner.match), attention, windowed).num_kept[0]
    else:
        count = resolve_count(n, pruner.ratio, pruner.count)
    if isinstance(pruner, RandomPruner):
        kept = random_indices(n, count, generator)
    else:  # uniform over the merged grid, temporal slices stacked as rows
        kept = uniform_grid_indices(image.t * image.rows, image.cols, count)
    return Selection(kept=[kept], num_patches=n, pivotal=[kept])


def _pad(rows: list[torch.Tensor | None], width: int, value) -> torch.Tensor | None:
    if any(r is None for r in rows):
        return None
    return torch.stack([torch.nn.functional.pad(r[0], (0, width - r.shape[-1]), value=value)
                        for r in rows])


def _combine(picks: list[Selection]) -> Selection:
    """Per-image selections as one ``Selection`` over the batch (see ``MergedSelection``)."""
    width = max(p.num_patches for p in picks)
    settings = [p.settings for p in picks]
    common = settings[0] if all(s == settings[0] for s in settings) else {"per_image": settings}
    return Selection(
        kept=[p.kept[0] for p in picks],
        num_patches=width,
        pivotal=[p.pivotal[0] for p in picks],
        complementary=[p.complementary[0] if p.complementary else torch.zeros(0, dtype=torch.int64)
                       for p in picks],
        scores=_pad([p.scores for p in picks], width, float("-inf")),
        filled=[p.filled[0] if p.filled else torch.zeros(0, dtype=torch.int64) for p in picks],
        admission=_pad([p.admission for p in picks], width, NEVER),
        settings=common,
    )


__all__ = ["MergedSelection", "QwenAttentionLayer", "select_merged", "check_method"]

"""Qwen2-VL / Qwen2.5-VL (``Qwen2VLForConditionalGeneration``,
``Qwen2_5_VLForConditionalGeneration``): prune merged visual tokens, keep their M-RoPE positions.

Seam: the model's vision tower (``model.model.visual``, the 2x2 patch merger included: it
runs inside the tower, so the tower already emits one feature per merged token) is run once
by the selector together with the pruner → the kept merged tokens of each image / video are
gathered → a prompt rebuilt with K_i ``<|image_pad|>`` (``<|video_pad|>``) placeholders per
image (video), ``<|vision_start|>`` / ``<|vision_end|>`` kept → the model's input embeddings
with the features scattered in → ``generate(inputs_embeds=..., position_ids=...)``.

Positions. Qwen's LLM reads 3-D rotary positions (temporal, height, width; M-RoPE). The
adapter computes them for the ORIGINAL prompt with the model's own ``get_rope_index``
(attention mask given, so left padding is skipped as in ``generate``) and keeps the columns
of the tokens that stay: a kept visual token keeps its (t, h, w), the text after an image
keeps its original position (which continues after the image's largest one), however many
tokens were dropped. They are handed to ``generate`` in the layout ``generate`` itself builds
(``_prepare_position_ids_for_generation`` in transformers 5.24): (4, B, L'), row 0 the
sequential text position of the rebuilt prompt (0 .. n-1 over its unpadded tokens, 0 on
padding; the language model uses it for the attention mask only), rows 1-3 the M-RoPE
positions. ``generate`` extends a given ``position_ids`` by ``last column + 1`` per decode
step, which is what plain ``generate`` does too; the prompt always ends with text
(``<|vision_end|>`` at least), whose original position is its maximum, so the first new
token sits at original max + 1, exactly as unpruned. Passing ``position_ids`` also keeps
the model's own ``rope_deltas`` cache (``model.model.rope_deltas``) out of play: the
instance is not modified (plain ``generate`` sets it; this adapter neither reads nor writes it).

Stages (``stage_clock``): "vision" is the selector (tower + selection) less the patch merger,
"projector" the patch merger (``visual.merger``: it runs inside the tower's forward, on every
merged token; timed by hooks and moved out of "vision", as the cost model prices it as the
projector) and the gather of the kept merged features, "llm" the prompt's rebuild and
positions, its embedding and ``generate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext

import torch
from torch import nn

from fpcost.pruner.adapters.common import (
    PrunedGeneration,
    PruningError,
    config_token_id,
    embed_and_generate,
    find_module,
    pruned_generation,
)
from fpcost.pruner.adapters.rebuild import Segment, pad_token_id, rebuild_prompt
from fpcost.pruner.adapters.stages import moved_to_stage, record_selection, timed

TEXT, IMAGE, VIDEO = 0, 1, 2  # mm_token_type_ids values of get_rope_index


def _default_selector():
    from fpcost.pruner.qwen_vision import select_merged  # Q1's module, imported when used

    return select_merged


def _checked(selected, grid_thw: torch.Tensor, merge: int, kind: str):
    """``selected`` (a ``MergedSelection``) checked against ``grid_thw`` (N, 3)."""
    expected = [int(n) for n in (grid_thw.prod(-1) // merge**2).tolist()]
    if list(selected.num_merged) != expected:
        raise PruningError(
            f"selector returned {list(selected.num_merged)} merged tokens per {kind}, "
            f"the grid gives {expected}"
        )
    if len(selected.features) != len(expected) or len(selected.kept) != len(expected):
        raise PruningError(f"selector returned features or kept indices for the wrong {kind} count")
    for i, (feats, kept, n) in enumerate(zip(selected.features, selected.kept, expected, strict=True)):
        if feats.shape[0] != n:
            raise PruningError(f"{kind} {i}: {feats.shape[0]} features for {n} merged tokens")
        if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= n):
            raise PruningError(f"{kind} {i}: kept indices outside [0, {n})")
        if kept.numel() > 1 and not bool((kept[1:] > kept[:-1]).all()):
            raise PruningError(f"{kind} {i}: kept indices are not sorted and unique")
    return selected


def _select(visual, pruner, selector, pixels, grid_thw, kind, stage_clock=None):
    if (pixels is None) != (grid_thw is None):
        name = "pixel_values" if kind == "image" else "pixel_values_videos"
        grid = "image_grid_thw" if kind == "image" else "video_grid_thw"
        raise PruningError(f"Qwen-VL {kind} inputs need both {name} and {grid}")
    if pixels is None:
        return None
    weight = next(visual.parameters())
    grid_thw = grid_thw.to(weight.device)
    with torch.no_grad():
        selected = selector(pruner, visual, pixels.to(weight.device, weight.dtype), grid_thw)
    record_selection(stage_clock, getattr(selected, "selection_time_s", None))
    return _checked(selected, grid_thw, visual.spatial_merge_size, kind)


def _type_ids(input_ids: torch.Tensor, image_id: int, video_id: int) -> torch.Tensor:
    """(B, L) mm_token_type_ids: 1 on image placeholders, 2 on video ones, 0 elsewhere."""
    types = torch.zeros_like(input_ids, dtype=torch.int)
    types[input_ids == image_id] = IMAGE
    types[input_ids == video_id] = VIDEO
    return types


def original_positions(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], image_id: int, video_id: int
) -> torch.Tensor:
    """M-RoPE positions of the unpruned prompt, (3, B, L), from the model's ``get_rope_index``
    (0 on padding)."""
    input_ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(input_ids) if mask is None else mask.to(input_ids.device)
    kwargs = {
        "image_grid_thw": inputs.get("image_grid_thw"),
        "video_grid_thw": inputs.get("video_grid_thw"),
    }
    if inputs.get("second_per_grid_ts") is not None:  # Qwen2.5-VL video
        kwargs["second_per_grid_ts"] = inputs["second_per_grid_ts"]
    # Qwen2VLModel / Qwen2_5_VLModel (``model.model``) own get_rope_index in transformers 5.24
    owner = next((m for m in model.modules() if callable(getattr(m, "get_rope_index", None))), None)
    if owner is None:
        raise PruningError(f"{type(model).__name__} has no get_rope_index()")
    positions, _ = owner.get_rope_index(
        input_ids,
        mm_token_type_ids=_type_ids(input_ids, image_id, video_id),
        attention_mask=mask,
        **kwargs,
    )
    return positions  # (3, B, L)


def kept_columns(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    segments: Sequence[Segment],
    kept: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """Per sample, the columns of ``input_ids`` (B, L) that stay after pruning, in order:
    every unpadded text token, and for visual unit i (in ``segments`` order, row-major per
    token id as ``rebuild_prompt`` consumes them) the placeholders at ``kept[i]``."""
    queues: dict[int, list[int]] = {}
    for index, segment in enumerate(segments):
        queues.setdefault(segment.token_id, []).append(index)
    cursor = dict.fromkeys(queues, 0)
    columns = []
    for ids_row, mask_row in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
        mine: list[int] = []
        j = 0
        while j < len(ids_row):
            if not mask_row[j]:
                j += 1
                continue
            if ids_row[j] not in queues:
                mine.append(j)
                j += 1
                continue
            index = queues[ids_row[j]][cursor[ids_row[j]]]  # rebuild_prompt checked the counts
            cursor[ids_row[j]] += 1
            mine.extend(j + int(k) for k in kept[index].tolist())
            j += segments[index].num_tokens
        columns.append(torch.tensor(mine, dtype=torch.long))
    return columns


def pruned_position_ids(
    positions: torch.Tensor, columns: Sequence[torch.Tensor], length: int
) -> torch.Tensor:
    """(4, B, length) ``generate`` position ids of the left-padded rebuilt prompt: row 0 the
    sequential text positions 0 .. n_b-1, rows 1-3 ``positions`` (3, B, L) at ``columns[b]``."""
    out = torch.zeros((4, len(columns), length), dtype=torch.long, device=positions.device)
    for b, cols in enumerate(columns):
        n = cols.numel()
        if n == 0:
            continue
        out[0, b, length - n :] = torch.arange(n, device=positions.device)
        out[1:, b, length - n :] = positions[:, b, cols.to(positions.device)]
    return out


def generate_qwen_vl(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    pruner,
    *,
    selector=None,
    stage_clock=None,
    **generate_kwargs,
) -> PrunedGeneration:
    """Greedy or sampled ``generate`` with each image's / video's merged tokens pruned.

    ``inputs``: the Qwen processor's output: ``input_ids`` (B, L) with ``<|image_pad|>`` /
    ``<|video_pad|>`` runs expanded, optional ``attention_mask``, ``pixel_values`` (patches,
    C*T*P*P) with ``image_grid_thw`` (num_images, 3), and/or ``pixel_values_videos`` with
    ``video_grid_thw`` (and ``second_per_grid_ts`` for Qwen2.5-VL videos).
    ``selector(pruner, visual, pixel_values, grid_thw)`` returns a ``MergedSelection``
    (default: ``fpcost.pruner.qwen_vision.select_merged``). ``num_tokens_per_unit`` /
    ``num_kept_per_unit`` count merged tokens per image / video, in prompt order.
    """
    if "position_ids" in generate_kwargs:
        raise PruningError("position_ids are computed by the Qwen-VL adapter; do not pass them")
    selector = _default_selector() if selector is None else selector
    visual = find_module(model, "visual")
    image_id = config_token_id(model, "image_token_id")
    video_id = config_token_id(model, "video_token_id")
    merger = getattr(visual, "merger", None)
    with timed(stage_clock, "vision"), (
            nullcontext() if merger is None
            else moved_to_stage(stage_clock, merger, "projector", within="vision")):
        images = _select(visual, pruner, selector, inputs.get("pixel_values"),
                         inputs.get("image_grid_thw"), "image", stage_clock)
        videos = _select(visual, pruner, selector, inputs.get("pixel_values_videos"),
                         inputs.get("video_grid_thw"), "video", stage_clock)
    if images is None and videos is None:
        raise PruningError("Qwen-VL inputs need pixel_values with image_grid_thw "
                           "or pixel_values_videos with video_grid_thw")
    segments: list[Segment] = []
    kept: list[torch.Tensor] = []
    features: dict[int, torch.Tensor] = {}
    selections = {}
    with timed(stage_clock, "projector"):
        for token_id, kind, selected in ((image_id, "image", images), (video_id, "video", videos)):
            if selected is None:
                continue
            for keep, n in zip(selected.kept, selected.num_merged, strict=True):
                segments.append(Segment(token_id, int(n), int(keep.numel())))
                kept.append(keep.to(torch.long).cpu())
            features[token_id] = torch.cat(
                [f[k.to(f.device)] for f, k in zip(selected.features, selected.kept, strict=True)]
            )  # (sum K_i, D_llm)
            if selected.selection is not None:
                selections[kind] = selected.selection

    input_ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(input_ids) if mask is None else mask
    with timed(stage_clock, "llm"):  # the prompt's rebuild and positions, then generate
        prompt = rebuild_prompt(input_ids, mask, segments, pad_token_id(model, generate_kwargs))
        columns = kept_columns(input_ids, mask, segments, kept)
        for b, cols in enumerate(columns):  # the rebuilt prompt is the original at these columns
            rebuilt = prompt.input_ids[b][prompt.attention_mask[b].bool()].cpu()
            if not torch.equal(input_ids[b].cpu()[cols], rebuilt):
                raise PruningError(f"sample {b}: kept columns disagree with the rebuilt prompt")
        positions = original_positions(model, {**inputs, "attention_mask": mask}, image_id,
                                       video_id)  # (3, B, L)
        position_ids = pruned_position_ids(positions, columns, prompt.input_ids.shape[1])
        device = model.get_input_embeddings().weight.device
        sequences, raw = embed_and_generate(
            model, prompt.input_ids, prompt.attention_mask, features,
            {**generate_kwargs, "position_ids": position_ids.to(device)},
        )
    return pruned_generation(prompt, segments, sequences, raw, selections)

"""The whole request as stages of operator records: ``vision`` → ``selection`` (only when
pruning is active) → ``projector`` → ``prefill`` → ``decode``.

This is the one stage assembly, shared by the scalar ``estimate`` and the vectorised
``sweep`` (token counts and batch sizes as ints, or as broadcastable numpy int64 arrays:
arrays in, arrays out). What each stage holds comes from the model's family
(``families``): its visual-token layout per sample, its tower, selection, projector and
LLM operators; nothing here knows a family by name.

The projector runs on the tokens it would see in transformers without pruning (the
family's ``num_projected_tokens``); with pruning, on what the family's pruner adapter
projects (``pruned_projected_tokens``: by default the kept tokens only, fpcost.pruner's
seam: select, then project, never more than without). Pruning is active when the LLM
receives fewer visual tokens than the unpruned layout gives; the ``selection`` stage then
costs freePruner's selection as its ``SelectionSpec`` says (``selection=None``: a selection
whose cost is left out).
"""

from __future__ import annotations

from dataclasses import dataclass

from .accounting import Accounting
from .errors import WorkloadError
from .families import family_of
from .layout import VisualLayout
from .llm import DecoderPass
from .ops import Op
from .pruning import DEFAULT_SELECTION, SelectionSpec
from .quant import QuantPlan
from .spec import ModelSpec
from .workload import Workload, visual_tokens_for_ratio

VISION_STAGES = ("vision", "selection", "projector")
MAX_DIGITS = 10  # a per-frame count has at most 10 digits (MAX_TOKENS = 2**31 - 1)
LLM_STAGES = ("prefill", "decode")
ALL_STAGES = VISION_STAGES + LLM_STAGES
PRE_DECODE_STAGES = ALL_STAGES[:-1]  # time to first token


__all__ = ["VisualLayout", "family_of", "workload_layout"]  # re-exported: callers read them from here


def visual_layout(model: ModelSpec, image_size: tuple[int, int] | None = None,
                  pixel_limits: tuple[int | None, int | None] | None = None,
                  num_frames: int | None = None) -> VisualLayout:
    """The unpruned vision side of one sample of ``model`` for an image of ``image_size``
    (width, height), or a video of ``num_frames`` such frames, and, for a dynamic-resolution
    family, ``pixel_limits`` (min_pixels, max_pixels; None: its defaults), as its family lays
    it out. Without limits and frames the family is called as (spec, image_size), so a
    family that takes neither need not accept the arguments."""
    family = family_of(model)
    extra = {} if num_frames is None else {"num_frames": num_frames}
    if num_frames is not None and not family.has_vision:
        raise WorkloadError(f"--frames {num_frames} changes nothing for {model.name}: it has no "
                            "vision tower")
    if pixel_limits is None or tuple(pixel_limits) == (None, None):
        return family.visual_layout(model, image_size, **extra)
    return family.visual_layout(model, image_size, pixel_limits=pixel_limits, **extra)


def workload_layout(model: ModelSpec, workload) -> VisualLayout:
    """``visual_layout`` for the image, pixel limits and frames of ``workload`` (a
    ``Workload`` or a sweep's request grid)."""
    return visual_layout(model, workload.image_size, workload.pixel_limits,
                         workload.num_frames)


def is_pruned(model: ModelSpec, workload: Workload) -> bool:
    """Whether the LLM receives fewer visual tokens than the unpruned layout gives."""
    if not family_of(model).has_vision:
        return False
    return workload.num_visual_tokens < workload_layout(model, workload).num_visual_tokens


def applicable_stages(model: ModelSpec, workload: Workload,
                      selection: SelectionSpec | None) -> tuple[str, ...]:
    """Every stage this request runs, in order."""
    family = family_of(model)
    if not family.has_vision:
        return LLM_STAGES
    pruned = is_pruned(model, workload) and selection is not None and family.costs_selection
    return tuple(s for s in ALL_STAGES if s != "selection" or pruned)


def check_stages(model, workload, selection, stages) -> tuple[str, ...]:
    """``stages`` validated against what the request runs (None: all of them)."""
    runs = applicable_stages(model, workload, selection)
    if stages is None:
        return runs
    for stage in stages:
        if stage not in ALL_STAGES:
            raise WorkloadError(f"stage {stage!r} is unknown; valid: {', '.join(ALL_STAGES)}")
        if stage not in runs:
            family = family_of(model)
            if not family.has_vision:
                why = "the model has no vision tower"
            elif not family.costs_selection:
                why = family.selection_note(model)
            else:
                why = "nothing is pruned (give --keep-ratio, --visual-tokens or --frame-tokens)"
            raise WorkloadError(f"stage {stage!r} does not run here: {why}; stages: {', '.join(runs)}")
    return tuple(s for s in ALL_STAGES if s in stages)


@dataclass(frozen=True)
class PipelineSettings:
    """How the stages are built, beside the workload and the LLM's quantization plan."""

    quant: QuantPlan
    accounting: Accounting
    flash_attention: bool
    onchip_buffer_bytes: float
    vision_quant: QuantPlan = QuantPlan()
    vision_layers: str = "all"
    selection: SelectionSpec | None = DEFAULT_SELECTION


def stage_ops(stage: str, model: ModelSpec, workload: Workload, settings: PipelineSettings,
              decode_kv_tokens=None, layout: VisualLayout | None = None) -> list[Op]:
    """Operators of one stage. ``workload`` is a ``Workload``, or anything with its
    ``num_visual_tokens``, ``num_prompt_tokens``, ``batch_size`` (ints or broadcastable
    integer arrays: a sweep's grid) and ``image_size``. ``decode_kv_tokens`` (int or integer
    array) is the cache length of the decode step(s) to build; by default the first step's
    (the prompt). ``layout``: the unpruned visual layout, if the caller has it already."""
    family = family_of(model)
    batch = workload.batch_size
    if stage in LLM_STAGES:
        prompt = workload.num_prompt_tokens
        if stage == "prefill":
            step = DecoderPass("prefill", prompt, prompt, batch)
        else:
            kv = prompt if decode_kv_tokens is None else decode_kv_tokens
            step = DecoderPass("decode", 1, kv, batch)
        return family.decoder_ops(model, settings, step)
    if stage not in VISION_STAGES:
        raise WorkloadError(f"stage {stage!r} is unknown; valid: {', '.join(ALL_STAGES)}")
    if not family.has_vision:
        return []
    if layout is None:
        layout = workload_layout(model, workload)
    return vision_side_ops(stage, model, settings, layout, workload.num_visual_tokens, batch)


def vision_side_ops(stage: str, model: ModelSpec, settings: PipelineSettings, layout: VisualLayout,
                    num_visual_tokens, batch_size) -> list[Op]:
    """Operators of the ``vision``, ``selection`` or ``projector`` stage for samples whose LLM
    receives ``num_visual_tokens`` visual tokens. Token counts and the batch may be integer
    arrays (a sweep): the selection stage then costs nothing where nothing is pruned."""
    family = family_of(model)
    if stage == "vision":
        return family.vision_ops(model, layout, settings, batch_size)
    if stage == "selection":
        if settings.selection is None:  # a selection whose cost is left out
            return []
        pruned = num_visual_tokens < layout.num_visual_tokens  # bool, or a bool array
        return family.selection_ops(model, layout, settings,
                                    batch_size * layout.num_images * pruned)
    # projector: unpruned, every token transformers projects (LLaVA-NeXT / OneVision: every
    # crop's features, before unpadding and newlines; Video-LLaVA: each frame's CLS too);
    # pruned, what the family's pruner adapter projects (by default the kept tokens: it
    # selects, then projects; Qwen-VL's merger and OneVision's shrunk images run on all).
    # p·x + (1 - p)·y, for ints and arrays alike
    projected = layout.num_projected_tokens
    kept = family.pruned_projected_tokens(model, layout, num_visual_tokens)
    pruned = num_visual_tokens < layout.num_visual_tokens
    tokens = pruned * kept + (1 - pruned) * projected
    return family.projector_ops(model, layout, settings, batch_size * tokens)


def projected_tokens(model: ModelSpec, workload: Workload) -> int:
    """Tokens per sample the projector runs on (see ``vision_side_ops``)."""
    layout = workload_layout(model, workload)
    if workload.num_visual_tokens < layout.num_visual_tokens:  # pruned
        return family_of(model).pruned_projected_tokens(model, layout,
                                                        workload.num_visual_tokens)
    return layout.num_projected_tokens


def parse_frame_tokens(text: str) -> tuple[int, ...]:
    """``"64,64,32"`` → (64, 64, 32): non-negative integers, comma-separated."""
    parts = [p.strip() for p in text.split(",")]
    # ASCII digits only ('²'.isdigit() is true), and short enough to be a count
    if not all(p.isascii() and p.isdigit() and len(p) <= MAX_DIGITS for p in parts):
        raise WorkloadError(f"frame tokens {text!r} must be comma-separated non-negative integers, "
                            "one per frame (e.g. 64,64,64,64,64,64,64,64)")
    return tuple(int(p) for p in parts)


def make_workload(model: ModelSpec, *, tokens: int | None = None, visual_tokens: int | None = None,
                  keep_ratio: float | None = None, frame_tokens: tuple[int, ...] | None = None,
                  text_tokens: int = 40, batch: int = 1, image_size: tuple[int, int] | None = None,
                  output_tokens: int = 2, min_pixels: int | None = None,
                  max_pixels: int | None = None, frames: int | None = None) -> Workload:
    """The workload that one way of giving the visual tokens describes, shared by the CLI and
    the Python API: ``tokens`` (the whole prompt), ``visual_tokens``, ``keep_ratio`` (of the
    unpruned count) or ``frame_tokens`` (a video's kept tokens per frame); by default every
    visual token the model produces for ``image_size`` (and ``min_pixels`` / ``max_pixels``,
    which only a dynamic-resolution family takes); ``frames``: each sample a video of that
    many frames (Qwen2-VL / Qwen2.5-VL, LLaVA-OneVision; a fixed-frame model accepts only its
    own count)."""
    given = [name for name, value in (("tokens", tokens), ("visual_tokens", visual_tokens),
                                       ("keep_ratio", keep_ratio), ("frame_tokens", frame_tokens))
             if value is not None]
    if len(given) > 1:  # the CLI checks this first, with its flag names
        raise WorkloadError(f"give only one of tokens, visual_tokens, keep_ratio, frame_tokens "
                            f"(got {' and '.join(given)})")
    family = family_of(model)
    limits = {"min_pixels": min_pixels, "max_pixels": max_pixels}
    for name, value in limits.items():
        if value is not None and not family.uses_pixel_limits:
            flag = "--" + name.replace("_", "-")
            raise WorkloadError(f"{flag} {value!r} changes nothing for {model.name}: only "
                                "dynamic-resolution models (Qwen2-VL, Qwen2.5-VL) resize within "
                                "pixel limits")
    extra = {"num_output_tokens": output_tokens, "image_size": image_size, **limits}
    if frames is not None:
        extra["num_frames"] = frames
    unpruned = workload_layout(model, Workload(0, 1, **extra)).num_visual_tokens
    if tokens is not None:
        whole = Workload.from_total(tokens, unpruned, batch)
        return Workload(whole.num_visual_tokens, whole.num_text_tokens, batch, **extra)
    if not family_of(model).has_vision and visual_tokens is None:
        raise WorkloadError(f"model {model.name!r} is a text-only LLM config; give the prompt "
                            "length (--tokens N)")
    if frame_tokens is not None:
        per_frame = unpruned // model.num_frames
        if model.num_frames == 1:
            raise WorkloadError(f"--frame-tokens needs a video model; {model.name!r} has one image "
                                "per sample (give visual tokens or a keep ratio)")
        if len(frame_tokens) != model.num_frames or max(frame_tokens) > per_frame:
            raise WorkloadError(f"frame tokens {','.join(map(str, frame_tokens))} must be "
                                f"{model.num_frames} counts (one per frame), each in 0..{per_frame}")
        return Workload(sum(frame_tokens), text_tokens, batch, frame_tokens=tuple(frame_tokens),
                        **extra)
    if keep_ratio is not None:
        visual_tokens = visual_tokens_for_ratio(unpruned, keep_ratio)
    elif visual_tokens is None:
        visual_tokens = unpruned
    return Workload(visual_tokens, text_tokens, batch, **extra)

"""The whole request as stages of operator records: ``vision`` → ``selection`` (only when
pruning is active) → ``projector`` → ``prefill`` → ``decode``.

What the vision side runs per sample (``visual_layout``):
- LLaVA-1.5: one image, T = 577 tokens in the tower, 576 visual tokens to the LLM;
- Video-LLaVA: ``num_frames`` (8) frames through the video tower at 224 px, 257 tokens each;
  the LLM receives 8 × 256 (the original Video-LLaVA drops each frame's CLS, as the paper's
  2,048 does; transformers' port keeps it, 8 × 257 = 2,056: ``--visual-tokens 2056`` is
  costed as given, the projector included);
- LLaVA-NeXT: 1 + crops images (AnyRes, anyres.py), and the packed token count.

The projector runs on the tokens it would see in transformers without pruning (LLaVA-NeXT
projects every crop's 576 features before unpadding); with pruning, on the kept tokens only
(fpcost.pruner's seam: select, then project), never more than without.
Pruning is active when the LLM receives fewer visual tokens than the unpruned layout gives;
the ``selection`` stage then costs freePruner's selection as its ``SelectionSpec`` says
(``selection=None``: a selection whose cost is left out).
"""

from __future__ import annotations

from dataclasses import dataclass

from .accounting import Accounting
from .anyres import AnyResLayout, anyres_layout, default_image_size
from .errors import WorkloadError
from .llm import DecoderPass, decoder_ops
from .ops import Op
from .pruning import DEFAULT_SELECTION, SelectionSpec, selection_ops
from .quant import QuantPlan
from .spec import ModelSpec
from .vision import num_vision_layers_run, projector_ops, vision_tower_ops
from .workload import Workload, visual_tokens_for_ratio

VISION_STAGES = ("vision", "selection", "projector")
MAX_DIGITS = 10  # a per-frame count has at most 10 digits (MAX_TOKENS = 2**31 - 1)
LLM_STAGES = ("prefill", "decode")
ALL_STAGES = VISION_STAGES + LLM_STAGES
PRE_DECODE_STAGES = ALL_STAGES[:-1]  # time to first token


@dataclass(frozen=True)
class VisualLayout:
    """Per sample, without pruning: images the tower runs, tokens per image in the tower,
    visual tokens the LLM receives, tokens the projector runs on."""

    num_images: int
    tokens_per_image: int
    num_visual_tokens: int
    num_projected_tokens: int
    anyres: AnyResLayout | None = None


def visual_layout(model: ModelSpec, image_size: tuple[int, int] | None = None) -> VisualLayout:
    """The unpruned vision side of ``model`` for an image of ``image_size`` (width, height);
    only LLaVA-NeXT's count depends on the size (the others resize to the tower's input)."""
    vision = model.vision
    if vision is None:
        return VisualLayout(0, 0, 0, 0)
    keep_cls = int(model.vision_feature_select_strategy == "full" and vision.has_cls_token)
    if model.kind == "llava-next":
        width, height = image_size or default_image_size(model.image_grid_pinpoints)
        layout = anyres_layout(width, height, model.image_grid_pinpoints, vision.image_size,
                               vision.patch_size, keep_cls)
        projected = layout.num_crops * (vision.num_patches + keep_cls)
        # Without an image size: the nominal count the model is quoted with (2880 = 5 x 576
        # for llava-v1.6, before unpadding and newline tokens); with one, transformers' exact.
        visual = layout.num_visual_tokens if image_size else model.default_num_visual_tokens
        return VisualLayout(layout.num_crops, vision.num_positions, visual, projected, layout)
    visual = model.default_num_visual_tokens
    projected = visual
    if model.kind == "video-llava":
        # transformers' port keeps each frame's CLS (8 x 257 = 2056): the projector can see
        # that many, so --visual-tokens up to 2056 is costed as given
        projected = max(visual, model.num_frames * vision.num_positions)
    return VisualLayout(model.num_frames, vision.num_positions, visual, projected)


def is_pruned(model: ModelSpec, workload: Workload) -> bool:
    """Whether the LLM receives fewer visual tokens than the unpruned layout gives."""
    if model.vision is None:
        return False
    return workload.num_visual_tokens < visual_layout(model, workload.image_size).num_visual_tokens


def applicable_stages(model: ModelSpec, workload: Workload,
                      selection: SelectionSpec | None) -> tuple[str, ...]:
    """Every stage this request runs, in order."""
    if model.vision is None:
        return LLM_STAGES
    pruned = is_pruned(model, workload) and selection is not None
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
            why = ("the model has no vision tower" if model.vision is None else
                   "nothing is pruned (give --keep-ratio, --visual-tokens or --frame-tokens)")
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
              decode_kv_tokens=None) -> list[Op]:
    """Operators of one stage. ``decode_kv_tokens`` (int or integer array) is the cache
    length of the decode step(s) to build; by default the first step's (the prompt)."""
    batch = workload.batch_size
    if stage in LLM_STAGES:
        prompt = workload.num_prompt_tokens
        if stage == "prefill":
            step = DecoderPass("prefill", prompt, prompt, batch)
        else:
            kv = prompt if decode_kv_tokens is None else decode_kv_tokens
            step = DecoderPass("decode", 1, kv, batch)
        return decoder_ops(model.llm, settings.quant, step, settings.accounting,
                           settings.flash_attention, settings.onchip_buffer_bytes)
    layout = visual_layout(model, workload.image_size)
    if stage in VISION_STAGES:
        return vision_side_ops(stage, model, settings, layout, workload.num_visual_tokens, batch)
    raise WorkloadError(f"stage {stage!r} is unknown; valid: {', '.join(ALL_STAGES)}")


def vision_side_ops(stage: str, model: ModelSpec, settings: PipelineSettings, layout: VisualLayout,
                    num_visual_tokens, batch_size) -> list[Op]:
    """Operators of the ``vision``, ``selection`` or ``projector`` stage for samples whose LLM
    receives ``num_visual_tokens`` visual tokens. Token counts and the batch may be integer
    arrays (a sweep): the selection stage then costs nothing where nothing is pruned."""
    num_layers = num_vision_layers_run(model.vision, settings.vision_layers)
    num_images = batch_size * layout.num_images
    if stage == "vision":
        return vision_tower_ops(model.vision, settings.vision_quant, num_images, num_layers,
                                settings.flash_attention, settings.onchip_buffer_bytes)
    if stage == "selection":
        pruned = num_visual_tokens < layout.num_visual_tokens  # bool, or a bool array
        return selection_ops(model.vision, settings.selection, num_images * pruned, num_layers,
                             settings.vision_quant.act_bits)
    # projector: all tokens it sees unpruned (LLaVA-NeXT: every crop before unpadding), or
    # the kept ones, whichever is fewer; a - (a - b)·(a > b) = min(a, b) for ints and arrays
    projected = layout.num_projected_tokens
    tokens = num_visual_tokens - (num_visual_tokens - projected) * (num_visual_tokens > projected)
    return projector_ops(model.projector, settings.vision_quant, batch_size * tokens)


def projected_tokens(model: ModelSpec, workload: Workload) -> int:
    """Tokens per sample the projector runs on (see ``vision_side_ops``)."""
    layout = visual_layout(model, workload.image_size)
    return min(workload.num_visual_tokens, layout.num_projected_tokens)


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
                  output_tokens: int = 2) -> Workload:
    """The workload that one way of giving the visual tokens describes, shared by the CLI and
    the Python API: ``tokens`` (the whole prompt), ``visual_tokens``, ``keep_ratio`` (of the
    unpruned count) or ``frame_tokens`` (a video's kept tokens per frame); by default every
    visual token the model produces for ``image_size``."""
    given = [name for name, value in (("tokens", tokens), ("visual_tokens", visual_tokens),
                                       ("keep_ratio", keep_ratio), ("frame_tokens", frame_tokens))
             if value is not None]
    if len(given) > 1:  # the CLI checks this first, with its flag names
        raise WorkloadError(f"give only one of tokens, visual_tokens, keep_ratio, frame_tokens "
                            f"(got {' and '.join(given)})")
    unpruned = visual_layout(model, image_size).num_visual_tokens
    extra = {"num_output_tokens": output_tokens, "image_size": image_size}
    if tokens is not None:
        whole = Workload.from_total(tokens, unpruned, batch)
        return Workload(whole.num_visual_tokens, whole.num_text_tokens, batch, **extra)
    if model.kind == "llm" and visual_tokens is None:
        raise WorkloadError(f"model {model.name!r} is a text-only LLM config; give the prompt "
                            "length (--tokens N)")
    if frame_tokens is not None:
        per_frame = unpruned // model.num_frames
        if model.num_frames == 1:
            raise WorkloadError(f"frame tokens need a video model; {model.name!r} has one image "
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

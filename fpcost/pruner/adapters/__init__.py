"""Run a ``TokenPruner`` inside transformers' own LLaVA, Video-LLaVA, LLaVA-NeXT,
LLaVA-OneVision, Qwen2-VL and Qwen2.5-VL.

``generate_pruned(model, inputs, pruner, **generate_kwargs)`` is the one entry point:
it dispatches on the model's class, prunes the visual tokens, rebuilds the prompt and
returns a ``PrunedGeneration``. No class is patched and no hook is left behind: the
adapters only call the instance's own submodules (vision tower, projector, input
embeddings, ``pack_image_features``) and ``generate(inputs_embeds=...)``, so there is
nothing to attach or undo and no context manager is needed.

Example::

    inputs = processor(images=image, text=prompt, return_tensors="pt")
    result = generate_pruned(model, inputs, get_pruner("freepruner"), max_new_tokens=32)
    result.sequences        # (B, T_new) new tokens
    result.num_kept         # LLM visual tokens per sample after pruning
    result.input_length     # prompt length the LLM read (shrinks with pruning)

    clock = StageClock(model.device)   # optional: seconds per stage of one call
    generate_pruned(model, inputs, pruner, stage_clock=clock, max_new_tokens=32)
    clock.times_s           # {"vision": s, "projector": s, "llm": s}
    clock.selection_time_s  # the pruner's own, inside "vision"

With ``KeepAll()`` (or ``get_pruner("keep-all")``) the result equals plain ``generate``
token for token (tests/pruner/test_adapters_*.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from fpcost.pruner.adapters.common import PrunedGeneration
from fpcost.pruner.adapters.llava import generate_llava
from fpcost.pruner.adapters.llava_next import generate_llava_next
from fpcost.pruner.adapters.llava_onevision import generate_llava_onevision
from fpcost.pruner.adapters.qwen_vl import generate_qwen_vl
from fpcost.pruner.adapters.rebuild import RebuiltPrompt, Segment, rebuild_prompt
from fpcost.pruner.adapters.stages import StageClock
from fpcost.pruner.adapters.video_llava import generate_video_llava
from fpcost.pruner.errors import PruningError
from fpcost.pruner.methods import KeepAllPruner as KeepAll

__all__ = [
    "KeepAll",
    "PrunedGeneration",
    "PruningError",
    "RebuiltPrompt",
    "SUPPORTED_MODELS",
    "Segment",
    "StageClock",
    "generate_pruned",
    "rebuild_prompt",
]

# transformers class name -> adapter. Matched against the model's class and its bases, so
# a subclass of a supported model uses its parent's adapter.
SUPPORTED_MODELS: dict[str, Callable[..., PrunedGeneration]] = {
    "LlavaForConditionalGeneration": generate_llava,
    "VideoLlavaForConditionalGeneration": generate_video_llava,
    "LlavaNextForConditionalGeneration": generate_llava_next,
    "LlavaOnevisionForConditionalGeneration": generate_llava_onevision,
    # Qwen2.5-VL does not subclass Qwen2-VL in transformers 5.24: both are listed
    "Qwen2VLForConditionalGeneration": generate_qwen_vl,
    "Qwen2_5_VLForConditionalGeneration": generate_qwen_vl,
}

_ACCEPTED_INPUTS = {
    "input_ids",
    "attention_mask",
    "pixel_values",
    "pixel_values_images",
    "pixel_values_videos",
    "image_sizes",
    "batch_num_images",
    "image_grid_thw",  # Qwen2-VL / Qwen2.5-VL
    "video_grid_thw",
    "second_per_grid_ts",  # Qwen2.5-VL videos
}
# Processor outputs the LLM does not need once the prompt is fed as embeddings.
_IGNORED_INPUTS = {"token_type_ids", "mm_token_type_ids"}


def adapter_for(model: nn.Module) -> Callable[..., PrunedGeneration]:
    """The adapter for ``model``'s class, or a PruningError listing the supported classes."""
    for cls in type(model).__mro__:
        if cls.__name__ in SUPPORTED_MODELS:
            return SUPPORTED_MODELS[cls.__name__]
    raise PruningError(
        f"{type(model).__name__} is not supported; supported models: {', '.join(SUPPORTED_MODELS)}"
    )


def generate_pruned(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    pruner,
    *,
    budget: int | None = None,
    stage_clock: StageClock | None = None,
    **generate_kwargs,
) -> PrunedGeneration:
    """Generate with the visual tokens of ``inputs`` pruned by ``pruner``.

    ``inputs``: a processor's output (``BatchFeature`` or any mapping) with ``input_ids``,
    optional ``attention_mask``, and the model's pixel inputs (``pixel_values``; Video-LLaVA
    also ``pixel_values_videos``; LLaVA-NeXT also ``image_sizes``; LLaVA-OneVision
    ``image_sizes``, ``batch_num_images`` and / or ``pixel_values_videos``). ``pruner``: any
    ``TokenPruner``. ``budget``: LLaVA-NeXT and LLaVA-OneVision images only, the visual
    tokens kept per image.
    ``generate_kwargs`` go to ``model.generate`` unchanged (e.g. ``max_new_tokens``,
    ``do_sample=False``). ``stage_clock``: a ``StageClock`` that every adapter fills with
    the seconds of its "vision", "projector" and "llm" stages and the pruner's
    ``selection_time_s`` (``stages.py``); None (the default) times nothing. Returns the new
    tokens and the per-sample kept counts.
    """
    adapter = adapter_for(model)
    unknown = set(inputs) - _ACCEPTED_INPUTS - _IGNORED_INPUTS
    if unknown:
        raise PruningError(
            f"unexpected inputs {sorted(unknown)}; accepted: {sorted(_ACCEPTED_INPUTS)}"
        )
    if "input_ids" not in inputs:
        raise PruningError("inputs need input_ids with the processor's visual placeholders")
    if adapter in (generate_llava_next, generate_llava_onevision):
        return adapter(
            model, inputs, pruner, budget=budget, stage_clock=stage_clock, **generate_kwargs
        )
    if budget is not None:
        raise PruningError(
            f"budget applies to LLaVA-NeXT and LLaVA-OneVision only, not {type(model).__name__}"
        )
    if adapter is generate_llava and inputs.get("pixel_values") is None:
        raise PruningError("LLaVA inputs need pixel_values")
    return adapter(model, inputs, pruner, stage_clock=stage_clock, **generate_kwargs)

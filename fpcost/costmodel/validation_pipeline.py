"""Predicted against measured whole requests: encoder forward, freePruner selection,
projector on the kept tokens and LLM prefill, per image, pruned and unpruned.

The LLM prefill is predicted by the runtime execution profile (runtime.py) that matches
what is timed (transformers' eager Llama with SDPA); the vision-side stages (pipeline.py's
``vision``, ``selection`` and ``projector`` operators) count one kernel per cost-model
operator, on the same calibrated profile. Pure arithmetic; SI units.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from .accounting import FPCOST
from .errors import WorkloadError
from .hardware import HardwareProfile
from .pipeline import PipelineSettings, stage_ops
from .quant import QuantPlan
from .runtime import DEFAULT_RUNTIME, Kernel, kernel_time_s, prefill_kernels
from .spec import ModelSpec
from .validation import error_figures
from .workload import Workload

VISION_SIDE = ("vision", "selection", "projector")
BREAK_EVEN_STEP = 4  # kept counts scanned for the break-even keep ratio


def predicted_request_s(model: ModelSpec, num_visual_tokens: int, num_text_tokens: int,
                        hardware: HardwareProfile, quant: QuantPlan, vision_quant: QuantPlan,
                        runtime: str = DEFAULT_RUNTIME) -> dict[str, float]:
    """Seconds per stage of one batch-1 request whose LLM receives ``num_visual_tokens``
    (fewer than the model's layout: pruned, with the selection stage), on ``hardware``
    with its efficiencies and launch time."""
    unpruned = model.default_num_visual_tokens
    if not 0 < num_visual_tokens <= unpruned:
        raise WorkloadError(f"kept tokens ({num_visual_tokens}) must be in 1..{unpruned}")
    settings = PipelineSettings(quant, FPCOST, True, hardware.onchip_buffer_bytes, vision_quant)
    workload = Workload(num_visual_tokens, num_text_tokens)
    stages = {}
    for stage in VISION_SIDE:
        if stage == "selection" and num_visual_tokens == unpruned:
            continue
        kernels = [Kernel(op, 1, op.name) for op in stage_ops(stage, model, workload, settings)]
        stages[stage] = sum(kernel_time_s(k, hardware) for k in kernels)
    llm_kernels = prefill_kernels(model.llm, quant, num_visual_tokens + num_text_tokens, runtime,
                                  hardware.onchip_buffer_bytes, hardware.device_type)
    stages["prefill"] = sum(kernel_time_s(k, hardware) for k in llm_kernels)
    return stages


def break_even_keep_ratio(model: ModelSpec, num_text_tokens: int, hardware: HardwareProfile,
                          quant: QuantPlan, vision_quant: QuantPlan) -> float | None:
    """The largest keep ratio (kept / unpruned visual tokens) at which the predicted pruned
    request is faster than the unpruned one (selection overhead included); None if no
    pruned count pays."""
    unpruned = model.default_num_visual_tokens
    full = sum(predicted_request_s(model, unpruned, num_text_tokens, hardware, quant,
                                   vision_quant).values())
    for kept in range(unpruned - 1, 0, -BREAK_EVEN_STEP):
        pruned = sum(predicted_request_s(model, kept, num_text_tokens, hardware, quant,
                                         vision_quant).values())
        if pruned < full:
            return kept / unpruned
    return None


def pipeline_report(rows: Sequence[Mapping], break_even: float | None) -> dict:
    """Per-image rows (each with measured and predicted pruned and unpruned seconds) and
    the summary: errors of the end-to-end speedup and of the pruned request's time."""
    out = []
    for row in rows:
        measured_speedup = row["measured_unpruned_s"] / row["measured_pruned_s"]
        predicted_speedup = row["predicted_unpruned_s"] / row["predicted_pruned_s"]
        out.append({**row, "measured_speedup": measured_speedup,
                    "predicted_speedup": predicted_speedup,
                    "speedup_abs_rel_error": abs(predicted_speedup - measured_speedup)
                    / measured_speedup})
    speedup = error_figures([r["predicted_speedup"] for r in out],
                            [r["measured_speedup"] for r in out])
    time = error_figures([r["predicted_pruned_s"] for r in out],
                         [r["measured_pruned_s"] for r in out])
    return {
        "images": out,
        "summary": {
            "speedup": speedup,
            "time": time,
            "median_measured_speedup": statistics.median(r["measured_speedup"] for r in out),
            "median_predicted_speedup": statistics.median(r["predicted_speedup"] for r in out),
            "break_even_keep_ratio": break_even,
        },
    }

"""``fpcost validate --images``: the whole pruned request per image, measured and predicted
(the JSON ``pipeline`` section and its table)."""

from __future__ import annotations

from fpcost.costmodel.units import MILLI

from .calibrate import progress_bar
from .render import Column, render_table

ms = lambda v: "—" if v is None else f"{v / MILLI:.1f}"  # noqa: E731
x2 = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
PIPELINE_COLUMNS = (
    Column("image", "Image", justify="left"),
    Column("num_kept", "Kept"),
    Column("measured_pruned_s", "Pruned\nmeas. (ms)", ms),
    Column("predicted_pruned_s", "Pruned\npred. (ms)", ms),
    Column("measured_unpruned_s", "Unpruned\nmeas. (ms)", ms),
    Column("predicted_unpruned_s", "Unpruned\npred. (ms)", ms),
    Column("measured_speedup", "Speedup\nmeas.", x2),
    Column("predicted_speedup", "Speedup\npred.", x2),
)


def pipeline_section(loaded, paths, llm, dtype, device, profile, text_tokens, warmup, repeats,
                     statistic, max_spread, retries) -> dict:
    """Time every image's request pruned and unpruned and predict both (see
    ``fpcost.pruner.request`` and ``fpcost.costmodel.validation_pipeline``)."""
    from fpcost.costmodel.quant import QuantPlan
    from fpcost.costmodel.validation_pipeline import (
        break_even_keep_ratio,
        pipeline_report,
        predicted_request_s,
    )
    from fpcost.pruner.request import measure_requests, request_model_spec
    from fpcost.pruner.timing import DTYPE_BITS

    encoder, pruner = loaded
    with progress_bar(repeats, f"timing {len(paths)} whole requests") as step:
        timings = measure_requests(encoder, pruner, paths, llm, dtype, device, text_tokens,
                                   warmup, repeats, step, max_spread=max_spread, retries=retries)
    model = request_model_spec(encoder, llm)
    quant = QuantPlan.uniform(DTYPE_BITS[dtype])
    vision_quant = QuantPlan.uniform(32)  # the encoder and projector run in float32 here
    unpruned_pred = predicted_request_s(model, model.default_num_visual_tokens, text_tokens,
                                        profile, quant, vision_quant)
    rows = []
    for t in timings:
        pruned_pred = predicted_request_s(model, t.num_kept, text_tokens, profile, quant,
                                          vision_quant)
        rows.append({
            "image": t.image, "num_tokens": t.num_tokens, "num_kept": t.num_kept,
            "measured_pruned_s": t.total_s("pruned", statistic),
            "measured_unpruned_s": t.total_s("unpruned", statistic),
            "predicted_pruned_s": sum(pruned_pred.values()),
            "predicted_unpruned_s": sum(unpruned_pred.values()),
            "measured_stages_s": {"pruned": t.stages_s("pruned", statistic),
                                  "unpruned": t.stages_s("unpruned", statistic)},
            "predicted_stages_s": {"pruned": pruned_pred, "unpruned": unpruned_pred},
            "dispersion": {"pruned": t.dispersion("pruned").as_dict(),
                           "unpruned": t.dispersion("unpruned").as_dict()},
        })
    report = pipeline_report(rows, break_even_keep_ratio(model, text_tokens, profile, quant,
                                                         vision_quant))
    report["settings"] = {
        "encoder": encoder.name, "projector": "mlp2x_gelu (random weights)",
        "llm": llm.name, "text_tokens": text_tokens, "repeats": repeats,
        "statistic": statistic, "timed": "encoder forward (+ freePruner selection when "
        "pruned), projector on the kept tokens, LLM prefill; preprocessing excluded",
    }
    return report


def render_pipeline(pipeline: dict) -> None:
    summary = pipeline["summary"]
    err = summary["speedup"]["median_abs_rel_error"]
    be = summary["break_even_keep_ratio"]
    render_table(pipeline["images"], PIPELINE_COLUMNS,
                 title="Whole request per image: encoder + selection + projector + prefill",
                 caption=f"End-to-end speedup median |err| {100 * err:.1f}%; predicted break-even "
                         f"keep ratio {'none' if be is None else f'{be:.2f}'} (pruning pays below it).")

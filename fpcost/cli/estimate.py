"""``fpcost estimate``: roofline totals (and optionally every operator) of one workload."""

from __future__ import annotations

from pathlib import Path

import click

from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.estimate import Estimate
from fpcost.costmodel.estimate import estimate as run_estimate
from fpcost.costmodel.units import GIGA, MEGA, MILLI, TERA
from fpcost.costmodel.workload import Workload, visual_tokens_for_ratio

from .options import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    accounting_option,
    hardware_option,
    model_options,
    quant_options,
    read_tokens_file,
    resolve_hardware,
    resolve_model,
    resolve_quant,
)
from .render import Column, emit_csv, emit_json, format_option, render_table, scaled

STAGE_COLUMNS = (
    Column("stage", "Stage", justify="left"),
    Column("flops", "TFLOPs", scaled(TERA, 2)),
    Column("time_s", "Time (ms)", scaled(MILLI, 2)),
    Column("memory_access_bytes", "Memory access (GB)", scaled(GIGA, 2)),
    Column("activation_store_bytes", "Stored activations (GB)", scaled(GIGA, 2)),
    Column("weight_bytes", "Weights read (GB)", scaled(GIGA, 2)),
    Column("kv_write_bytes", "KV written (GB)", scaled(GIGA, 3)),
)
OPERATOR_COLUMNS = (
    Column("stage", "Stage", justify="left"),
    Column("block", "Block", justify="left"),
    Column("name", "Operator", justify="left"),
    Column("count", "×"),
    Column("precision", "Precision"),
    Column("flops", "GFLOPs", scaled(GIGA, 2)),
    Column("memory_access_bytes", "Memory (MB)", scaled(MEGA, 2)),
    Column("time_s", "Time (ms)", scaled(MILLI, 3)),
    Column("bound", "Bound"),
)


def workload_from_options(model, tokens, visual_tokens, text_tokens, keep_ratio, batch) -> Workload:
    """The one workload the token options describe (``--tokens-from`` is handled apart)."""
    if tokens is not None and (visual_tokens is not None or keep_ratio is not None):
        raise click.UsageError("--tokens sets the whole input; do not combine it with "
                               "--visual-tokens or --keep-ratio")
    if visual_tokens is not None and keep_ratio is not None:
        raise click.UsageError("give either --visual-tokens or --keep-ratio, not both")
    if tokens is not None:
        return Workload.from_total(tokens, model.default_num_visual_tokens, batch)
    if model.kind == "llm" and visual_tokens is None:
        raise WorkloadError(f"model {model.name!r} is a text-only LLM config; give --tokens N")
    if keep_ratio is not None:
        visual_tokens = visual_tokens_for_ratio(model.default_num_visual_tokens, keep_ratio)
    elif visual_tokens is None:
        visual_tokens = model.default_num_visual_tokens
    return Workload(visual_tokens, text_tokens, batch)


def estimate_payload(result: Estimate, breakdown: bool) -> dict:
    """A JSON-ready dict: settings, per-stage totals (SI units), optionally operators."""
    payload = {
        "model": result.model.name,
        "hardware": result.hardware.name,
        "accounting": result.accounting.name,
        "quant": {"weight_bits": result.quant.weight_bits, "act_bits": result.quant.act_bits,
                  "kv_bits": result.quant.kv_bits},
        "flash_attention": result.flash_attention,
        "workload": {
            "num_visual_tokens": result.workload.num_visual_tokens,
            "num_text_tokens": result.workload.num_text_tokens,
            "num_prompt_tokens": result.workload.num_prompt_tokens,
            "batch_size": result.workload.batch_size,
        },
        "stages": {stage: totals.as_dict() for stage, totals in result.totals().items()},
    }
    if breakdown:
        payload["operators"] = result.operator_rows(per_layer=False)
    return payload


@click.command()
@model_options
@hardware_option
@quant_options
@click.option("--tokens", type=POSITIVE_INT, default=None,
              help="The LLM's whole input length per sample (visual + text).")
@click.option("--visual-tokens", type=NON_NEGATIVE_INT, default=None,
              help="Visual tokens the LLM receives [default: the model's].")
@click.option("--text-tokens", type=NON_NEGATIVE_INT, default=40, show_default=True,
              help="Text tokens of the prompt.")
@click.option("--keep-ratio", type=float, default=None,
              help="Fraction in (0, 1] of the model's visual tokens kept by pruning.")
@click.option("--tokens-from", type=click.Path(path_type=Path), default=None,
              help="Per-image kept counts from `fpcost prune --output FILE`: one estimate per image.")
@click.option("--batch", type=POSITIVE_INT, default=1, show_default=True, help="Batch size.")
@click.option("--flash-attention/--no-flash-attention", default=False, show_default=True)
@accounting_option
@click.option("--stage", type=click.Choice(["prefill", "decode", "all"]), default="prefill",
              show_default=True, help="Stage(s) to estimate; decode = one step over the prompt's KV cache.")
@click.option("--breakdown", is_flag=True, help="Also list every operator (summed over layers).")
@format_option
def estimate(model_name, config_path, hardware_name, bits, quant_text, tokens, visual_tokens,
             text_tokens, keep_ratio, tokens_from, batch, flash_attention, accounting, stage,
             breakdown, output_format):
    """Roofline estimate of FLOPs, time, memory traffic and stored activations."""
    model = resolve_model(model_name, config_path)
    quant = resolve_quant(bits, quant_text)
    hardware = resolve_hardware(hardware_name)
    stages = ("prefill", "decode") if stage == "all" else (stage,)

    def run(workload: Workload) -> Estimate:
        return run_estimate(model, workload, hardware, quant, accounting, flash_attention, stages)

    if tokens_from is not None:
        if tokens is not None or visual_tokens is not None or keep_ratio is not None:
            raise click.UsageError("--tokens-from sets the visual tokens; do not combine it "
                                   "with --tokens, --visual-tokens or --keep-ratio")
        _estimate_per_image(model, read_tokens_file(tokens_from), text_tokens, batch, run,
                            output_format)
        return
    workload = workload_from_options(model, tokens, visual_tokens, text_tokens, keep_ratio, batch)
    result = run(workload)
    payload = estimate_payload(result, breakdown)
    if output_format == "json":
        emit_json(payload)
    elif output_format == "csv":
        if breakdown:
            emit_csv(payload["operators"])
        else:
            emit_csv([{"stage": s, **t} for s, t in payload["stages"].items()])
    else:
        _render(result, payload, breakdown)


def _render(result: Estimate, payload: dict, breakdown: bool) -> None:
    w = result.workload
    caption = (
        f"{result.model.name} on {result.hardware.name}, {result.quant.label}, "
        f"{w.num_visual_tokens} visual + {w.num_text_tokens} text tokens, batch {w.batch_size}, "
        f"FlashAttention {'on' if result.flash_attention else 'off'}, "
        f"accounting {result.accounting.name}. GB = 1e9 B; TFLOPs = 1e12 FLOPs."
    )
    rows = [{"stage": s, **t} for s, t in payload["stages"].items()]
    render_table(rows, STAGE_COLUMNS, title="fpcost estimate", caption=caption)
    if breakdown:
        render_table(payload["operators"], OPERATOR_COLUMNS, title="Operators (summed over layers)")


def _estimate_per_image(model, images, text_tokens, batch, run, output_format) -> None:
    baseline = run(Workload(model.default_num_visual_tokens, text_tokens, batch))
    base_time = {s: t.time_s for s, t in baseline.totals().items()}
    rows = []
    for entry in images:
        result = run(Workload(entry["num_kept"], text_tokens, batch))
        totals = result.totals()
        first = next(iter(totals))
        rows.append({
            "image": entry["image"],
            "num_visual_tokens": entry["num_kept"],
            "stages": {s: t.as_dict() for s, t in totals.items()},
            "speedup": {s: base_time[s] / t.time_s for s, t in totals.items()},
            "time_s": totals[first].time_s,
            "flops": totals[first].flops,
            "memory_access_bytes": totals[first].memory_access_bytes,
            "speedup_first_stage": base_time[first] / totals[first].time_s,
        })
    if output_format == "json":
        emit_json({"model": model.name,
                   "baseline": {"num_visual_tokens": model.default_num_visual_tokens,
                                "stages": {s: t.as_dict() for s, t in baseline.totals().items()}},
                   "images": [{k: r[k] for k in ("image", "num_visual_tokens", "stages", "speedup")}
                              for r in rows]})
    elif output_format == "csv":
        emit_csv(rows, ["image", "num_visual_tokens", "flops", "time_s", "memory_access_bytes",
                        "speedup_first_stage"])
    else:
        first = next(iter(base_time))
        render_table(rows, (
            Column("image", "Image", justify="left"),
            Column("num_visual_tokens", "Visual tokens"),
            Column("flops", "TFLOPs", scaled(TERA, 2)),
            Column("time_s", f"{first.capitalize()} time (ms)", scaled(MILLI, 2)),
            Column("memory_access_bytes", "Memory access (GB)", scaled(GIGA, 2)),
            Column("speedup_first_stage", "Speedup", lambda v: f"{v:.2f}×"),
        ), title=f"fpcost estimate per image ({model.name}, baseline "
                 f"{model.default_num_visual_tokens} visual tokens)")

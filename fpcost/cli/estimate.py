"""``fpcost estimate``: roofline totals (and optionally every operator) of one workload."""

from __future__ import annotations

from pathlib import Path

import click

from fpcost.cli.bounds import InputPath
from fpcost.costmodel.anyres import parse_image_size
from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.estimate import Estimate
from fpcost.costmodel.estimate import estimate as run_estimate
from fpcost.costmodel.families import image_size_families
from fpcost.costmodel.memory import MemoryFootprint, memory_footprint
from fpcost.costmodel.pipeline import (
    ALL_STAGES,
    family_of,
    is_pruned,
    make_workload,
    parse_frame_tokens,
    projected_tokens,
    workload_layout,
)
from fpcost.costmodel.pruning import DEFAULT_SELECTION, SelectionSpec
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.units import GIGA, MEGA, MILLI, TERA
from fpcost.costmodel.workload import MAX_PIXEL_LIMIT, Workload

from .options import (
    BATCH_SIZE,
    NON_NEGATIVE_INT,
    OUTPUT_TOKENS,
    POSITIVE_INT,
    accounting_option,
    check_keep_ratio,
    hardware_option,
    model_options,
    quant_options,
    read_tokens_document,
    resolve_hardware,
    resolve_model,
    resolve_quant,
    vision_options,
)
from .parallel_options import (
    parallel_caption,
    parallel_options,
    parallelism_payload,
    resolve_parallelism,
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
COMMUNICATION_COLUMN = Column("communication_time_s", "Comm (ms)", scaled(MILLI, 2))
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


def parse_layers(text: str) -> tuple[int, ...]:
    """``"-3,-2"`` → a tuple of layer indices."""
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise WorkloadError(f"--selection-layers {text!r} must be comma-separated integer layer "
                            "indices (e.g. -3,-2)") from None


def workload_from_options(model, tokens, visual_tokens, text_tokens, keep_ratio, batch,
                          image_size=None, frame_tokens=None, output_tokens=2, min_pixels=None,
                          max_pixels=None, frames=None) -> Workload:
    """The one workload the token options describe (``--tokens-from`` is handled apart)."""
    given = [flag for flag, value in (("--tokens", tokens), ("--visual-tokens", visual_tokens),
                                      ("--keep-ratio", keep_ratio), ("--frame-tokens", frame_tokens))
             if value is not None]
    if len(given) > 1:
        raise click.UsageError("give only one of --tokens, --visual-tokens, --keep-ratio, "
                               f"--frame-tokens (got {' and '.join(given)})")
    check_keep_ratio(keep_ratio)
    size = parse_image_size(image_size) if image_size is not None else None
    counts = parse_frame_tokens(frame_tokens) if frame_tokens is not None else None
    return make_workload(model, tokens=tokens, visual_tokens=visual_tokens, keep_ratio=keep_ratio,
                         frame_tokens=counts, text_tokens=text_tokens, batch=batch,
                         image_size=size, output_tokens=output_tokens, min_pixels=min_pixels,
                         max_pixels=max_pixels, frames=frames)


def estimate_payload(result: Estimate, breakdown: bool, memory: MemoryFootprint | None = None) -> dict:
    """A JSON-ready dict: settings, per-stage and end-to-end totals (SI units), latency
    summary, memory footprint, optionally operators."""
    w = result.workload
    layout = workload_layout(result.model, w)
    payload = {
        "model": result.model.name,
        "hardware": result.hardware.name,
        "accounting": result.accounting.name,
        "quant": _quant_dict(result.quant),
        "flash_attention": result.flash_attention,
        "settings": _settings(result),
        "workload": {
            "num_visual_tokens": w.num_visual_tokens,
            "num_text_tokens": w.num_text_tokens,
            "num_prompt_tokens": w.num_prompt_tokens,
            "batch_size": w.batch_size,
            "num_output_tokens": w.num_output_tokens,
            "num_decode_steps": w.num_decode_steps,
            "num_final_context_tokens": w.num_final_context_tokens,
            "image_size": list(w.image_size) if w.image_size else None,
            "frame_tokens": list(w.frame_tokens) if w.frame_tokens else None,
            "min_pixels": w.min_pixels,
            "max_pixels": w.max_pixels,
            "num_unpruned_visual_tokens": layout.num_visual_tokens,
            "num_vision_images_per_sample": layout.num_images,
            "num_vision_tokens_per_image": layout.tokens_per_image,
            "num_projected_tokens_per_sample": projected_tokens(result.model, w)
            if family_of(result.model).has_vision else 0,
            "pruned": is_pruned(result.model, w),
            **({"num_frames": w.num_frames} if w.num_frames is not None else {}),
        },
        "stages_shown": list(result.shown),
        # the stages listed (--stage); end_to_end, ttft_s, tpot_s: always the whole request
        "stages": {stage: totals.as_dict() for stage, totals in result.totals().items()},
        "end_to_end": result.end_to_end().as_dict(),
        "ttft_s": result.ttft_s,
        "tpot_s": result.tpot_s,
        "end_to_end_latency_s": result.end_to_end().time_s,
    }
    if memory is not None:
        payload["memory"] = memory.as_dict()
    if not result.parallelism.is_single:
        payload["parallelism"] = parallelism_payload(result)
    if breakdown:
        payload["operators"] = result.operator_rows(per_layer=False)  # the stages listed
    return payload


def _quant_dict(quant) -> dict:
    return {"weight_bits": quant.weight_bits, "act_bits": quant.act_bits, "kv_bits": quant.kv_bits}


def _settings(result: Estimate) -> dict:
    model = result.model
    family = family_of(model)
    notes = []
    if family.has_vision:
        notes.append("vision, selection and projector stages are fpcost additions, counted with "
                     "fpcost's conventions in every accounting mode; they run at vision_quant "
                     "(the quantization plan targets the LLM)")
        if not family.costs_selection:
            notes.append(family.selection_note(model))
        if result.accounting.name == "llm-viewer":
            notes.append("prefill and decode follow LLM-Viewer (2024) exactly")
    notes.append("N output tokens as generate(max_new_tokens=N): the prefill yields the first, "
                 "N - 1 decode steps the rest, step i over a cache of prompt + i tokens, each "
                 "step timed on its own roofline; TPOT = decode time / (N - 1)")
    settings = {"notes": notes}
    if family.has_vision:
        settings.update({
            "vision_layers": result.vision_layers,
            "num_vision_layers_run": family.num_layers_run(model, result.settings),
            "vision_quant": _quant_dict(result.vision_quant),
            "selection": _selection_settings(result),
        })
    return settings


def _selection_settings(result: Estimate) -> dict | None:
    """The selection as the family's pruner runs it (anchored default layers; k of the
    tokens it scores per image, crop or frame; Qwen-VL: per image or video, merged)."""
    model = result.model
    family = family_of(model)
    selection = family.effective_selection(model, result.selection)
    if selection is None or not family.costs_selection:
        return None
    layout = workload_layout(model, result.workload)
    return {"selection_layers": list(selection.resolved_layers(family.tower_depth(model))),
            "complementary_layer": selection.complementary_layer,
            "k": selection.resolved_k(family.selection_scored_tokens(model, layout))}


@click.command()
@model_options
@hardware_option
@quant_options
@click.option("--tokens", type=POSITIVE_INT, default=None,
              help="The LLM's whole input length per sample (visual + text).")
@click.option("--visual-tokens", type=NON_NEGATIVE_INT, default=None,
              help="Visual tokens the LLM receives [default: the model's, unpruned].")
@click.option("--text-tokens", type=NON_NEGATIVE_INT, default=40, show_default=True,
              help="Text tokens of the prompt.")
@click.option("--keep-ratio", type=float, default=None,
              help="Fraction in (0, 1] of the model's visual tokens kept by pruning.")
@click.option("--frame-tokens", default=None, metavar="N,N,...",
              help="Video: kept visual tokens of each frame, comma-separated (one per frame).")
@click.option("--image-size", default=None, metavar="WxH",
              help="LLaVA-NeXT, LLaVA-OneVision (AnyRes) and Qwen2-VL / Qwen2.5-VL (dynamic "
                   "resolution) only: image width x height in pixels, which sets the crops or "
                   "the patch grid and the token count [default: LLaVA-NeXT the largest "
                   "pinpoint, 672x672; LLaVA-OneVision and Qwen 1280x720]. Other models resize "
                   "every image to their tower's input and refuse it.")
@click.option("--min-pixels", type=click.IntRange(1, MAX_PIXEL_LIMIT), default=None,
              help="Qwen2-VL / Qwen2.5-VL only: the image processor's min_pixels, the smallest "
                   "area an image is resized to [default: 3136].")
@click.option("--max-pixels", type=click.IntRange(1, MAX_PIXEL_LIMIT), default=None,
              help="Qwen2-VL / Qwen2.5-VL only: the image processor's max_pixels, the largest "
                   "area an image is resized to [default: 12845056].")
@click.option("--output-tokens", type=OUTPUT_TOKENS, default=2, show_default=True,
              help="Generated tokens N, as generate(max_new_tokens=N): the prefill yields the "
                   "first, N-1 decode steps the rest (step i over a cache of prompt + i). "
                   "The default 2 is one decode step over the prompt: LLM-Viewer's decode. "
                   "1 = the prefill alone (no decode step, TPOT undefined).")
@click.option("--tokens-from", type=InputPath(path_type=Path), default=None,
              help="A results file of `fpcost prune --output FILE`: one estimate per image (per "
                   "video for a video model), its token geometry checked against the model's, "
                   "its selection costed with the file's own settings.")
@click.option("--batch", type=BATCH_SIZE, default=1, show_default=True,
              help="Batch size (samples per request).")
@click.option("--flash-attention/--no-flash-attention", default=False, show_default=True,
              help="Cost attention as one fused FlashAttention kernel (K/V re-read per tile of "
                   "query rows; no s x s scores in memory) instead of three unfused operators.")
@accounting_option
@vision_options
@parallel_options
@click.option("--stage", type=click.Choice(ALL_STAGES + ("all",)), default="all", show_default=True,
              help="Stage rows to list; all = every stage the request runs (selection only when "
                   "pruning). Every stage is always estimated: time to first token, time per "
                   "output token and end-to-end latency describe the whole request.")
@click.option("--breakdown", is_flag=True,
              help="Also list every operator (summed over layers) of the listed stages.")
@format_option
def estimate(model_name, config_path, hardware_name, bits, quant_text, tokens, visual_tokens,
             text_tokens, keep_ratio, frame_tokens, image_size, min_pixels, max_pixels,
             output_tokens, tokens_from, batch,
             flash_attention, accounting, vision_layers, vision_quant_text, selection_layers,
             tensor_parallel, pipeline_parallel, frames, stage, breakdown, output_format):
    """Roofline estimate of every stage of a request: FLOPs, time, memory traffic, stored
    activations, time to first token, time per output token, and the memory footprint."""
    model = resolve_model(model_name, config_path)
    quant = resolve_quant(bits, quant_text)
    hardware = resolve_hardware(hardware_name)
    vision_quant = QuantPlan.parse(vision_quant_text)
    parallelism = resolve_parallelism(tensor_parallel, pipeline_parallel)
    family = family_of(model)
    if image_size is not None and not family.uses_image_size:
        why = f"; {family.image_size_note(model)}" if family.has_vision else ""
        raise click.BadParameter(
            f"{image_size!r} changes nothing for {model.name}: only the "
            f"{image_size_families()} families use the image size" + why,
            param_hint="--image-size")
    for flag, value in (("--min-pixels", min_pixels), ("--max-pixels", max_pixels)):
        if value is not None and not family.uses_pixel_limits:
            raise click.BadParameter(
                f"{value} changes nothing for {model.name}: only Qwen2-VL / Qwen2.5-VL models "
                "resize images within pixel limits", param_hint=flag)
    if selection_layers is not None and family.has_vision and not family.costs_selection:
        raise click.BadParameter(f"{selection_layers!r} changes nothing: "
                                 f"{family.selection_note(model)}", param_hint="--selection-layers")
    selection = (SelectionSpec(parse_layers(selection_layers)) if selection_layers is not None
                 else DEFAULT_SELECTION)
    stages = None if stage == "all" else (stage,)

    def run(workload: Workload, spec: SelectionSpec | None = selection,
            shown: tuple[str, ...] | None = stages) -> Estimate:
        return run_estimate(model, workload, hardware, quant, accounting, flash_attention, shown,
                            vision_quant=vision_quant, vision_layers=vision_layers, selection=spec,
                            parallelism=parallelism)

    if tokens_from is not None:
        given = [flag for flag, value in (("--tokens", tokens), ("--visual-tokens", visual_tokens),
                                          ("--keep-ratio", keep_ratio),
                                          ("--frame-tokens", frame_tokens),
                                          ("--selection-layers", selection_layers),
                                          ("--min-pixels", min_pixels),
                                          ("--max-pixels", max_pixels), ("--frames", frames))
                 if value is not None]
        if given:
            raise click.UsageError(f"--tokens-from sets the visual tokens and the selection; do "
                                   f"not combine it with {', '.join(given)}")
        if breakdown:
            raise click.UsageError("--breakdown lists one request's operators; with --tokens-from "
                                   "(one request per image) leave it out, or run estimate "
                                   "--visual-tokens N --breakdown for one image's count")
        size = parse_image_size(image_size) if image_size is not None else None
        from .tokens_from import estimate_per_image

        estimate_per_image(model, read_tokens_document(tokens_from), text_tokens, batch,
                           output_tokens, size, run, stage, output_format)
        return
    workload = workload_from_options(model, tokens, visual_tokens, text_tokens, keep_ratio, batch,
                                     image_size, frame_tokens, output_tokens, min_pixels,
                                     max_pixels, frames)
    result = run(workload)
    payload = estimate_payload(result, breakdown, memory_footprint(result))
    if output_format == "json":
        emit_json(payload)
    elif output_format == "csv":
        if breakdown:
            emit_csv(payload["operators"])
        else:
            emit_csv([{"stage": s, **t} for s, t in payload["stages"].items()]
                     + [{"stage": "end_to_end", **payload["end_to_end"]}])
    else:
        _render(result, payload, breakdown)


def _render(result: Estimate, payload: dict, breakdown: bool) -> None:
    w = result.workload
    size = f", image {w.image_size[0]}x{w.image_size[1]}" if w.image_size else ""
    caption = (
        f"{result.model.name} on {result.hardware.name}, LLM {result.quant.label}, "
        f"{w.num_visual_tokens} visual + {w.num_text_tokens} text tokens{size}, "
        f"batch {w.batch_size}, {w.num_output_tokens} output token{'' if w.num_output_tokens == 1 else 's'} "
        f"({w.num_decode_steps} decode step{'' if w.num_decode_steps == 1 else 's'}), "
        f"FlashAttention {'on' if result.flash_attention else 'off'}, "
        f"accounting {result.accounting.name}. GB = 1e9 B; TFLOPs = 1e12 FLOPs."
    ) + parallel_caption(result)
    if family_of(result.model).has_vision:
        caption += (f"\nvision tower: {payload['workload']['num_vision_images_per_sample']} image(s) x "
                    f"{payload['workload']['num_vision_tokens_per_image']} tokens per sample, "
                    f"{payload['settings']['num_vision_layers_run']} layers, "
                    f"{result.vision_quant.label}; " + "; ".join(payload["settings"]["notes"][:2]) + ".")
    rows = [{"stage": s, **t} for s, t in payload["stages"].items()]
    whole = "end_to_end" if tuple(result.shown) == tuple(result.stages) else "end_to_end (all stages)"
    rows.append({"stage": whole, **payload["end_to_end"]})
    columns = STAGE_COLUMNS if result.parallelism.is_single else (
        STAGE_COLUMNS[:3] + (COMMUNICATION_COLUMN,) + STAGE_COLUMNS[3:])
    render_table(rows, columns, title="fpcost estimate", caption=caption)
    tpot = payload["tpot_s"]
    summary = [{"what": "Time to first token", "value": f"{payload['ttft_s'] / MILLI:.2f} ms"},
               {"what": "Time per output token (after the first)",
                "value": "— (no decode step)" if tpot is None else f"{tpot / MILLI:.2f} ms"},
               {"what": "End-to-end latency",
                "value": f"{payload['end_to_end_latency_s'] / MILLI:.2f} ms"}]
    memory = payload.get("memory")
    if memory is not None and memory["num_gpus"] > 1:
        summary.append({"what": "GPUs (memory below: per GPU, the busiest)",
                        "value": f"{memory['num_gpus']} (stage {memory['pipeline_stage']})"})
    if memory is not None:
        for part, value in memory["weight_bytes"].items():
            summary.append({"what": f"Weights: {part}", "value": f"{value / GIGA:.3f} GB"})
        summary += [
            {"what": "KV cache (final context)", "value": f"{memory['kv_cache_bytes'] / GIGA:.3f} GB"},
            {"what": "Peak activations", "value": f"{memory['peak_activation_bytes'] / GIGA:.3f} GB "
                                                  f"({memory['peak_activation_operator']})"},
            {"what": "Total / device memory", "value": f"{memory['total_bytes'] / GIGA:.2f} / "
                                                       f"{memory['device_memory_bytes'] / GIGA:.2f} GB"},
            {"what": "Fits?", "value": "yes" if memory["fits"] else "no"},
            {"what": "Largest batch that fits", "value": str(memory["max_batch_size"])},
        ]
    render_table(summary, (Column("what", "Latency and memory", justify="left"),
                           Column("value", "Value")))
    if breakdown:
        render_table(payload["operators"], OPERATOR_COLUMNS, title="Operators (summed over layers)")

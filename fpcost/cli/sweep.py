"""``fpcost sweep``: every combination of models, devices, plans, visual tokens and batch
sizes, vectorized (``fpcost.costmodel.sweep``). Table: a readable subset of the columns;
CSV / JSON: all of them, raw SI numbers."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from fpcost.cli.bounds import InputPath
from fpcost.costmodel.accounting import ACCOUNTING_MODES
from fpcost.costmodel.anyres import parse_image_size
from fpcost.costmodel.families import family_of, image_size_families
from fpcost.costmodel.parallel import MAX_PARALLEL
from fpcost.costmodel.pipeline import ALL_STAGES
from fpcost.costmodel.pruning import DEFAULT_SELECTION, SelectionSpec
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.sweep import MAX_CONFIGURATIONS
from fpcost.costmodel.units import MILLI, VALID_BITS
from fpcost.costmodel.workload import MAX_BATCH, MAX_PIXEL_LIMIT, MAX_TOKENS

from .files import output_path_callback, write_atomic
from .options import OUTPUT_TOKENS, non_empty_models, vision_options
from .parallel_options import frames_option
from .render import FORMATS, Column, render_table, scaled, stderr_console

# The table view prints at most this many rows (CSV and JSON print all).
TABLE_ROW_LIMIT = 200


def parse_ratios(text: str) -> list[float]:
    """``0.1:1:0.1`` (start:stop:step, stop included) or ``0.25,0.5,1``; each in (0, 1]."""
    values = [float(v) for v in _parse_values(text, "--keep-ratios", Decimal)]
    for value in values:
        if not 0 < value <= 1:
            raise click.BadParameter(f"keep ratio {value:g} is outside (0, 1]", param_hint="--keep-ratios")
    return values


def parse_ints(text: str, option: str, minimum: int, maximum: int = MAX_TOKENS) -> list[int]:
    """``64,128,576`` or ``64:576:64`` (stop included); each an integer in
    [``minimum``, ``maximum``]."""
    values = _parse_values(text, option, int)
    for value in values:
        if not minimum <= value <= maximum:
            raise click.BadParameter(f"{_brief(str(value))} is not in {minimum}..{maximum:,}",
                                     param_hint=option)
    return values


def _brief(text: str) -> str:
    """``text`` for a one-line message (a 4,000-digit number abbreviated)."""
    return text if len(text) <= 40 else f"{text[:20]}...({len(text):,} characters)"


def _parse_values(text: str, option: str, number):
    """A comma list or one start:stop:step range of ``number`` (int or Decimal, so that
    0.1:1:0.1 gives exactly 0.1, 0.2, …, 1.0)."""
    what = "integers" if number is int else "numbers"
    usage = f"expected a comma-separated list of {what} or start:stop:step, got {_brief(text)!r}"
    try:
        if ":" in text:
            parts = [number(p.strip()) for p in text.split(":")]
            if len(parts) != 3 or not all(_finite(p) for p in parts):
                raise click.BadParameter(usage, param_hint=option)
            start, stop, step = parts
            if step <= 0 or start > stop:
                raise click.BadParameter(
                    f"range {_brief(text)!r} needs start ≤ stop and a positive step", param_hint=option)
            count = int((stop - start) // step) + 1
            if count > MAX_CONFIGURATIONS:
                raise click.BadParameter(f"range {_brief(text)!r} has {count:,} values, more than "
                                         f"{MAX_CONFIGURATIONS:,}", param_hint=option)
            return [start + i * step for i in range(count)]
        values = [number(p.strip()) for p in text.split(",")]
    except (ValueError, InvalidOperation):
        raise click.BadParameter(usage, param_hint=option) from None
    if not all(_finite(v) for v in values):
        raise click.BadParameter(usage, param_hint=option)
    return values


def _finite(value) -> bool:
    return value.is_finite() if isinstance(value, Decimal) else True


def _columns(stages: tuple[str, ...], num_decode_steps: int = 1,
             several_splits: bool = False) -> list[Column]:
    cols = [
        Column("model", "Model", justify="left"),
        Column("hardware", "Hardware", justify="left"),
        Column("quant", "Quant", justify="left"),
        Column("keep_ratio", "Keep", lambda v: "—" if v != v else f"{v:.3g}"),
        Column("num_visual_tokens", "Visual tokens"),
        Column("batch_size", "Batch"),
    ]
    if several_splits:
        cols.append(Column("tensor_parallel", "TP"))
        cols.append(Column("pipeline_parallel", "PP"))
    if "prefill" in stages:
        cols += [
            Column("prefill_time_s", "Prefill (ms)", scaled(MILLI, 2)),
            Column("prefill_speedup", "Speedup", lambda v: "—" if v != v else f"{v:.2f}×"),
        ]
    if "decode" in stages:
        label = ("Decode step (ms)" if num_decode_steps == 1
                 else f"Decode, {num_decode_steps} steps (ms)")
        cols.append(Column("decode_time_s", label, scaled(MILLI, 3)))
    for stage in stages if len(stages) < len(ALL_STAGES) else ():  # a stage asked for alone
        if stage not in ("prefill", "decode"):
            cols.append(Column(f"{stage}_time_s", f"{stage.capitalize()} (ms)", scaled(MILLI, 3)))
    cols += [  # always the whole request's
        Column("ttft_s", "TTFT (ms)", scaled(MILLI, 2)),
        Column("ttft_speedup", "TTFT speedup", lambda v: "—" if v != v else f"{v:.2f}×"),
    ]
    return cols


@click.command()
@click.option("--model", "-m", "models", multiple=True, callback=non_empty_models,
              help="Built-in model or config.json path; repeat for several [default: llava-1.5-7b].")
@click.option("--config", "configs", multiple=True, type=InputPath(path_type=Path),
              help="A Hugging Face config.json (or its directory) as a model; repeatable.")
@click.option("--hardware", "-g", "hardware", multiple=True,
              help="Hardware profile name or .toml file; repeat for several [default: a6000].")
@click.option("--bits", multiple=True, type=click.Choice([str(b) for b in VALID_BITS]),
              help="Weights, activations and KV cache at N bits; repeat for several plans "
                   "[default: 16, unless --quant].")
@click.option("--quant", "quants", multiple=True, metavar="wNaNkvN",
              help="A plan with independent bit widths, e.g. w4a16kv16; repeatable.")
@click.option("--keep-ratios", default=None, metavar="LIST|START:STOP:STEP",
              help="Fractions in (0, 1] of the visual tokens kept, e.g. 0.1:1:0.1 or 0.25,0.5,1.")
@click.option("--visual-tokens", default=None, metavar="LIST|START:STOP:STEP",
              help="Visual-token counts instead of ratios, e.g. 64,288,576 or 64:576:64 "
                   "[default: all of each model's].")
@click.option("--text-tokens", type=click.IntRange(min=0, max=MAX_TOKENS), default=40, show_default=True,
              help="Text tokens of the prompt.")
@click.option("--batch", default="1", show_default=True, metavar="LIST|START:STOP:STEP",
              help=f"Batch sizes, e.g. 1,8,32 or 1:64:8 (each at most {MAX_BATCH:,}).")
@click.option("--accounting", type=click.Choice(sorted(ACCOUNTING_MODES)), default="fpcost",
              show_default=True, help="fpcost: corrected counting; llm-viewer: LLM-Viewer (2024).")
@click.option("--flash-attention/--no-flash-attention", default=False, show_default=True,
              help="Cost attention as one fused FlashAttention kernel instead of three unfused "
                   "operators.")
@click.option("--stage", type=click.Choice([*ALL_STAGES, "all"]), default="all", show_default=True,
              help="Stage columns to list; all = vision, selection (zero where nothing is "
                   "pruned), projector, prefill, decode (N-1 steps for --output-tokens N; "
                   "by default one step over the prompt). "
                   "ttft_s is always the whole request's time to first token.")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="table",
              show_default=True, help="Table (a subset of columns), or JSON / CSV (all columns).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=output_path_callback,
              help="Write CSV or JSON to this file (atomically); format from --format or the suffix.")
@click.option("--output-tokens", type=OUTPUT_TOKENS, default=2, show_default=True,
              help="Generated tokens N, as estimate: the decode columns sum N-1 decode steps, "
                   "step i over a cache of prompt + i (the default 2: one step over the prompt).")
@click.option("--image-size", default=None, metavar="WxH",
              help="LLaVA-NeXT, LLaVA-OneVision (AnyRes), Qwen2-VL / Qwen2.5-VL (dynamic "
                   "resolution): image width x height in pixels, for every row (sets the crops "
                   "or patch grid and the unpruned count keep ratios are of); models that resize "
                   "every image ignore "
                   "it, and a sweep with none that uses it refuses it.")
@click.option("--min-pixels", type=click.IntRange(1, MAX_PIXEL_LIMIT), default=None,
              help="Qwen2-VL / Qwen2.5-VL: the image processor's min_pixels for every row "
                   "[default: 3136]; refused by a sweep with no such model.")
@click.option("--max-pixels", type=click.IntRange(1, MAX_PIXEL_LIMIT), default=None,
              help="Qwen2-VL / Qwen2.5-VL: the image processor's max_pixels for every row "
                   "[default: 12845056]; refused by a sweep with no such model.")
@vision_options
@click.option("--tensor-parallel", "tensor_parallel", default="1", show_default=True,
              metavar="LIST|START:STOP:STEP",
              help="GPUs sharing every LLM layer, as estimate's; a list (e.g. 1,2,4,8) runs "
                   "every row under each degree.")
@click.option("--pipeline-parallel", "pipeline_parallel", default="1", show_default=True,
              metavar="LIST|START:STOP:STEP",
              help="Pipeline stages, as estimate's; a list runs every row under each.")
@frames_option
@click.option("--force", is_flag=True,
              help=f"Allow sweeps of more than {MAX_CONFIGURATIONS:,} configurations (a sweep "
                   "needing more than half the memory available is refused even so).")
def sweep(models, configs, hardware, bits, quants, keep_ratios, visual_tokens, text_tokens, batch,
          accounting, flash_attention, stage, output_format, output, output_tokens, image_size,
          min_pixels, max_pixels, vision_layers, vision_quant_text, selection_layers,
          tensor_parallel, pipeline_parallel, frames, force):
    """Estimate every combination of models × hardware × quantization × visual tokens × batch."""
    from fpcost.api import resolve_model
    from fpcost.api import sweep as run_sweep

    from .estimate import parse_layers

    if keep_ratios is not None and visual_tokens is not None:
        raise click.UsageError("give either --keep-ratios or --visual-tokens, not both")
    if output is not None and output_format == "table":
        output_format = {".csv": "csv", ".json": "json"}.get(output.suffix.lower())
        if output_format is None:
            raise click.UsageError(f"--output {output} needs --format csv or json "
                                   "(or a .csv / .json file name)")
    specs = [resolve_model(m) for m in [*models, *configs] or ["llava-1.5-7b"]]
    size = None
    if image_size is not None:
        size = parse_image_size(image_size)
        if not any(family_of(spec).uses_image_size for spec in specs):
            raise click.BadParameter(
                f"{image_size!r} changes nothing for {', '.join(s.name for s in specs)}: only "
                f"the {image_size_families()} families use the image size",
                param_hint="--image-size")
    for flag, value in (("--min-pixels", min_pixels), ("--max-pixels", max_pixels)):
        if value is not None and not any(family_of(spec).uses_pixel_limits for spec in specs):
            raise click.BadParameter(
                f"{value} changes nothing for {', '.join(s.name for s in specs)}: only "
                "Qwen2-VL / Qwen2.5-VL models resize images within pixel limits", param_hint=flag)
    selection = (SelectionSpec(parse_layers(selection_layers)) if selection_layers is not None
                 else DEFAULT_SELECTION)
    frame = run_sweep(
        model=specs,
        hardware=list(hardware) or ["a6000"],
        bits=[int(b) for b in bits] or None,
        quant=list(quants) or None,
        keep_ratio=None if keep_ratios is None else parse_ratios(keep_ratios),
        visual_tokens=None if visual_tokens is None else parse_ints(visual_tokens, "--visual-tokens", 0),
        text_tokens=text_tokens,
        batch=parse_ints(batch, "--batch", 1, MAX_BATCH),
        accounting=accounting,
        flash_attention=flash_attention,
        stages=ALL_STAGES if stage == "all" else (stage,),
        force=force,
        output_tokens=output_tokens,
        image_size=size,
        vision_quant=QuantPlan.parse(vision_quant_text),
        vision_layers=vision_layers,
        selection=selection,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        tensor_parallel=parse_ints(tensor_parallel, "--tensor-parallel", 1, MAX_PARALLEL),
        pipeline_parallel=parse_ints(pipeline_parallel, "--pipeline-parallel", 1, MAX_PARALLEL),
        frames=frames,
    )
    if output_format == "table":
        _render(frame, ALL_STAGES if stage == "all" else (stage,), max(output_tokens - 1, 0))
        return
    text = frame_text(frame, output_format)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(output, text)
        stderr_console.print(f"wrote {len(frame):,} configurations to {output}")


def frame_text(frame, output_format: str) -> str:
    """All columns as CSV or as a JSON list of row objects (NaN → null), raw SI numbers."""
    if output_format == "csv":
        return frame.to_csv(index=False, lineterminator="\n")
    return frame.to_json(orient="records", double_precision=15) + "\n"


def _render(frame, stages, num_decode_steps: int = 1) -> None:
    total = len(frame)
    shown = frame.head(TABLE_ROW_LIMIT).to_dict("records")
    first = shown[0]
    caption = (
        f"{total:,} configurations; accounting {first['accounting']}, FlashAttention "
        f"{'on' if first['flash_attention'] else 'off'}, {first['num_text_tokens']} text tokens. "
        "Speedup: prefill with all visual tokens / this prefill; TTFT (time to first token) = "
        "vision + selection + projector + prefill. --format csv gives every column (FLOPs, "
        "bytes, per stage)."
    )
    splits = frame[["tensor_parallel", "pipeline_parallel"]] if "num_gpus" in first else None
    several = splits is not None and len(splits.drop_duplicates()) > 1
    if several:
        caption += (" TP x PP GPUs per row (tensor x pipeline parallel): one rank's operators; "
                    "prefill, decode and TTFT include the GPU-to-GPU traffic.")
    elif "num_gpus" in first:
        caption += (f" {first['num_gpus']} GPUs (tensor parallel {first['tensor_parallel']} x "
                    f"pipeline parallel {first['pipeline_parallel']}): one rank's operators; "
                    "prefill, decode and TTFT include the GPU-to-GPU traffic.")
    if total > TABLE_ROW_LIMIT:
        caption += f" First {TABLE_ROW_LIMIT} rows shown; --format csv for all columns and rows."
    render_table(shown, _columns(stages, num_decode_steps, several), title="fpcost sweep",
                 caption=caption)

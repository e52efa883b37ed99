"""``fpcost plot roofline`` and ``fpcost plot sweep``: PNG pictures (needs the ``plot``
extra; ``fpcost.plot`` is imported only when a picture is drawn)."""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from fpcost.costmodel.families import family_of
from fpcost.costmodel.units import MILLI
from fpcost.costmodel.workload import visual_tokens_for_ratio
from fpcost.files import is_stream

from .files import output_path_callback, write_atomic
from .options import (
    BATCH_SIZE,
    NON_NEGATIVE_INT,
    accounting_option,
    check_keep_ratio,
    hardware_option,
    model_options,
    quant_options,
    resolve_hardware,
    resolve_model,
    resolve_quant,
)
from .render import stderr_console
from .sweep import parse_ints, parse_ratios

output_option = click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
    callback=output_path_callback,
    help="The PNG file to write (atomically).")
flash_option = click.option(
    "--flash-attention/--no-flash-attention", default=False, show_default=True,
    help="Cost attention as one fused FlashAttention kernel instead of three unfused operators.")
text_tokens_option = click.option("--text-tokens", type=NON_NEGATIVE_INT, default=40,
                                  show_default=True, help="Text tokens of the prompt.")
batch_option = click.option("--batch", type=BATCH_SIZE, default=1, show_default=True,
                            help="Batch size (samples per request).")


def _plotting():
    """The plotting module; a one-line error (from the module) when matplotlib is missing."""
    return importlib.import_module("fpcost.plot")


def _save(fig, output: Path) -> None:
    if output.suffix.lower() != ".png" and not is_stream(output):
        raise click.BadParameter(f"{output} must end in .png (or be a stream such as "
                                 "/dev/stdout)", param_hint="--output")
    write_atomic(output, _plotting().png_bytes(fig))
    stderr_console.print(f"wrote {output}")


@click.group()
def plot():
    """Draw PNG pictures: a roofline with every operator, or a sweep's prefill curves."""


@plot.command()
@model_options
@hardware_option
@quant_options
@click.option("--keep-ratio", type=float, default=0.5, show_default=True,
              help="Fraction in (0, 1] of the visual tokens kept in the pruned panel.")
@click.option("--visual-tokens", type=NON_NEGATIVE_INT, default=None,
              help="Visual tokens kept in the pruned panel (instead of --keep-ratio).")
@text_tokens_option
@batch_option
@click.option("--stage", type=click.Choice(["prefill", "decode", "all"]), default="all",
              show_default=True, help="Stage(s) whose operators are placed.")
@accounting_option
@flash_option
@output_option
def roofline(model_name, config_path, hardware_name, bits, quant_text, keep_ratio, visual_tokens,
             text_tokens, batch, stage, accounting, flash_attention, output):
    """The device's roofline with every operator of the workload, unpruned and pruned side by side."""
    from fpcost.api import estimate

    plotting = _plotting()
    model = resolve_model(model_name, config_path)
    if not family_of(model).has_vision:
        raise click.UsageError(f"model {model.name!r} has no visual tokens to prune; give a LLaVA model")
    full = model.default_num_visual_tokens
    kept = (visual_tokens if visual_tokens is not None
            else visual_tokens_for_ratio(full, check_keep_ratio(keep_ratio)))
    settings = dict(model=model, hardware=resolve_hardware(hardware_name),
                    quant=resolve_quant(bits, quant_text), text_tokens=text_tokens, batch=batch,
                    accounting=accounting, flash_attention=flash_attention,
                    stages=("prefill", "decode") if stage == "all" else (stage,))
    unpruned = estimate(visual_tokens=full, **settings)
    pruned = estimate(visual_tokens=kept, **settings)
    panels = {
        f"All {full} visual tokens: prefill {_ms(unpruned)}": unpruned,
        f"Pruned to {kept} visual tokens: prefill {_ms(pruned)}": pruned,
    }
    title = (f"{model.name} on {unpruned.hardware.name}, {unpruned.quant.label}, batch {batch}, "
             f"{text_tokens} text tokens. One point per operator; labels: share of prefill time")
    _save(plotting.roofline_figure(panels, title=title), output)


def _ms(result) -> str:
    totals = result.totals()
    if "prefill" not in totals:
        return f"decode {totals['decode'].time_s / MILLI:.2f} ms"
    return f"{totals['prefill'].time_s / MILLI:.2f} ms"


@plot.command(name="sweep")
@model_options
@hardware_option
@click.option("--bits", multiple=True, type=click.Choice(["4", "8", "16", "32"]),
              help="One curve per plan with all widths at N bits; repeatable [default: 16 and 4, "
                   "unless --quant].")
@click.option("--quant", "quants", multiple=True, metavar="wNaNkvN", help="A plan; repeatable.")
@click.option("--keep-ratios", default="0.05:1:0.05", show_default=True, metavar="LIST|START:STOP:STEP",
              help="Fractions in (0, 1] of the visual tokens kept.")
@click.option("--visual-tokens", default=None, metavar="LIST|START:STOP:STEP",
              help="Visual-token counts instead of ratios.")
@text_tokens_option
@batch_option
@accounting_option
@flash_option
@output_option
def sweep_plot(model_name, config_path, hardware_name, bits, quants, keep_ratios, visual_tokens,
               text_tokens, batch, accounting, flash_attention, output):
    """Prefill time and speedup against kept visual tokens, one curve per precision."""
    from fpcost.api import sweep

    plotting = _plotting()
    model = resolve_model(model_name, config_path)
    if not bits and not quants:
        bits = ("16", "4")
    frame = sweep(
        model=model, hardware=resolve_hardware(hardware_name), bits=[int(b) for b in bits],
        quant=list(quants),
        keep_ratio=None if visual_tokens is not None else parse_ratios(keep_ratios),
        visual_tokens=None if visual_tokens is None else parse_ints(visual_tokens, "--visual-tokens", 0),
        text_tokens=text_tokens, batch=batch, accounting=accounting,
        flash_attention=flash_attention, stages=("prefill",),
    )
    _save(plotting.sweep_figure(frame), output)

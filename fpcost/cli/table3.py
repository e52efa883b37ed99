"""``fpcost table3``: regenerate the paper's Table 3 and compare cell by cell."""

from __future__ import annotations

import click

from fpcost.costmodel.table3 import COLUMNS, ROW_NOTES, SETTINGS, regenerate

from .options import hardware_option, resolve_hardware
from .render import emit_csv, emit_json, format_option, stdout_console


@click.command()
@hardware_option
@click.option("--accounting", type=click.Choice(["llm-viewer", "fpcost"]), default="llm-viewer",
              show_default=True,
              help="llm-viewer reproduces the paper; fpcost shows the corrected numbers.")
@format_option
def table3(hardware_name, accounting, output_format):
    """The paper's Table 3: paper value, fpcost value and relative error for every cell.

    The paper's LLaVA-1.5 rows are the 13B model (Vicuna-13B backbone, 576 visual + 40 text
    tokens; pruned 288 + 32), its VideoLLaVA rows the 7B model (Vicuna-7B, 2048 + 40;
    pruned 512 + 40). Only the LLM backbone's prefill is costed, as LLM-Viewer did.
    """
    hardware = resolve_hardware(hardware_name)
    rows = regenerate(hardware, accounting)
    settings = f"{SETTINGS}; hardware {hardware.name}; accounting {accounting}"
    if output_format == "json":
        emit_json({"settings": settings, "notes": ROW_NOTES, "hardware": hardware.name,
                   "accounting": accounting, "rows": rows,
                   "num_cells_matching": sum(c["matches"] for r in rows for c in r["cells"].values())})
        return
    if output_format == "csv":
        flat = []
        for r in rows:
            for key, cell in r["cells"].items():
                flat.append({"method": r["method"], "backbone": r["backbone_label"],
                             "quantization": r["quantization"], "num_tokens": r["num_tokens"],
                             "num_visual_tokens": r["num_visual_tokens"],
                             "num_text_tokens": r["num_text_tokens"],
                             "estimate_command": r["estimate_command"], "column": key, **cell})
        emit_csv(flat)
        return
    from rich.table import Table

    table = Table(title="freePruner Table 3, regenerated", caption=f"{settings}. {ROW_NOTES}",
                  caption_justify="left")
    for header, justify in (("Method\nLLM backbone", "left"), ("Quant.", "left"),
                            ("Tokens\nvisual + text", "right"),
                            ("Column", "left"), ("Paper", "right"), ("fpcost", "right"),
                            ("Rel. error", "right")):
        table.add_column(header, justify=justify)
    matches = 0
    for r in rows:
        for i, (key, _, digits, header) in enumerate(COLUMNS):
            c = r["cells"][key]
            matches += c["matches"]
            style = "green" if c["matches"] else "red"
            label = {0: r["method"], 1: r["backbone_label"]}.get(i, "")
            tokens = {0: str(r["num_tokens"]),
                      1: f"{r['num_visual_tokens']} + {r['num_text_tokens']}"}.get(i, "")
            table.add_row(
                label, r["quantization"] if i == 0 else "", tokens, header,
                f"{c['paper']:.{digits}f}", f"[{style}]{c['fpcost']:.{digits + 2}f}[/]",
                f"{c['rel_error'] * 100:+.2f}%", end_section=i == len(COLUMNS) - 1,
            )
    stdout_console.print(table)
    stdout_console.print(f"{matches} of {len(rows) * len(COLUMNS)} cells equal the paper's value "
                         "at its printed precision.")

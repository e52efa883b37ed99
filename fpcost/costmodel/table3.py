"""The paper's Table 3 (freePruner, §4.4): its printed values and their regeneration.

The table was produced with LLM-Viewer (2024) on the A6000: prefill, batch 1, no
FlashAttention, LLM backbone only, FP16 = w16a16kv16 and INT4 = w4a4kv4 (DESIGN.md §3).
Its backbones are the original Vicuna checkpoints (vocabulary 32,000), not the llava-hf
ones (32,064).
"""

from __future__ import annotations

from dataclasses import dataclass

from .estimate import StageTotals, estimate
from .hardware import HardwareProfile
from .presets import VICUNA_7B, VICUNA_13B
from .quant import QuantPlan
from .spec import LLMSpec, ModelSpec
from .units import GIGA, MILLI, TERA
from .workload import Workload

TABLE3_VICUNA_7B = LLMSpec(**{**VICUNA_7B.__dict__, "vocab_size": 32000, "name": "vicuna-7b"})
TABLE3_VICUNA_13B = LLMSpec(**{**VICUNA_13B.__dict__, "vocab_size": 32000, "name": "vicuna-13b"})

# (key, divisor, printed decimals, header): the four columns as the paper prints them.
COLUMNS = (
    ("flops", TERA, 1, "OPs (TB)"),
    ("time_s", MILLI, 1, "Prefill Time (ms)"),
    ("memory_access_bytes", GIGA, 1, "Accessing Memory (GB)"),
    ("activation_store_bytes", GIGA, 1, "Storing Activation (GB)"),
)


@dataclass(frozen=True)
class Table3Row:
    method: str
    backbone: LLMSpec
    quantization: str  # "FP16" or "INT4", as printed
    num_visual_tokens: int
    num_text_tokens: int
    paper: tuple[float, float, float, float]  # in the printed units of COLUMNS

    @property
    def quant(self) -> QuantPlan:
        return QuantPlan.uniform(16 if self.quantization == "FP16" else 4)


# Source: freePruner, Table 3 ("Computation Cost Analysis based on NVIDIA A6000 GPU,
# estimated by LLM-Viewer"). Token splits per DESIGN.md §3.
ROWS = (
    Table3Row("VideoLLaVA", TABLE3_VICUNA_7B, "FP16", 2048, 40, (29.4, 232.2, 67.6, 25.7)),
    Table3Row("VideoLLaVA w/ freePruner", TABLE3_VICUNA_7B, "FP16", 512, 40, (7.3, 52.6, 20.6, 3.3)),
    Table3Row("VideoLLaVA", TABLE3_VICUNA_7B, "INT4", 2048, 40, (29.4, 102.6, 16.9, 6.4)),
    Table3Row("VideoLLaVA w/ freePruner", TABLE3_VICUNA_7B, "INT4", 512, 40, (7.3, 24.7, 5.2, 0.8)),
    Table3Row("LLaVA-1.5", TABLE3_VICUNA_13B, "FP16", 576, 40, (15.9, 112.7, 39.2, 6.1)),
    Table3Row("LLaVA-1.5 w/ freePruner", TABLE3_VICUNA_13B, "FP16", 288, 32, (8.2, 57.1, 31.5, 2.5)),
    Table3Row("LLaVA-1.5", TABLE3_VICUNA_13B, "INT4", 576, 40, (15.9, 53.4, 9.8, 1.5)),
    Table3Row("LLaVA-1.5 w/ freePruner", TABLE3_VICUNA_13B, "INT4", 288, 32, (8.2, 27.4, 7.9, 0.6)),
)

SETTINGS = (
    "LLM backbone only, prefill stage, batch 1, FlashAttention off; "
    "FP16 = w16a16kv16, INT4 = w4a4kv4; tokens = visual + text per row"
)


def row_totals(row: Table3Row, hardware: HardwareProfile, accounting: str = "llm-viewer",
               flash_attention: bool = False) -> StageTotals:
    """Prefill totals of one Table 3 row under ``accounting`` (the paper: FlashAttention off)."""
    model = ModelSpec(name=row.backbone.name, kind="llm", llm=row.backbone)
    workload = Workload(row.num_visual_tokens, row.num_text_tokens, batch_size=1)
    result = estimate(model, workload, hardware, row.quant, accounting, flash_attention=flash_attention,
                      stages=("prefill",))
    return result.stage_totals("prefill")


def regenerate(hardware: HardwareProfile, accounting: str = "llm-viewer") -> list[dict]:
    """Every row: the paper's value, fpcost's value (SI and printed) and the relative error
    for each of the four columns."""
    out = []
    for row in ROWS:
        totals = row_totals(row, hardware, accounting).as_dict()
        cells = {}
        for (key, divisor, digits, _), paper in zip(COLUMNS, row.paper, strict=True):
            value = totals[key]
            printed = round(value / divisor, digits)
            cells[key] = {
                "paper": paper,
                "fpcost": value / divisor,
                "fpcost_printed": printed,
                "rel_error": (value / divisor - paper) / paper,
                "matches": printed == paper,
                "si_value": value,
            }
        out.append({
            "method": row.method,
            "backbone": row.backbone.name,
            "quantization": row.quantization,
            "num_tokens": row.num_visual_tokens + row.num_text_tokens,
            "num_visual_tokens": row.num_visual_tokens,
            "num_text_tokens": row.num_text_tokens,
            "cells": cells,
        })
    return out

"""The paper's Table 3 (freePruner, §4.4): its printed values and their regeneration.

Source: Bingxin Xu, Yuzhang Shang, Yunhao Ge, Qian Lou, Yan Yan, "freePruner: A
Training-free Approach for Large Multimodal Model Acceleration", arXiv:2411.15446 (2024),
Table 3: "Computation Cost Analysis based on NVIDIA A6000 GPU, estimated by LLM-Viewer".

The table was produced with LLM-Viewer (2024) on the A6000: prefill, batch 1, no
FlashAttention, LLM backbone only, FP16 = w16a16kv16 and INT4 = w4a4kv4. The paper does not
print its token counts; the splits below are the ones with which all 32 cells reproduce
(tests/test_table3.py), and docs/accounting.md lists them. Its backbones are the original
Vicuna checkpoints (vocabulary 32,000), not the llava-hf ones (32,064).
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


# The paper's "LLM Backbone" column, and the fpcost preset with the same LLM (llava-hf's
# vocabulary of 32,064 instead of 32,000: only the LM head differs).
BACKBONE_LABELS = {TABLE3_VICUNA_7B.name: "Vicuna-7B", TABLE3_VICUNA_13B.name: "Vicuna-13B"}
PRESET_FOR_METHOD = {"VideoLLaVA": "videollava", "LLaVA-1.5": "llava-1.5-13b"}


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

    @property
    def backbone_label(self) -> str:
        """The paper's "LLM Backbone" column: "Vicuna-13B"."""
        return BACKBONE_LABELS[self.backbone.name]

    @property
    def token_split(self) -> str:
        """"288 visual + 32 text": the LLM's input per sample."""
        return f"{self.num_visual_tokens} visual + {self.num_text_tokens} text"

    @property
    def preset(self) -> str:
        """The built-in model (``fpcost estimate --model``) with this row's backbone."""
        return PRESET_FOR_METHOD[self.method.split(" w/ ")[0]]

    @property
    def estimate_command(self) -> str:
        """The ``fpcost estimate`` line that costs this row's prefill the same way."""
        bits = "" if self.quantization == "FP16" else " --bits 4"
        return (f"fpcost estimate --model {self.preset} --accounting llm-viewer --stage prefill"
                f"{bits} --visual-tokens {self.num_visual_tokens} "
                f"--text-tokens {self.num_text_tokens}")


# Source: freePruner (arXiv:2411.15446), Table 3. Token splits: VideoLLaVA 8 frames x 256
# = 2048 visual tokens, a quarter (512) with freePruner; LLaVA-1.5 576, half (288) with
# freePruner; text 40, but 32 in the pruned LLaVA-1.5 rows (the only split that reproduces
# them: with 40 text tokens its FP16 row would print 8.4 TB and 58.6 ms, not 8.2 and 57.1).
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
ROW_NOTES = (
    "LLaVA-1.5 rows are LLaVA-1.5 13B (Vicuna-13B backbone): 576 visual + 40 text tokens, "
    "pruned 288 visual + 32 text. VideoLLaVA rows are Video-LLaVA 7B (Vicuna-7B): 8 frames x "
    "256 = 2048 visual + 40 text, pruned 512 + 40. Cross-check a row with fpcost estimate, e.g. "
    "`fpcost estimate --model llava-1.5-13b --accounting llm-viewer --stage prefill "
    "--visual-tokens 288 --text-tokens 32` (JSON and CSV carry each row's command; estimate "
    "uses llava-hf's 32,064-token vocabulary, which moves only the LM head)."
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
            "backbone_label": row.backbone_label,
            "token_split": row.token_split,
            "estimate_command": row.estimate_command,
            "quantization": row.quantization,
            "num_tokens": row.num_visual_tokens + row.num_text_tokens,
            "num_visual_tokens": row.num_visual_tokens,
            "num_text_tokens": row.num_text_tokens,
            "cells": cells,
        })
    return out

"""Print the generated tables of docs/accounting.md: every Table 3 row under both accounting
modes, what each single correction (turned on alone, starting from llm-viewer) moves, the
same with FlashAttention on (where the two FlashAttention flags act), and the stages
LLM-Viewer leaves out (vision tower, selection, projector) for the same rows.

    python scripts/accounting_doc.py > /tmp/accounting_tables.md
"""

from fpcost.costmodel.accounting import FPCOST, LLM_VIEWER
from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.presets import PRESETS
from fpcost.costmodel.table3 import COLUMNS, ROWS, row_totals
from fpcost.costmodel.units import MILLI
from fpcost.costmodel.workload import Workload
from fpcost.hardware_profiles import load_profile


def fmt(value: float, divisor: float) -> str:
    return f"{value / divisor:.2f}"


def modes_table(hardware, flash: bool) -> None:
    headers = [h for _, _, _, h in COLUMNS]
    print("| Row | Mode | " + " | ".join(headers) + " |")
    print("|---|---|" + "---|" * len(headers))
    for row in ROWS:
        label = f"{row.method}, {row.quantization}, {row.num_visual_tokens}+{row.num_text_tokens}"
        for mode in (LLM_VIEWER, FPCOST):
            t = row_totals(row, hardware, mode, flash).as_dict()
            cells = [fmt(t[key], div) for key, div, _, _ in COLUMNS]
            paper = ""
            if mode is LLM_VIEWER and not flash:
                paper = " (paper: " + ", ".join(f"{p}" for p in row.paper) + ")"
            print(f"| {label}{paper} | {mode.name} | " + " | ".join(cells) + " |")


def corrections_table(hardware, flash: bool) -> None:
    headers = [h for _, _, _, h in COLUMNS]
    print("| Row | Correction | " + " | ".join(headers) + " |")
    print("|---|---|" + "---|" * len(headers))
    for row in ROWS:
        label = f"{row.method}, {row.quantization}"
        base = row_totals(row, hardware, LLM_VIEWER, flash).as_dict()
        for flag in LLM_VIEWER.corrections:
            t = row_totals(row, hardware, LLM_VIEWER.with_flag(flag, True), flash).as_dict()
            deltas = [(t[key] - base[key]) / base[key] * 100 for key, _, _, _ in COLUMNS]
            if all(abs(d) < 0.005 for d in deltas):
                continue
            print(f"| {label} | `{flag}` | " + " | ".join(f"{d:+.2f}" for d in deltas) + " |")


def pipeline_table(hardware) -> None:
    print("| Row | vision (ms) | selection (ms) | projector (ms) | prefill (ms) | TTFT (ms) "
          "| vision + selection + projector share of TTFT |")
    print("|---|---|---|---|---|---|---|")
    for row in ROWS:
        if row.quantization != "FP16":
            continue
        model = PRESETS[row.preset]  # the built-in model with this row's backbone
        workload = Workload(row.num_visual_tokens, row.num_text_tokens)
        result = estimate(model, workload, hardware, row.quant, "fpcost")
        times = {s: t.time_s for s, t in result.totals().items()}
        extra = sum(times.get(s, 0.0) for s in ("vision", "selection", "projector"))
        cells = [f"{times.get(s, 0.0) / MILLI:.2f}" for s in ("vision", "selection", "projector", "prefill")]
        print(f"| {row.method}, {row.num_visual_tokens}+{row.num_text_tokens} | " + " | ".join(cells)
              + f" | {result.ttft_s / MILLI:.2f} | {extra / result.ttft_s * 100:.1f}% |")


def main() -> None:
    hardware = load_profile("a6000")
    print("### Table 3 as printed (FlashAttention off), both modes\n")
    modes_table(hardware, flash=False)
    print("\n### Each correction alone, relative change from llm-viewer (%), FlashAttention off\n")
    corrections_table(hardware, flash=False)
    print("\n### The same rows with FlashAttention on, both modes\n")
    modes_table(hardware, flash=True)
    print("\n### Each correction alone, relative change from llm-viewer (%), FlashAttention on\n")
    corrections_table(hardware, flash=True)
    print("\n### What LLM-Viewer leaves out: the whole request's time to first token "
          "(fpcost accounting, FP16, FlashAttention off)\n")
    pipeline_table(hardware)


if __name__ == "__main__":
    main()

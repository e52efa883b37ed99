"""Print the Table 3 part of docs/accounting.md: every row under both accounting modes, and
what each single correction (turned on alone, starting from llm-viewer) moves.

    python scripts/accounting_doc.py > /tmp/accounting_tables.md
"""

from fpcost.costmodel.accounting import FPCOST, LLM_VIEWER
from fpcost.costmodel.table3 import COLUMNS, ROWS, row_totals
from fpcost.hardware_profiles import load_profile


def fmt(value: float, divisor: float) -> str:
    return f"{value / divisor:.2f}"


def main() -> None:
    hardware = load_profile("a6000")
    headers = [h for _, _, _, h in COLUMNS]
    print("| Row | Mode | " + " | ".join(headers) + " |")
    print("|---|---|" + "---|" * len(headers))
    for row in ROWS:
        label = f"{row.method}, {row.quantization}, {row.num_visual_tokens}+{row.num_text_tokens}"
        for mode in (LLM_VIEWER, FPCOST):
            t = row_totals(row, hardware, mode).as_dict()
            cells = [fmt(t[key], div) for key, div, _, _ in COLUMNS]
            paper = " (paper: " + ", ".join(f"{p}" for p in row.paper) + ")" if mode is LLM_VIEWER else ""
            print(f"| {label}{paper} | {mode.name} | " + " | ".join(cells) + " |")
    print()
    print("Each correction alone, as the relative change from llm-viewer (%):")
    print()
    print("| Row | Correction | " + " | ".join(headers) + " |")
    print("|---|---|" + "---|" * len(headers))
    for row in ROWS:
        label = f"{row.method}, {row.quantization}"
        base = row_totals(row, hardware, LLM_VIEWER).as_dict()
        for flag in LLM_VIEWER.corrections:
            t = row_totals(row, hardware, LLM_VIEWER.with_flag(flag, True)).as_dict()
            deltas = [(t[key] - base[key]) / base[key] * 100 for key, _, _, _ in COLUMNS]
            if all(abs(d) < 0.005 for d in deltas):
                continue
            print(f"| {label} | `{flag}` | " + " | ".join(f"{d:+.2f}" for d in deltas) + " |")


if __name__ == "__main__":
    main()

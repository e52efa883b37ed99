"""Request traces for ``fpcost serve --trace FILE``: JSON Lines or CSV, one request a row.

Columns (JSONL: keys of one object per line; CSV: a header row naming them):

- ``arrival_time_s`` (required): seconds from the start, finite and >= 0 (rows may come in
  any order; they are served by arrival time, ties in file order);
- ``image_size`` (optional): ``WxH`` pixels, for families whose visual tokens depend on it
  (LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL); the family's layout gives the visual tokens;
- ``visual_tokens`` (optional): visual tokens the LLM receives (at most the layout's count
  for the image); without it, every visual token of the layout;
- ``text_tokens``, ``output_tokens`` (optional): default ``--text-tokens`` /
  ``--output-tokens``.

An empty CSV cell or a JSON ``null`` is the column's default. Every error names the file,
the line and the column. The text is parsed here (no file I/O: the CLI reads the file).
"""

from __future__ import annotations

import csv
import io
import json
import math

from ..anyres import parse_image_size
from ..errors import FpcostError, WorkloadError
from ..families import family_of, image_size_families
from ..pipeline import visual_layout
from ..workload import MAX_OUTPUT_TOKENS, MAX_TOKENS, Workload, visual_tokens_for_ratio
from .requests import MAX_REQUESTS, Request

COLUMNS = ("arrival_time_s", "image_size", "visual_tokens", "text_tokens", "output_tokens")


def parse_trace(text: str, name: str) -> list[tuple[int, dict]]:
    """(line number, {column: raw value}) per request of a JSONL or CSV trace (JSONL when
    ``name`` ends in .jsonl / .json or the first non-blank character is ``{``)."""
    stripped = text.lstrip()
    if not stripped:
        raise WorkloadError(f"--trace {name}: the file is empty; give one request per line "
                            f"(columns {', '.join(COLUMNS)})")
    if name.lower().endswith((".jsonl", ".json")) or stripped.startswith("{"):
        rows = _jsonl_rows(text, name)
    else:
        rows = _csv_rows(text, name)
    if not rows:
        raise WorkloadError(f"--trace {name}: no requests (only a header or blank lines)")
    if len(rows) > MAX_REQUESTS:
        raise WorkloadError(f"--trace {name}: {len(rows):,} requests, more than {MAX_REQUESTS:,}")
    return rows


def _jsonl_rows(text: str, name: str) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"--trace {name}: line {number} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise WorkloadError(f"--trace {name}: line {number} must be a JSON object with columns "
                                f"{', '.join(COLUMNS)}")
        _check_columns(row, name, number)
        rows.append((number, row))
    return rows


def _csv_rows(text: str, name: str) -> list[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [cell.strip() for cell in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise WorkloadError(f"--trace {name}: line 1 is not a CSV header ({exc})") from None
    _check_columns(dict.fromkeys(header), name, 1)
    rows = []
    try:
        for cells in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise WorkloadError(f"--trace {name}: line {number} has {len(cells)} cells, the "
                                    f"header {len(header)}")
            rows.append((number, {k: (v.strip() or None) for k, v in zip(header, cells, strict=True)}))
    except csv.Error as exc:
        raise WorkloadError(f"--trace {name}: line {reader.line_num} is not CSV ({exc})") from None
    return rows


def _check_columns(row: dict, name: str, number: int) -> None:
    unknown = [key for key in row if key not in COLUMNS]
    if unknown:
        raise WorkloadError(f"--trace {name}: line {number}: column {str(unknown[0])[:40]!r} is "
                            f"unknown; valid: {', '.join(COLUMNS)}")
    if "arrival_time_s" not in row:
        raise WorkloadError(f"--trace {name}: line {number}: column 'arrival_time_s' is missing")


def _number(value, name: str, number: int, column: str) -> float:
    where = f"--trace {name}: line {number} column {column}"
    if isinstance(value, bool):
        raise WorkloadError(f"{where}: {value!r} must be a number")
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        raise WorkloadError(f"{where}: {str(value)[:40]!r} must be a number") from None
    if not 0 <= result < math.inf:
        raise WorkloadError(f"{where}: {str(value)[:40]!r} must be finite and >= 0")
    return result


def _count(value, name: str, number: int, column: str, minimum: int, maximum: int) -> int:
    where = f"--trace {name}: line {number} column {column}"
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 12:
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise WorkloadError(f"{where}: {str(value)[:40]!r} must be an integer in "
                            f"{minimum}..{maximum:,}")
    return value


def trace_requests(rows: list[tuple[int, dict]], name: str, model, text_tokens: int,
                   output_tokens: int, keep_ratio: float | None = None) -> list[Request]:
    """The requests of a parsed trace, sorted by arrival (stable). ``keep_ratio``: the
    pruned server's requests, each keeping that fraction of its visual tokens."""
    family = family_of(model)
    layouts: dict = {}
    requests = []
    for number, row in rows:
        arrival = _number(row.get("arrival_time_s"), name, number, "arrival_time_s")
        size = None
        if row.get("image_size") is not None:
            if not family.uses_image_size:
                raise WorkloadError(f"--trace {name}: line {number} column image_size: "
                                    f"{str(row['image_size'])[:40]!r} changes nothing for "
                                    f"{model.name} (only the {image_size_families()} families use the "
                                    "image size); leave the column empty")
            try:
                size = parse_image_size(row["image_size"])
            except FpcostError as exc:
                raise WorkloadError(f"--trace {name}: line {number} column image_size: {exc}") from None
        if size not in layouts:
            layouts[size] = visual_layout(model, size).num_visual_tokens
        unpruned = layouts[size]
        visual = unpruned
        if row.get("visual_tokens") is not None:
            limit = unpruned if family.has_vision else MAX_TOKENS
            visual = _count(row["visual_tokens"], name, number, "visual_tokens", 0, limit)
        text = text_tokens
        if row.get("text_tokens") is not None:
            text = _count(row["text_tokens"], name, number, "text_tokens", 0, MAX_TOKENS)
        output = output_tokens
        if row.get("output_tokens") is not None:
            output = _count(row["output_tokens"], name, number, "output_tokens", 1, MAX_OUTPUT_TOKENS)
        if keep_ratio is not None and visual > 0:
            visual = visual_tokens_for_ratio(visual, keep_ratio)
        if visual + text < 1:
            raise WorkloadError(f"--trace {name}: line {number}: the prompt is empty (0 visual + "
                                "0 text tokens)")
        requests.append(Request(arrival, Workload(visual, text, 1, output, size)))
    return sorted(requests, key=lambda r: r.arrival_time_s)

"""Sweeps: models × hardware × quantization × visual tokens × batch in one vectorized pass.

The operator builders accept numpy integer arrays for token counts and batch sizes, and
``time_op`` is plain arithmetic, so one call covers a whole grid. For each model and
quantization plan the operators are built ONCE over a (visual tokens + 1) × batch grid (the
extra row is the unpruned baseline that ``prefill_speedup`` divides by), then timed on each
device; stage totals are sums of ``count`` × per-instance values in operator order, exactly
as ``StageTotals.of`` adds them, so every number equals the scalar ``estimate()`` bit for bit.

Integer arithmetic stays exact: token products are int64, and the largest configuration of
a grid is checked first with Python ints (``ops.check_exact``: every per-instance FLOP and
byte count ≤ 2**53, exact in float64 and far inside int64), so no product can overflow; they
become floats at the same step as in the scalar path. The finished frame is checked again:
a negative or non-finite time, FLOP or byte count raises instead of being returned.

Time to first token (``ttft_s``) always sums every pre-decode stage of the request, whichever
stages' columns are asked for. A sweep's memory is estimated before anything is allocated
(``check_memory``) and refused, with the figure, when it would not fit.

Adopting a new stage means teaching ``build_ops`` to call its builder with the grid arrays;
``stage_totals`` and the frame assembly are stage-agnostic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from .accounting import Accounting, get_accounting
from .errors import ConfigError, WorkloadError
from .hardware import HardwareProfile
from .llm import DecoderPass, decoder_ops
from .ops import NUMERIC_FIELDS, Op, check_exact
from .pipeline import (
    ALL_STAGES,
    PRE_DECODE_STAGES,
    VISION_STAGES,
    PipelineSettings,
    vision_side_ops,
    visual_layout,
)
from .presets import get_preset
from .quant import QuantPlan
from .roofline import time_op
from .spec import ModelSpec
from .sweep_checks import check_frame, check_memory
from .workload import MAX_BATCH, check_count, visual_tokens_for_ratio

# A sweep beyond this many configurations (rows) raises unless ``force=True``: at ~25
# float64 columns it is about 1 GB of DataFrame.
MAX_CONFIGURATIONS = 5_000_000

# Per-stage columns, ``<stage>_<total>``; names as in ``StageTotals``.
TOTALS = ("flops", "time_s", "memory_access_bytes", "activation_store_bytes")
# What each total sums over the operators (activation stores are the activation writes).
_OP_FIELDS = {"flops": "flops", "memory_access_bytes": "memory_access_bytes",
              "activation_store_bytes": "act_write_bytes"}
_NUMERIC_FIELDS = NUMERIC_FIELDS


def build_ops(
    model: ModelSpec,
    quant: QuantPlan,
    stages: Sequence[str],
    num_visual_tokens,
    num_text_tokens: int,
    batch_size,
    accounting: Accounting,
    flash_attention: bool,
    onchip_buffer_bytes: float,
) -> list[Op]:
    """The operators of every stage for samples of ``num_visual_tokens`` visual and
    ``num_text_tokens`` text tokens and a batch of ``batch_size`` (ints or broadcastable int64
    arrays), in ``estimate()``'s order. The vision, selection and projector stages use
    ``estimate()``'s defaults (16-bit tower, every layer, the default selection); the
    selection stage costs nothing where nothing is pruned; decode is one step.

    The one place that knows which builders make up a stage (mirrors ``pipeline.stage_ops``)."""
    settings = PipelineSettings(quant, accounting, flash_attention, onchip_buffer_bytes)
    prompt = num_visual_tokens + num_text_tokens
    ops: list[Op] = []
    for stage in stages:
        if stage in VISION_STAGES:
            if model.vision is not None:
                ops += vision_side_ops(stage, model, settings, visual_layout(model),
                                       num_visual_tokens, batch_size)
            continue
        step = DecoderPass(
            stage=stage,
            num_query_tokens=prompt if stage == "prefill" else 1,
            num_kv_tokens=prompt,
            batch_size=batch_size,
        )
        ops += decoder_ops(model.llm, quant, step, accounting, flash_attention, onchip_buffer_bytes)
    return ops


def stage_totals(ops: Iterable[Op], hardware: HardwareProfile, shape: tuple[int, ...]) -> dict:
    """``{stage: {total: array of shape}}``: each of ``TOTALS`` summed over the stage's
    operators (``count`` × per-instance value), in operator order, on ``hardware``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for op in ops:
        sums = out.setdefault(op.stage, dict.fromkeys(TOTALS, 0.0))
        timing = time_op(op, hardware)
        n = op.count
        for total, field in _OP_FIELDS.items():
            sums[total] = sums[total] + n * getattr(op, field)
        sums["time_s"] = sums["time_s"] + n * np.maximum(timing.compute_time_s, timing.memory_time_s)
    return {stage: {k: np.broadcast_to(np.asarray(v, dtype=np.float64), shape) for k, v in sums.items()}
            for stage, sums in out.items()}


def check_int64_range(ops: Iterable[Op], where: str) -> None:
    """Refuse operators whose counts leave exact arithmetic (``ops`` built with Python ints
    for the largest configuration of a grid; every count grows with tokens and batch)."""
    check_exact(ops, where)


def count_configurations(num_models_visual: Sequence[int], num_hardware: int, num_quants: int,
                         num_batches: int) -> int:
    """Rows of a sweep: Σ over models of (its visual-token values) × devices × plans × batches."""
    return sum(num_models_visual) * num_hardware * num_quants * num_batches


def sweep(
    models,
    hardware,
    quants=(16,),
    keep_ratios=None,
    num_visual_tokens=None,
    batch_sizes=(1,),
    num_text_tokens: int = 40,
    accounting: Accounting | str = "fpcost",
    flash_attention: bool = False,
    stages: Sequence[str] = ALL_STAGES,
    force: bool = False,
):
    """Roofline estimates of every configuration of a grid, as a pandas DataFrame.

    One row per (model, hardware, quant, visual tokens, batch), in that nesting order.
    ``models``: ``ModelSpec`` objects or preset names; ``hardware``: ``HardwareProfile``
    objects; ``quants``: ``QuantPlan`` objects, bit widths (``4`` = w4a4kv4) or strings
    (``"w4a16kv16"``). Visual tokens come from ``keep_ratios`` (fractions in (0, 1] of each
    model's visual tokens, rounded as ``estimate`` does) or ``num_visual_tokens`` (counts);
    with neither, all visual tokens are kept.

    Columns (SI units): model, hardware, quant, weight_bits, act_bits, kv_bits, accounting,
    flash_attention, keep_ratio, num_visual_tokens, num_text_tokens, num_prompt_tokens,
    batch_size; per stage ``<stage>_flops``, ``<stage>_time_s``,
    ``<stage>_memory_access_bytes``, ``<stage>_activation_store_bytes`` (stages: vision,
    selection, projector, prefill, decode by default; zero where a stage does not run, e.g.
    selection without pruning or vision for a text-only model); with prefill,
    ``prefill_speedup`` = prefill time with all the model's visual tokens / this prefill
    time (same model, device, plan and batch; NaN for a text-only model); and always
    ``ttft_s`` (the request's time to first token: every pre-decode stage, whichever stages
    are listed) with its ``ttft_speedup``.

    Raises ``WorkloadError`` for invalid values and for more than ``MAX_CONFIGURATIONS``
    rows unless ``force``.
    """
    import pandas as pd

    models = [_as_model(m) for m in _as_list(models, "models")]
    devices = _as_list(hardware, "hardware")
    for device in devices:
        if not isinstance(device, HardwareProfile):
            raise WorkloadError(f"hardware {device!r} is not a HardwareProfile; load one with "
                                "fpcost.hardware_profiles.load_profile (or use fpcost.sweep)")
    plans = [_as_quant(q) for q in _as_list(quants, "quants")]
    batches = [check_count("batch size", b, maximum=MAX_BATCH)
               for b in _as_list(batch_sizes, "batch_sizes")]
    check_count("num_text_tokens", num_text_tokens, minimum=0)
    if isinstance(accounting, str):
        accounting = get_accounting(accounting)
    stages = tuple(_as_list([stages] if isinstance(stages, str) else stages, "stages"))
    for stage in stages:
        if stage not in ALL_STAGES:
            raise WorkloadError(f"stage {stage!r} is unknown; valid: {', '.join(ALL_STAGES)}")
    if keep_ratios is not None and num_visual_tokens is not None:
        raise WorkloadError("give either keep_ratios or num_visual_tokens, not both")

    grids = [_visual_grid(m, keep_ratios, num_visual_tokens, num_text_tokens) for m in models]
    total = count_configurations([len(v) for _, v in grids], len(devices), len(plans), len(batches))
    if total > MAX_CONFIGURATIONS and not force:
        raise WorkloadError(
            f"the sweep has {total:,} configurations, more than the limit of "
            f"{MAX_CONFIGURATIONS:,}; narrow it or pass force=True (--force)"
        )
    check_memory(total, len(_column_order(stages)))

    with np.errstate(all="ignore"):  # a non-finite result is refused by check_frame below
        blocks = [
            _index_columns(model, devices, plans, ratios, visual, batches, num_text_tokens)
            | _model_totals(model, visual, devices, plans, batches, num_text_tokens, stages,
                            accounting, flash_attention)
            for model, (ratios, visual) in zip(models, grids, strict=True)
        ]
    frame = pd.DataFrame(_concatenate(blocks))
    frame["accounting"] = accounting.name
    frame["flash_attention"] = bool(flash_attention)
    frame = frame[_column_order(stages)]
    check_frame(frame)
    return frame


def _model_totals(model, visual, devices, plans, batches, text, stages, accounting, flash) -> dict:
    """The per-stage totals (and prefill speedup) of one model's rows, flattened in row
    order: device-major, then plan, visual tokens, batch.

    The operators are built once per plan (and on-chip buffer size, with FlashAttention)
    over a (visual tokens + baseline) × batch grid, and timed on all devices at once."""
    baseline = model.kind != "llm"
    rows_visual = visual + [model.default_num_visual_tokens] if baseline else visual
    visual_grid = np.asarray(rows_visual, dtype=np.int64)[:, np.newaxis]  # (V[+1], 1)
    batch = np.asarray(batches, dtype=np.int64)[np.newaxis, :]  # (1, B)
    num_visual = len(visual)
    shape = (len(devices), len(plans), num_visual, len(batches))  # (H, Q, V, B)
    columns = {f"{stage}_{total}": np.zeros(shape) for stage in stages for total in TOTALS}
    # TTFT is the whole request's: every pre-decode stage is built, whichever are shown
    built = tuple(s for s in ALL_STAGES if s in stages or s in PRE_DECODE_STAGES)
    if "prefill" in stages:
        columns["prefill_speedup"] = np.full(shape, np.nan)
    columns["ttft_s"] = np.zeros(shape)
    columns["ttft_speedup"] = np.full(shape, np.nan)
    for q, plan in enumerate(plans):
        graphs = _device_graphs(model, plan, built, visual_grid, text, batch, accounting, flash,
                                devices)
        for indices, ops in graphs:
            largest = build_ops(model, plan, built, max(rows_visual), text, max(batches),
                                accounting, flash, devices[indices[0]].onchip_buffer_bytes)
            check_int64_range(largest, f"the sweep of {model.name}")
            stack = DeviceStack([devices[i] for i in indices])
            grid_shape = (len(indices), len(rows_visual), len(batches))
            totals = stage_totals(ops, stack, grid_shape)
            for stage in totals:  # stages that build no operator here stay zero
                if stage not in stages:
                    continue
                for total in TOTALS:
                    columns[f"{stage}_{total}"][indices, q] = totals[stage][total][:, :num_visual]
            if "prefill" in stages and baseline:
                time_s = totals["prefill"]["time_s"]  # (H_group, V + 1, B); row V: baseline
                columns["prefill_speedup"][indices, q] = time_s[:, num_visual:] / time_s[:, :num_visual]
            ttft = np.zeros(grid_shape)
            for stage in PRE_DECODE_STAGES:
                if stage in totals:
                    ttft = ttft + totals[stage]["time_s"]
            columns["ttft_s"][indices, q] = ttft[:, :num_visual]
            if baseline:
                columns["ttft_speedup"][indices, q] = ttft[:, num_visual:] / ttft[:, :num_visual]
    return {key: value.ravel() for key, value in columns.items()}


class DeviceStack:
    """Several hardware profiles seen as one whose ceilings are arrays over devices (axis 0,
    broadcasting against ``ndim`` grid axes), so ``time_op`` times an operator on all of
    them in one pass. Same arithmetic per element as timing on each profile alone."""

    def __init__(self, devices: Sequence[HardwareProfile], ndim: int = 2) -> None:
        self.devices = tuple(devices)
        self._shape = (len(self.devices),) + (1,) * ndim
        self._cache: dict = {}
        self.hbm_bandwidth_bytes_per_s = self._stack(lambda d: d.hbm_bandwidth_bytes_per_s)

    def _stack(self, value_of) -> np.ndarray:
        return np.asarray([value_of(d) for d in self.devices], dtype=np.float64).reshape(self._shape)

    def peak_flops_per_s(self, unit: str, precision: str) -> np.ndarray:
        key = ("peak", unit, precision)
        if key not in self._cache:
            self._cache[key] = self._stack(lambda d: d.peak_flops_per_s(unit, precision))
        return self._cache[key]

    def efficiency_for(self, op_class: str) -> np.ndarray:
        key = ("efficiency", op_class)
        if key not in self._cache:
            self._cache[key] = self._stack(lambda d: d.efficiency_for(op_class))
        return self._cache[key]


def _device_graphs(model, plan, stages, visual, text, batch, accounting, flash, devices):
    """[(device indices, operators)]: the devices that share one operator graph. The graph
    depends on a device only through its on-chip buffer (the FlashAttention tile size);
    graphs that come out identical for different buffer sizes are merged, so most sweeps
    time one graph on all devices at once."""
    graphs: list[tuple[list[int], list[Op]]] = []
    by_buffer: dict[float, list[int]] = {}
    for i, device in enumerate(devices):
        by_buffer.setdefault(device.onchip_buffer_bytes if flash else None, []).append(i)
    for indices in by_buffer.values():
        ops = build_ops(model, plan, stages, visual, text, batch, accounting, flash,
                        devices[indices[0]].onchip_buffer_bytes)
        for known_indices, known_ops in graphs:
            if _same_ops(known_ops, ops):
                known_indices.extend(indices)
                break
        else:
            graphs.append((list(indices), ops))
    return [(sorted(indices), ops) for indices, ops in graphs]


def _same_ops(a: list[Op], b: list[Op]) -> bool:
    """Whether two operator lists are identical, numeric fields compared element-wise."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if (x.stage, x.block, x.name, x.op_class, x.precision, x.vector_precision, x.count) != (
                y.stage, y.block, y.name, y.op_class, y.precision, y.vector_precision, y.count):
            return False
        if not all(_equal(getattr(x, f), getattr(y, f)) for f in _NUMERIC_FIELDS):
            return False
    return True


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and bool(np.all(a == b))
    return a == b


def _column_order(stages) -> list[str]:
    columns = ["model", "hardware", "quant", "weight_bits", "act_bits", "kv_bits", "accounting",
               "flash_attention", "keep_ratio", "num_visual_tokens", "num_text_tokens",
               "num_prompt_tokens", "batch_size"]
    columns += [f"{stage}_{total}" for stage in stages for total in TOTALS]
    if "prefill" in stages:
        columns.append("prefill_speedup")
    return columns + ["ttft_s", "ttft_speedup"]


def _index_columns(model, devices, plans, ratios, visual, batches, text) -> dict:
    """The descriptive columns of one model's rows: device-major, then plan, visual
    tokens, batch."""
    num_h, num_q, num_v, num_b = len(devices), len(plans), len(visual), len(batches)
    n = num_h * num_q * num_v * num_b

    def per_plan(values, dtype):
        return np.tile(np.repeat(np.asarray(values, dtype=dtype), num_v * num_b), num_h)

    def per_visual(values, dtype):
        return np.tile(np.repeat(np.asarray(values, dtype=dtype), num_b), num_h * num_q)

    visual_col = per_visual(visual, np.int64)
    return {
        "model": np.full(n, model.name, dtype=object),
        "hardware": np.repeat(np.asarray([d.name for d in devices], dtype=object), num_q * num_v * num_b),
        "quant": per_plan([p.label for p in plans], object),
        "weight_bits": per_plan([p.weight_bits for p in plans], np.int64),
        "act_bits": per_plan([p.act_bits for p in plans], np.int64),
        "kv_bits": per_plan([p.kv_bits for p in plans], np.int64),
        "keep_ratio": per_visual(ratios, np.float64),
        "num_visual_tokens": visual_col,
        "num_text_tokens": np.full(n, text, dtype=np.int64),
        "num_prompt_tokens": visual_col + text,
        "batch_size": np.tile(np.asarray(batches, dtype=np.int64), num_h * num_q * num_v),
    }


def _concatenate(blocks: list[dict]) -> dict:
    return {key: np.concatenate([block[key] for block in blocks]) for key in blocks[0]}


def _visual_grid(model: ModelSpec, keep_ratios, num_visual_tokens, text: int):
    """(keep ratios, visual-token counts) of one model, one entry per grid row."""
    default = model.default_num_visual_tokens
    if num_visual_tokens is not None:
        visual = [check_count("num_visual_tokens", v, minimum=0)
                  for v in _as_list(num_visual_tokens, "num_visual_tokens")]
        ratios = [v / default if default else math.nan for v in visual]
    else:
        if default == 0:
            raise WorkloadError(f"model {model.name!r} has no visual tokens to keep a ratio of; "
                                "give num_visual_tokens")
        ratios = [1.0] if keep_ratios is None else _as_list(keep_ratios, "keep_ratios")
        visual = [visual_tokens_for_ratio(default, r) for r in ratios]
    if min(visual) + text < 1:
        raise WorkloadError("the prompt is empty: visual + text tokens must be at least 1")
    return ratios, visual


def _as_list(values, name: str) -> list:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        values = [values]
    values = list(values)
    if not values:
        raise WorkloadError(f"{name} is empty; give at least one value")
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _as_model(model) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        return get_preset(model)
    raise ConfigError(f"model {model!r} is neither a ModelSpec nor a preset name")


def _as_quant(quant) -> QuantPlan:
    """A ``QuantPlan``, a bit width (all three at N bits) or a ``wNaNkvN`` string."""
    if isinstance(quant, QuantPlan):
        return quant
    if isinstance(quant, int) and not isinstance(quant, bool):
        return QuantPlan.uniform(quant)
    if isinstance(quant, str):
        text = quant.strip()
        return QuantPlan.uniform(int(text)) if text.isdigit() else QuantPlan.parse(text)
    raise WorkloadError(f"quantization {quant!r} is not a QuantPlan, a bit width or a wNaNkvN string")

"""Sweeps: models × hardware × quantization × visual tokens × batch in one vectorized pass.

The operators come from the one stage assembly ``estimate()`` uses (``pipeline.stage_ops``,
through the model's family), called with numpy integer arrays for the token counts and batch
sizes (sweep_ops.py); ``time_op`` is plain arithmetic, so one call covers a whole grid. For
each model and quantization plan the operators are built ONCE over a (visual tokens + 1) ×
batch grid (the extra row is the unpruned baseline that ``prefill_speedup`` divides by), then
timed on each device; stage totals are sums of ``count`` × per-instance values in operator
order, exactly as ``StageTotals.of`` adds them, so every number equals the scalar
``estimate()`` bit for bit (a decode of several steps sums its steps along an array axis,
equal to ``estimate()``'s step-by-step sums up to rounding: relative 1e-12).

Integer arithmetic stays exact: token products are int64, and the largest configuration of
a grid is checked first with Python ints (``ops.check_exact``: every per-instance FLOP and
byte count ≤ 2**53, exact in float64 and far inside int64), so no product can overflow; they
become floats at the same step as in the scalar path. The finished frame is checked again:
a negative or non-finite time, FLOP or byte count raises instead of being returned.

Time to first token (``ttft_s``) always sums every pre-decode stage of the request, whichever
stages' columns are asked for. A sweep's memory is estimated before anything is allocated
(``check_memory``) and refused, with the figure, when it would not fit.

A new stage or model family needs nothing here: ``stage_ops`` builds it for both paths.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .accounting import Accounting, get_accounting
from .errors import ConfigError, WorkloadError
from .families import family_of
from .hardware import HardwareProfile
from .parallel import SINGLE, Parallelism, check_parallelism, link, shard_model
from .pipeline import ALL_STAGES, PRE_DECODE_STAGES, PipelineSettings, visual_layout
from .presets import get_preset
from .pruning import DEFAULT_SELECTION, SelectionSpec
from .quant import QuantPlan
from .spec import ModelSpec
from .sweep_checks import check_frame, check_memory
from .sweep_ops import (  # noqa: F401  (build_ops, stage_totals: part of this module's API)
    TOTALS,
    DeviceStack,
    RequestGrid,
    add_communication,
    build_ops,
    check_largest,
    device_graphs,
    stage_totals,
)
from .vision import VISION_LAYER_MODES
from .workload import MAX_BATCH, Workload, check_count, visual_tokens_for_ratio

# A sweep beyond this many configurations (rows) raises unless ``force=True``: at ~25
# float64 columns it is about 1 GB of DataFrame.
MAX_CONFIGURATIONS = 5_000_000
# Decode steps timed at once (devices x visual-token values x batches x steps) beyond which
# a sweep with many output tokens is refused: each operator's arrays hold that many floats.
MAX_DECODE_CELLS = 20_000_000

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
    *,
    num_output_tokens: int = 2,
    image_size: tuple[int, int] | None = None,
    vision_quant: QuantPlan | None = None,
    vision_layers: str = "all",
    selection: SelectionSpec | None = DEFAULT_SELECTION,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    parallelism: Parallelism | Sequence[Parallelism] | None = None,
    num_frames: int | None = None,
):
    """Roofline estimates of every configuration of a grid, as a pandas DataFrame.

    One row per (model, hardware, quant, visual tokens, batch), in that nesting order.
    ``models``: ``ModelSpec`` objects or preset names; ``hardware``: ``HardwareProfile``
    objects; ``quants``: ``QuantPlan`` objects, bit widths (``4`` = w4a4kv4) or strings
    (``"w4a16kv16"``). Visual tokens come from ``keep_ratios`` (fractions in (0, 1] of each
    model's unpruned visual tokens for ``image_size``, rounded as ``estimate`` does) or
    ``num_visual_tokens`` (counts); with neither, all visual tokens are kept.

    The other settings are ``estimate()``'s and shared by every row: ``num_output_tokens``
    N (the decode columns sum its N − 1 steps, each over a cache one token longer; the
    default 2 is one step over the prompt), ``image_size`` (width, height: LLaVA-NeXT's
    AnyRes; the other families resize every image), ``vision_quant`` (the tower's and
    projector's plan, default 16-bit), ``vision_layers`` ("all" or "feature") and
    ``selection`` (what freePruner's selection reads; None leaves its cost out),
    ``min_pixels`` / ``max_pixels`` (the resize limits of a dynamic-resolution family,
    Qwen2-VL and Qwen2.5-VL; refused when no model of the sweep uses them), ``parallelism``
    (tensor / pipeline degrees, parallel.py: one rank's operators; the prefill and decode
    times include their traffic, also listed as ``<stage>_communication_time_s``, with
    ``tensor_parallel``, ``pipeline_parallel`` and ``num_gpus`` columns; none of these
    columns on one GPU; a list of splits gives every row under each split, split-major, with
    those columns on every row) and ``num_frames`` (each sample a video of that many
    frames).

    Columns (SI units): model, hardware, quant, weight_bits, act_bits, kv_bits, accounting,
    flash_attention, keep_ratio, num_visual_tokens, num_text_tokens, num_prompt_tokens,
    batch_size; per stage ``<stage>_flops``, ``<stage>_time_s``,
    ``<stage>_memory_access_bytes``, ``<stage>_activation_store_bytes`` (stages: vision,
    selection, projector, prefill, decode by default; zero where a stage does not run, e.g.
    selection without pruning or vision for a text-only model); with prefill,
    ``prefill_speedup`` = prefill time with all the model's visual tokens / this prefill
    time (same model, device, plan and batch; NaN for a text-only model); and always
    ``ttft_s`` (the request's time to first token: every pre-decode stage, whichever stages
    are listed) with its ``ttft_speedup``. Every row equals ``estimate()`` of its workload.

    Raises ``WorkloadError`` for invalid values and for more than ``MAX_CONFIGURATIONS``
    rows unless ``force``.
    """
    settings = dict(quants=quants, keep_ratios=keep_ratios, num_visual_tokens=num_visual_tokens,
                    batch_sizes=batch_sizes, num_text_tokens=num_text_tokens,
                    accounting=accounting, flash_attention=flash_attention, stages=stages,
                    force=force, num_output_tokens=num_output_tokens, image_size=image_size,
                    vision_quant=vision_quant, vision_layers=vision_layers, selection=selection,
                    min_pixels=min_pixels, max_pixels=max_pixels, num_frames=num_frames)
    splits = _as_splits(parallelism)
    if len(splits) == 1:
        return _sweep_one(models, hardware, parallelism=splits[0], **settings)
    import pandas as pd

    frames = [_sweep_one(models, hardware, parallelism=split, num_splits=len(splits),
                         **settings) for split in splits]
    columns = next(f.columns for f in frames if "num_gpus" in f.columns)
    for frame in frames:
        if "num_gpus" not in frame.columns:  # the one-GPU split: its traffic is none
            for column in columns.difference(frame.columns):
                frame[column] = 0.0
            frame["tensor_parallel"], frame["pipeline_parallel"], frame["num_gpus"] = 1, 1, 1
    return pd.concat([f[columns] for f in frames], ignore_index=True)


def _as_splits(parallelism) -> list[Parallelism]:
    """One split or a list of them (distinct, in the order given)."""
    if parallelism is None:
        return [SINGLE]
    if isinstance(parallelism, Parallelism):
        return [parallelism]
    splits = list(dict.fromkeys(_as_list(parallelism, "parallelism")))
    for split in splits:
        if not isinstance(split, Parallelism):
            raise WorkloadError(f"parallelism {split!r} is not a Parallelism")
    return splits


def _sweep_one(models, hardware, *, quants, keep_ratios, num_visual_tokens, batch_sizes,
               num_text_tokens, accounting, flash_attention, stages, force, num_output_tokens,
               image_size, vision_quant, vision_layers, selection, min_pixels, max_pixels,
               parallelism: Parallelism, num_frames, num_splits: int = 1):
    """``sweep`` under one split; ``num_splits``: how many splits the whole sweep runs (the
    limits count every row of it)."""
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
    # one Workload checks the shared settings as estimate() does (counts, image size)
    Workload(0, 1, num_output_tokens=num_output_tokens, image_size=image_size,
             min_pixels=min_pixels, max_pixels=max_pixels, num_frames=num_frames)
    if not parallelism.is_single:
        for model in models:
            check_parallelism(model, parallelism, accounting.name)
        for device in devices:
            link(device)
    pixel_limits = (min_pixels, max_pixels)
    if pixel_limits != (None, None) and not any(family_of(m).uses_pixel_limits for m in models):
        flag = "--min-pixels" if min_pixels is not None else "--max-pixels"
        raise WorkloadError(f"{flag} changes nothing for {', '.join(m.name for m in models)}: "
                            "only dynamic-resolution models (Qwen2-VL, Qwen2.5-VL) resize within "
                            "pixel limits")
    vision_quant = vision_quant if vision_quant is not None else QuantPlan()
    if not isinstance(vision_quant, QuantPlan):
        vision_quant = _as_quant(vision_quant)
    if vision_layers not in VISION_LAYER_MODES:
        raise WorkloadError(f"vision layers {vision_layers!r} is unknown; valid: "
                            f"{', '.join(VISION_LAYER_MODES)}")
    shared = SharedSettings(num_text_tokens, num_output_tokens, image_size, vision_quant,
                            vision_layers, selection, accounting, flash_attention, pixel_limits,
                            parallelism, num_frames)

    layouts = [visual_layout(m, image_size, pixel_limits, num_frames) for m in models]
    grids = [_visual_grid(m, layout, keep_ratios, num_visual_tokens, num_text_tokens)
             for m, layout in zip(models, layouts, strict=True)]
    total = num_splits * count_configurations([len(v) for _, v in grids], len(devices),
                                              len(plans), len(batches))
    if total > MAX_CONFIGURATIONS and not force:
        raise WorkloadError(
            f"the sweep has {total:,} configurations, more than the limit of "
            f"{MAX_CONFIGURATIONS:,}; narrow it or pass force=True (--force)"
        )
    check_memory(total, len(_column_order(stages, parallelism)))
    check_decode_cells(shared, [len(v) + 1 for _, v in grids], len(devices), len(batches))

    with np.errstate(all="ignore"):  # a non-finite result is refused by check_frame below
        blocks = [
            _index_columns(model, devices, plans, ratios, visual, batches, num_text_tokens)
            | _model_totals(model, layout, visual, devices, plans, batches, stages, shared)
            for model, layout, (ratios, visual) in zip(models, layouts, grids, strict=True)
        ]
    frame = pd.DataFrame(_concatenate(blocks))
    frame["accounting"] = accounting.name
    frame["flash_attention"] = bool(flash_attention)
    if not parallelism.is_single:
        frame["tensor_parallel"] = parallelism.tensor
        frame["pipeline_parallel"] = parallelism.pipeline
        frame["num_gpus"] = parallelism.num_gpus
    frame = frame[_column_order(stages, parallelism)]
    check_frame(frame)
    return frame


@dataclass(frozen=True)
class SharedSettings:
    """The settings every row of a sweep shares (``estimate()``'s, beside the grid axes)."""

    num_text_tokens: int
    num_output_tokens: int
    image_size: tuple[int, int] | None
    vision_quant: QuantPlan
    vision_layers: str
    selection: SelectionSpec | None
    accounting: Accounting
    flash_attention: bool
    pixel_limits: tuple[int | None, int | None] = (None, None)
    parallelism: Parallelism = SINGLE
    num_frames: int | None = None

    def pipeline(self, plan: QuantPlan, onchip_buffer_bytes: float) -> PipelineSettings:
        return PipelineSettings(plan, self.accounting, self.flash_attention, onchip_buffer_bytes,
                                self.vision_quant, self.vision_layers, self.selection)

    @property
    def num_decode_steps(self) -> int:
        return max(self.num_output_tokens - 1, 0)


def check_decode_cells(shared: SharedSettings, visual_rows: Sequence[int], num_devices: int,
                       num_batches: int) -> None:
    """Refuse a sweep whose decode steps would fill arrays of more than
    ``MAX_DECODE_CELLS`` elements (every step of every configuration is timed on its own)."""
    steps = shared.num_decode_steps
    if steps <= 1:
        return
    cells = max(visual_rows) * num_devices * num_batches * steps
    if cells > MAX_DECODE_CELLS:
        raise WorkloadError(
            f"{shared.num_output_tokens:,} output tokens over {max(visual_rows) - 1} visual-token "
            f"values x {num_batches} batch sizes x {num_devices} devices time {cells:,} decode "
            f"steps at once, more than {MAX_DECODE_CELLS:,}; narrow the sweep or give fewer "
            "output tokens")


def _model_totals(model, layout, visual, devices, plans, batches, stages, shared) -> dict:
    """The per-stage totals (and prefill speedup) of one model's rows, flattened in row
    order: device-major, then plan, visual tokens, batch.

    The operators are built once per plan (and on-chip buffer size, with FlashAttention)
    over a (visual tokens + baseline) × batch grid, by ``pipeline.stage_ops`` as
    ``estimate()`` builds them, and timed on all devices at once."""
    baseline = family_of(model).has_vision
    rows_visual = visual + [layout.num_visual_tokens] if baseline else visual
    visual_grid = np.asarray(rows_visual, dtype=np.int64)[:, np.newaxis, np.newaxis]  # (V[+1], 1, 1)
    batch = np.asarray(batches, dtype=np.int64)[np.newaxis, :, np.newaxis]  # (1, B, 1)
    requests = RequestGrid(visual_grid, shared.num_text_tokens, batch, shared.num_output_tokens,
                           shared.image_size, shared.pixel_limits, shared.num_frames)
    largest = RequestGrid(max(rows_visual), shared.num_text_tokens, max(batches),
                          shared.num_output_tokens, shared.image_size, shared.pixel_limits,
                          shared.num_frames)
    parallel = not shared.parallelism.is_single
    rank = shard_model(model, shared.parallelism)  # one tensor-parallel rank's operators
    num_visual = len(visual)
    shape = (len(devices), len(plans), num_visual, len(batches))  # (H, Q, V, B)
    columns = {f"{stage}_{total}": np.zeros(shape) for stage in stages for total in TOTALS}
    comm_stages = [s for s in ("prefill", "decode") if s in stages] if parallel else []
    columns |= {f"{stage}_communication_time_s": np.zeros(shape) for stage in comm_stages}
    # TTFT is the whole request's: every pre-decode stage is built, whichever are shown
    built = tuple(s for s in ALL_STAGES if s in stages or s in PRE_DECODE_STAGES)
    if "prefill" in stages:
        columns["prefill_speedup"] = np.full(shape, np.nan)
    columns["ttft_s"] = np.zeros(shape)
    columns["ttft_speedup"] = np.full(shape, np.nan)
    for q, plan in enumerate(plans):
        def settings_for(buffer: float, plan=plan) -> PipelineSettings:
            return shared.pipeline(plan, buffer)

        graphs = device_graphs(rank, settings_for, built, requests, layout, devices,
                               shared.flash_attention)
        for indices, ops, stepped in graphs:
            check_largest(rank, settings_for(devices[indices[0]].onchip_buffer_bytes), built,
                          largest, layout, f"the sweep of {model.name}")
            stack = DeviceStack([devices[i] for i in indices])
            grid_shape = (len(indices), len(rows_visual), len(batches))
            totals = stage_totals(ops, stepped, shared.num_decode_steps, stack, grid_shape)
            if parallel:
                comm = add_communication(model, shared, plan, [devices[i] for i in indices],
                                          requests, totals, grid_shape)
                for stage in comm_stages:
                    columns[f"{stage}_communication_time_s"][indices, q] = comm[stage][:, :num_visual]
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


def _column_order(stages, parallelism: Parallelism = SINGLE) -> list[str]:
    columns = ["model", "hardware", "quant", "weight_bits", "act_bits", "kv_bits", "accounting",
               "flash_attention", "keep_ratio", "num_visual_tokens", "num_text_tokens",
               "num_prompt_tokens", "batch_size"]
    columns += [f"{stage}_{total}" for stage in stages for total in TOTALS]
    if not parallelism.is_single:
        columns = columns[:13] + ["tensor_parallel", "pipeline_parallel", "num_gpus"] + columns[13:]
        columns += [f"{s}_communication_time_s" for s in ("prefill", "decode") if s in stages]
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


def _visual_grid(model: ModelSpec, layout, keep_ratios, num_visual_tokens, text: int):
    """(keep ratios, visual-token counts) of one model, one entry per grid row; ratios are
    of the unpruned count of ``layout``, as ``estimate``'s keep ratio is."""
    default = layout.num_visual_tokens
    if num_visual_tokens is not None:
        visual = [check_count("num_visual_tokens", v, minimum=0)
                  for v in _as_list(num_visual_tokens, "num_visual_tokens")]
        ratios = [v / default if default else math.nan for v in visual]
    else:
        if default == 0:  # a text-only model: its prompt is all text
            if keep_ratios is not None:
                raise WorkloadError(f"model {model.name!r} has no visual tokens: keep ratios "
                                    "(--keep-ratios) do not apply to it; give visual tokens")
            return [math.nan], [0]
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

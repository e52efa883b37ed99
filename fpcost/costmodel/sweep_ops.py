"""The operators of a sweep's grid, built by the same stage assembly as ``estimate``
(``pipeline.stage_ops``) with numpy arrays for the token counts and batch sizes, and their
per-stage totals timed on several devices at once.

Grid axes of every array: (visual tokens [+ the unpruned baseline], batch, decode steps);
the device axis goes in front when timing (``DeviceStack``). Every operator but a decode
over several steps has length 1 on the steps axis. A decode of S > 1 steps (``output
tokens`` − 1) is built once with a cache of prompt + i tokens along the steps axis, as
``estimate`` builds it, and each of its totals is summed over that axis (the time of each
step on its own roofline, as ``estimate`` times them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .hardware import HardwareProfile
from .layout import VisualLayout
from .ops import NUMERIC_FIELDS, Op, check_exact
from .parallel import communication_time_s
from .pipeline import PipelineSettings, stage_ops
from .roofline import time_op

# Per-stage columns, ``<stage>_<total>``; names as in ``StageTotals``.
TOTALS = ("flops", "time_s", "memory_access_bytes", "activation_store_bytes")
# What each total sums over the operators (activation stores are the activation writes).
OP_FIELDS = {"flops": "flops", "memory_access_bytes": "memory_access_bytes",
             "activation_store_bytes": "act_write_bytes"}
GRID_NDIM = 3  # visual tokens, batch, decode steps


@dataclass(frozen=True)
class RequestGrid:
    """Requests of a sweep as ``pipeline.stage_ops`` reads a ``Workload``: visual tokens and
    batch sizes as broadcastable int64 arrays (or Python ints, for the largest
    configuration's exactness check); text tokens, output tokens, image size and pixel
    limits (min_pixels, max_pixels) shared."""

    num_visual_tokens: object
    num_text_tokens: int
    batch_size: object
    num_output_tokens: int = 2
    image_size: tuple[int, int] | None = None
    pixel_limits: tuple[int | None, int | None] = (None, None)
    num_frames: int | None = None

    @property
    def num_prompt_tokens(self):
        return self.num_visual_tokens + self.num_text_tokens

    @property
    def num_decode_steps(self) -> int:
        return max(self.num_output_tokens - 1, 0)


def build_ops(model, settings: PipelineSettings, stages: Sequence[str], requests: RequestGrid,
              layout: VisualLayout) -> tuple[list[Op], set[int]]:
    """(operators of every stage in ``estimate()``'s order, indices of the operators that
    carry the decode steps on their last axis). The selection stage costs nothing where
    nothing is pruned; a decode of no steps builds nothing."""
    ops: list[Op] = []
    stepped: set[int] = set()
    steps = requests.num_decode_steps
    for stage in stages:
        if stage == "decode":
            if steps == 0:
                continue
            kv = None
            if steps > 1:  # step i over a cache of prompt + i tokens, on the last axis
                kv = requests.num_prompt_tokens + np.arange(steps, dtype=np.int64)
            built = stage_ops(stage, model, requests, settings, decode_kv_tokens=kv, layout=layout)
            if steps > 1:
                stepped.update(range(len(ops), len(ops) + len(built)))
            ops += built
            continue
        ops += stage_ops(stage, model, requests, settings, layout=layout)
    return ops, stepped


def check_largest(model, settings, stages, requests: RequestGrid, layout, where: str) -> None:
    """Refuse a grid whose largest configuration (Python ints: every count grows with the
    tokens, the batch and the cache) leaves exact arithmetic (``ops.check_exact``)."""
    ops = []
    for stage in stages:
        if stage == "decode":
            if requests.num_decode_steps == 0:
                continue
            last_kv = requests.num_prompt_tokens + requests.num_decode_steps - 1
            ops += stage_ops(stage, model, requests, settings, decode_kv_tokens=last_kv,
                             layout=layout)
        else:
            ops += stage_ops(stage, model, requests, settings, layout=layout)
    check_exact(ops, where)


def stage_totals(ops: Iterable[Op], stepped: set[int], num_steps: int, hardware,
                 shape: tuple[int, ...]) -> dict:
    """``{stage: {total: array of shape}}``: each of ``TOTALS`` summed over the stage's
    operators (``count`` × per-instance value), in operator order, on ``hardware``;
    ``shape`` is (devices, visual tokens, batch). Stepped operators are summed over their
    ``num_steps`` steps first, as ``estimate`` sums a decode's steps."""
    out: dict[str, dict[str, np.ndarray]] = {}
    full = shape + (1,)
    for i, op in enumerate(ops):
        sums = out.setdefault(op.stage, dict.fromkeys(TOTALS, 0.0))
        timing = time_op(op, hardware)
        time_s = np.maximum(timing.compute_time_s, timing.memory_time_s)
        n = op.count
        if i in stepped:
            for total, field in OP_FIELDS.items():
                sums[total] = sums[total] + n * _sum_steps(getattr(op, field), full, num_steps)
            sums["time_s"] = sums["time_s"] + n * _sum_steps(time_s, full, num_steps)
            continue
        for total, field in OP_FIELDS.items():
            sums[total] = sums[total] + n * getattr(op, field)
        sums["time_s"] = sums["time_s"] + n * time_s
    return {stage: {k: np.broadcast_to(np.asarray(v, dtype=np.float64), full)[..., 0]
                    for k, v in sums.items()}
            for stage, sums in out.items()}


def _sum_steps(value, full: tuple[int, ...], num_steps: int) -> np.ndarray:
    """``value`` (broadcastable to devices × visual × batch × steps; a term that does not
    change from step to step counts once per step) summed over the steps, the steps axis
    kept with length 1."""
    value = np.asarray(value, dtype=np.float64)
    target = np.broadcast_shapes(value.shape, full[:-1] + (num_steps,))
    return np.broadcast_to(value, target).sum(axis=-1, keepdims=True)


class DeviceStack:
    """Several hardware profiles seen as one whose ceilings are arrays over devices (axis 0,
    broadcasting against ``ndim`` grid axes), so ``time_op`` times an operator on all of
    them in one pass. Same arithmetic per element as timing on each profile alone."""

    def __init__(self, devices: Sequence[HardwareProfile], ndim: int = GRID_NDIM) -> None:
        self.devices = tuple(devices)
        self._shape = (len(self.devices),) + (1,) * ndim
        self._cache: dict = {}
        self.hbm_bandwidth_bytes_per_s = self._stack(lambda d: d.hbm_bandwidth_bytes_per_s)
        self.weight_stream_s_per_byte = self._stack(lambda d: d.weight_stream_s_per_byte)

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


def device_graphs(model, settings_for, stages, requests, layout, devices, flash: bool):
    """[(device indices, operators, stepped indices)]: the devices that share one operator
    graph. The graph depends on a device only through its on-chip buffer (the
    FlashAttention tile size, ``settings_for(buffer)``); graphs that come out identical for
    different buffer sizes are merged, so most sweeps time one graph on all devices."""
    graphs: list[tuple[list[int], list[Op], set[int]]] = []
    by_buffer: dict[float | None, list[int]] = {}
    for i, device in enumerate(devices):
        by_buffer.setdefault(device.onchip_buffer_bytes if flash else None, []).append(i)
    for indices in by_buffer.values():
        ops, stepped = build_ops(model, settings_for(devices[indices[0]].onchip_buffer_bytes),
                                 stages, requests, layout)
        for known_indices, known_ops, _ in graphs:
            if _same_ops(known_ops, ops):
                known_indices.extend(indices)
                break
        else:
            graphs.append((list(indices), ops, stepped))
    return [(sorted(indices), ops, stepped) for indices, ops, stepped in graphs]


def _same_ops(a: list[Op], b: list[Op]) -> bool:
    """Whether two operator lists are identical, numeric fields compared element-wise."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if (x.stage, x.block, x.name, x.op_class, x.precision, x.vector_precision, x.count) != (
                y.stage, y.block, y.name, y.op_class, y.precision, y.vector_precision, y.count):
            return False
        if not all(_equal(getattr(x, f), getattr(y, f)) for f in NUMERIC_FIELDS):
            return False
    return True


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and bool(np.all(a == b))
    return a == b


def add_communication(model, shared, plan, devices, requests, totals: dict, grid_shape) -> dict:
    """Add each LLM stage's traffic (parallel.py) to its ``time_s`` in ``totals``, in place
    (``shared``: the sweep's ``SharedSettings``). Returns {stage: communication seconds of
    shape (devices, visual tokens, batch)}: the prefill's pass over the prompt, and the
    decode's steps (one token each, the same traffic every step)."""
    passes = {"prefill": (requests.num_prompt_tokens, 1),
              "decode": (1, shared.num_decode_steps)}
    out = {}
    for stage, (tokens, num_passes) in passes.items():
        comm = np.zeros(grid_shape)
        if stage in totals and num_passes:
            for d, device in enumerate(devices):
                seconds = communication_time_s(model, shared.parallelism, device, stage, tokens,
                                               requests.batch_size, plan.act_bytes_per_element)
                comm[d] = np.broadcast_to(num_passes * seconds, grid_shape[1:] + (1,))[..., 0]
            totals[stage]["time_s"] = totals[stage]["time_s"] + comm
        out[stage] = comm
    return out

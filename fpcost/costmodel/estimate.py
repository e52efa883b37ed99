"""Estimate a workload: build the operator graph of every stage, time every operator on the
roofline, and total each stage (and the whole request) as the sum of its rows.

N output tokens are generated as ``generate(max_new_tokens=N)`` does: the prefill yields the
first, then N − 1 decode steps over a growing cache; each step is timed on its own (the bound
of an operator can flip from one step to the next) and the step times summed.

With tensor / pipeline parallelism (parallel.py) the operators are those of one
tensor-parallel rank over every layer (the request's path through the GPUs), and each LLM
stage's total time adds its ``communication_time_s``: the all-reduces, the logits gather and
the sends between pipeline stages of each of its passes.

Every stage the request runs is always estimated, so time to first token, time per output
token and the end-to-end latency describe the whole request; ``stages`` only chooses which
stages ``totals()`` lists. A result with a negative or non-finite time, FLOP or byte count
is refused (``WorkloadError``), never returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import cached_property

from .accounting import Accounting, get_accounting
from .errors import WorkloadError
from .hardware import HardwareProfile
from .ops import Op, check_exact
from .parallel import SINGLE, Parallelism, Transfer, check_parallelism, link, shard_model, transfers
from .pipeline import PRE_DECODE_STAGES, PipelineSettings, check_stages, stage_ops
from .pruning import DEFAULT_SELECTION, SelectionSpec
from .quant import QuantPlan
from .roofline import time_op
from .spec import ModelSpec
from .workload import Workload

SUMMED_OP_FIELDS = ("tensor_flops", "vector_flops", "weight_bytes", "act_read_bytes",
                    "act_write_bytes", "kv_read_bytes", "kv_write_bytes")


@dataclass(frozen=True)
class OperatorEstimate:
    """One operator (``op.count`` identical instances) with the roofline time of one instance.

    For a decode operator over several steps, ``op`` holds the sums over the steps and
    ``step_time_s`` the sum of each step's own roofline time, which is at least each of the
    summed compute and memory times; ``step_bound`` is "compute", "memory" or "mixed".
    """

    op: Op
    compute_time_s: float
    memory_time_s: float
    step_time_s: float | None = None
    step_bound: str | None = None

    @property
    def time_s(self) -> float:
        if self.step_time_s is not None:
            return self.step_time_s
        return max(self.compute_time_s, self.memory_time_s)

    @property
    def bound(self) -> str:
        if self.step_bound is not None:
            return self.step_bound
        return "compute" if self.compute_time_s >= self.memory_time_s else "memory"


@dataclass(frozen=True)
class CommunicationEstimate:
    """One transfer of a stage (parallel.py) over ``num_passes`` passes (a decode's steps)."""

    transfer: Transfer
    num_passes: int
    time_s: float

    def as_dict(self) -> dict:
        t = self.transfer
        return {"stage": t.stage, "name": t.name, "collective": t.collective, "count": t.count,
                "num_passes": self.num_passes, "num_gpus": t.num_gpus,
                "message_bytes": float(t.message_bytes), "bytes_per_gpu": float(t.bytes_per_gpu),
                "num_latency_steps": t.num_steps, "time_s": self.time_s}


@dataclass(frozen=True)
class StageTotals:
    """Sums over a stage's operators (each counted ``count`` times), and the time of its
    GPU-to-GPU traffic (``communication_time_s``, 0 on one GPU), which ``time_s``
    includes. SI units."""

    flops: float
    tensor_flops: float
    vector_flops: float
    weight_bytes: float
    act_read_bytes: float
    act_write_bytes: float
    kv_read_bytes: float
    kv_write_bytes: float
    memory_access_bytes: float
    compute_time_s: float
    memory_time_s: float
    time_s: float
    communication_time_s: float = 0.0

    @property
    def activation_store_bytes(self) -> float:
        """All activation writes over all layers (Table 3's "Storing activation"; not the
        peak live memory)."""
        return self.act_write_bytes

    def as_dict(self) -> dict[str, float]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["activation_store_bytes"] = self.activation_store_bytes
        return out

    @classmethod
    def of(cls, rows: list[OperatorEstimate],
           communication: list[CommunicationEstimate] = ()) -> StageTotals:
        sums = dict.fromkeys((f.name for f in fields(cls)), 0.0)
        for row in rows:
            n = row.op.count
            for name in ("flops", "tensor_flops", "vector_flops", "weight_bytes",
                         "act_read_bytes", "act_write_bytes", "kv_read_bytes",
                         "kv_write_bytes", "memory_access_bytes"):
                sums[name] += n * getattr(row.op, name)
            sums["compute_time_s"] += n * row.compute_time_s
            sums["memory_time_s"] += n * row.memory_time_s
            sums["time_s"] += n * row.time_s
        for row in communication:
            sums["communication_time_s"] += row.time_s
        if communication:
            sums["time_s"] += sums["communication_time_s"]
        return cls(**sums)


@dataclass(frozen=True)
class Estimate:
    """The result of ``estimate``: operators with their roofline times, and totals.

    ``operators`` are the rows of the stages shown (``shown``: those asked for, default
    all); ``request_operators`` (empty: the same) every stage of the request, which time to
    first token, time per output token and ``end_to_end()`` always sum over.
    """

    model: ModelSpec
    workload: Workload
    quant: QuantPlan
    hardware: HardwareProfile
    accounting: Accounting
    flash_attention: bool
    operators: tuple[OperatorEstimate, ...]
    stage_names: tuple[str, ...] = ()
    vision_quant: QuantPlan = QuantPlan()
    vision_layers: str = "all"
    selection: SelectionSpec | None = DEFAULT_SELECTION
    shown_stages: tuple[str, ...] = ()
    request_operators: tuple[OperatorEstimate, ...] = ()
    parallelism: Parallelism = SINGLE
    communication: tuple[CommunicationEstimate, ...] = ()  # every stage of the request

    @property
    def rank_model(self) -> ModelSpec:
        """The model as one tensor-parallel rank runs it (``model`` on one GPU)."""
        return shard_model(self.model, self.parallelism)

    @property
    def all_operators(self) -> tuple[OperatorEstimate, ...]:
        """Every operator of every stage the request runs."""
        return self.request_operators or self.operators

    @property
    def stages(self) -> tuple[str, ...]:
        """Every stage the request runs, in pipeline order (a decode of no steps has no rows)."""
        if self.stage_names:
            return self.stage_names
        seen: dict[str, None] = {}
        for row in self.all_operators:
            seen.setdefault(row.op.stage, None)
        return tuple(seen)

    @property
    def shown(self) -> tuple[str, ...]:
        """The stages asked for (``estimate(stages=...)``; default all): what ``totals()`` lists."""
        return self.shown_stages or self.stages

    @property
    def settings(self) -> PipelineSettings:
        return PipelineSettings(self.quant, self.accounting, self.flash_attention,
                                self.hardware.onchip_buffer_bytes, self.vision_quant,
                                self.vision_layers, self.selection)

    @cached_property
    def _totals_by_stage(self) -> dict[str, StageTotals]:
        """Each stage's totals, summed once (an Estimate is immutable)."""
        rows: dict[str, list[OperatorEstimate]] = {stage: [] for stage in self.stages}
        for row in self.all_operators:
            rows.setdefault(row.op.stage, []).append(row)
        return {stage: StageTotals.of(stage_rows, [c for c in self.communication
                                                   if c.transfer.stage == stage])
                for stage, stage_rows in rows.items()}

    def stage_totals(self, stage: str) -> StageTotals:
        if stage not in self.stages:
            raise WorkloadError(f"stage {stage!r} was not estimated; have: {', '.join(self.stages)}")
        return self._totals_by_stage[stage]

    def totals(self) -> dict[str, StageTotals]:
        """The totals of each stage asked for (``shown``)."""
        return {stage: self.stage_totals(stage) for stage in self.shown}

    def end_to_end(self) -> StageTotals:
        """Sums over every operator of every stage the request runs (time_s = the latency),
        whichever stages are shown."""
        return self._end_to_end

    @cached_property
    def _end_to_end(self) -> StageTotals:
        return StageTotals.of(list(self.all_operators), list(self.communication))

    @property
    def ttft_s(self) -> float:
        """Time to first token: vision + selection + projector + prefill of the request."""
        return sum(self.stage_totals(s).time_s for s in self.stages if s in PRE_DECODE_STAGES)

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: decode time / decode steps (None without
        a decode step, i.e. for one generated token or a model without decode)."""
        steps = self.workload.num_decode_steps
        if "decode" not in self.stages or steps == 0:
            return None
        return self.stage_totals("decode").time_s / steps

    def operator_rows(self, per_layer: bool = False) -> list[dict]:
        """One dict per operator (``per_layer``: one per operator per layer, each with its
        ``layer`` index; otherwise one per operator with its values summed over layers)."""
        rows = []
        for row in self.operators:
            op = row.op
            base = {"stage": op.stage, "block": op.block, "name": op.name,
                    "op_class": op.op_class, "precision": op.precision}
            values = {
                "flops": op.flops, "tensor_flops": op.tensor_flops, "vector_flops": op.vector_flops,
                "weight_bytes": op.weight_bytes, "act_read_bytes": op.act_read_bytes,
                "act_write_bytes": op.act_write_bytes, "kv_read_bytes": op.kv_read_bytes,
                "kv_write_bytes": op.kv_write_bytes, "memory_access_bytes": op.memory_access_bytes,
                "compute_time_s": row.compute_time_s, "memory_time_s": row.memory_time_s,
                "time_s": row.time_s,
            }
            values = {k: float(v) for k, v in values.items()}
            # decode rows over several steps hold sums over the steps
            base["num_steps"] = self.workload.num_decode_steps if row.step_time_s is not None else 1
            if per_layer:
                for layer in range(op.count):
                    rows.append({**base, "layer": layer, **values, "bound": row.bound})
            else:
                summed = {k: op.count * v for k, v in values.items()}
                rows.append({**base, "count": op.count, **summed, "bound": row.bound})
        return rows

    def to_frame(self, per_layer: bool = True):
        """The operators as a pandas DataFrame of raw SI numbers (imports pandas)."""
        import pandas as pd

        return pd.DataFrame(self.operator_rows(per_layer=per_layer))


def estimate(
    model: ModelSpec,
    workload: Workload,
    hardware: HardwareProfile,
    quant: QuantPlan | None = None,
    accounting: Accounting | str = "fpcost",
    flash_attention: bool = False,
    stages: tuple[str, ...] | None = None,
    *,
    vision_quant: QuantPlan | None = None,
    vision_layers: str = "all",
    selection: SelectionSpec | None = DEFAULT_SELECTION,
    parallelism: Parallelism | None = None,
) -> Estimate:
    """Roofline estimate of ``workload`` on ``model`` and ``hardware``.

    Every stage the request runs is estimated (see pipeline.py): ``vision``, ``selection``,
    ``projector``, ``prefill`` (the LLM over the whole prompt) and ``decode``
    (``workload.num_decode_steps`` = output tokens − 1 steps; the default single step over the
    prompt's cache is LLM-Viewer's). ``stages`` (default all) chooses the stages ``totals()``
    lists; each must be one the request runs. ``quant`` is the LLM's plan; the vision tower
    and projector run at ``vision_quant`` (16-bit by default). ``vision_layers``: "all" encoder layers (what
    transformers runs) or "feature" (stop at the layer LLaVA reads). ``selection``: what
    freePruner's selection reads when pruning is active (None: leave its cost out).
    ``parallelism``: tensor / pipeline parallel degrees (parallel.py; default one GPU).
    """
    quant = quant or QuantPlan()
    if isinstance(accounting, str):
        accounting = get_accounting(accounting)
    parallelism = parallelism or SINGLE
    if not parallelism.is_single:
        check_parallelism(model, parallelism, accounting.name)
        link(hardware)  # refuse a profile without an interconnect before any work
    rank = shard_model(model, parallelism)
    settings = PipelineSettings(quant, accounting, flash_attention, hardware.onchip_buffer_bytes,
                                vision_quant or QuantPlan(), vision_layers, selection)
    shown = check_stages(model, workload, selection, stages)
    every = check_stages(model, workload, selection, None)
    rows: list[OperatorEstimate] = []
    for stage in every:
        if stage == "decode" and workload.num_decode_steps != 1:
            rows += _decode_steps(rank, workload, settings, hardware)
            continue
        ops = stage_ops(stage, rank, workload, settings)
        check_exact(ops, _describe(workload))
        for op in ops:
            timing = time_op(op, hardware)
            rows.append(OperatorEstimate(op, float(timing.compute_time_s), float(timing.memory_time_s)))
    shown_rows = tuple(row for row in rows if row.op.stage in shown)
    result = Estimate(model, workload, quant, hardware, accounting, flash_attention, shown_rows,
                      every, settings.vision_quant, vision_layers, selection,
                      shown if stages is not None else (),
                      tuple(rows) if len(shown_rows) != len(rows) else (), parallelism,
                      communication_rows(model, workload, quant, parallelism, hardware, every))
    check_result(result)
    return result


def communication_rows(model: ModelSpec, workload: Workload, quant: QuantPlan,
                       parallelism: Parallelism, hardware: HardwareProfile,
                       stages: tuple[str, ...]) -> tuple[CommunicationEstimate, ...]:
    """The traffic of the request's LLM passes: the prefill over the prompt, and each decode
    step over one token (every step sends the same bytes); none on one GPU."""
    if parallelism.is_single:
        return ()
    passes = {"prefill": (workload.num_prompt_tokens, 1), "decode": (1, workload.num_decode_steps)}
    rows = []
    for stage in stages:
        if stage not in passes or passes[stage][1] == 0:
            continue
        tokens, num_passes = passes[stage]
        for t in transfers(model, parallelism, stage, tokens, workload.batch_size,
                           quant.act_bytes_per_element):
            rows.append(CommunicationEstimate(t, num_passes, num_passes * float(t.time_s(hardware))))
    return tuple(rows)


def _describe(workload: Workload) -> str:
    """The workload's counts, for an error that must name the values at fault."""
    return (f"the workload (batch {workload.batch_size}, {workload.num_visual_tokens} visual + "
            f"{workload.num_text_tokens} text tokens, {workload.num_output_tokens} output tokens)")


def check_result(result: Estimate) -> None:
    """The last line of defence: refuse a result holding a negative or non-finite time, FLOP
    or byte count (e.g. from a hardware profile with a denormal bandwidth)."""
    for stage in result.stages:
        for name, value in result.stage_totals(stage).as_dict().items():
            if not (0 <= value < math.inf):  # false for NaN too
                raise WorkloadError(
                    f"the {stage} stage's {name} came out as {value!r}, which is not a finite "
                    f"non-negative number; check the hardware profile {result.hardware.name!r} "
                    "(rates and bandwidth must be positive and not denormal) and the workload"
                )


def _decode_steps(model, workload, settings, hardware) -> list[OperatorEstimate]:
    """Decode operators over ``num_decode_steps`` steps, each step timed on its own: step
    i attends to prompt + i cached tokens. One row per operator, holding sums over steps."""
    num_steps = workload.num_decode_steps
    if num_steps == 0:
        return []
    import numpy as np  # only here: the default estimate path stays numpy-free

    kv_tokens = workload.num_prompt_tokens + np.arange(num_steps, dtype=np.int64)
    ops = stage_ops("decode", model, workload, settings, decode_kv_tokens=kv_tokens)
    check_exact(ops, _describe(workload))
    rows = []
    for op in ops:
        timing = time_op(op, hardware)
        compute = np.broadcast_to(timing.compute_time_s, (num_steps,))
        memory = np.broadcast_to(timing.memory_time_s, (num_steps,))
        compute_bound = compute >= memory
        bound = "compute" if compute_bound.all() else "memory" if not compute_bound.any() else "mixed"
        summed = replace(op, **{name: float(np.broadcast_to(getattr(op, name), (num_steps,)).sum())
                                for name in SUMMED_OP_FIELDS})
        rows.append(OperatorEstimate(summed, float(compute.sum()), float(memory.sum()),
                                     step_time_s=float(np.maximum(compute, memory).sum()),
                                     step_bound=bound))
    return rows

"""Estimate a workload: build the operator graph, time every operator on the roofline,
and total each stage as the sum of its rows."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .accounting import Accounting, get_accounting
from .errors import WorkloadError
from .hardware import HardwareProfile
from .llm import DecoderPass, decoder_ops
from .ops import Op
from .quant import QuantPlan
from .roofline import time_op
from .spec import ModelSpec
from .workload import Workload

STAGES = ("prefill", "decode")


@dataclass(frozen=True)
class OperatorEstimate:
    """One operator (``op.count`` identical instances) with the roofline time of one instance."""

    op: Op
    compute_time_s: float
    memory_time_s: float

    @property
    def time_s(self) -> float:
        return max(self.compute_time_s, self.memory_time_s)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_time_s >= self.memory_time_s else "memory"


@dataclass(frozen=True)
class StageTotals:
    """Sums over a stage's operators (each counted ``count`` times). SI units."""

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
    def of(cls, rows: list[OperatorEstimate]) -> StageTotals:
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
        return cls(**sums)


@dataclass(frozen=True)
class Estimate:
    """The result of ``estimate``: every operator with its roofline time, and totals."""

    model: ModelSpec
    workload: Workload
    quant: QuantPlan
    hardware: HardwareProfile
    accounting: Accounting
    flash_attention: bool
    operators: tuple[OperatorEstimate, ...]

    @property
    def stages(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for row in self.operators:
            seen.setdefault(row.op.stage, None)
        return tuple(seen)

    def stage_totals(self, stage: str) -> StageTotals:
        rows = [row for row in self.operators if row.op.stage == stage]
        if not rows:
            raise WorkloadError(f"stage {stage!r} was not estimated; have: {', '.join(self.stages)}")
        return StageTotals.of(rows)

    def totals(self) -> dict[str, StageTotals]:
        return {stage: self.stage_totals(stage) for stage in self.stages}

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
    stages: tuple[str, ...] = STAGES,
) -> Estimate:
    """Roofline estimate of ``workload`` on ``model`` and ``hardware``.

    ``prefill`` runs the LLM over the whole prompt; ``decode`` is one generation step over a
    KV cache holding the prompt (LLM-Viewer's convention).
    """
    quant = quant or QuantPlan()
    if isinstance(accounting, str):
        accounting = get_accounting(accounting)
    for stage in stages:
        if stage not in STAGES:
            raise WorkloadError(f"stage {stage!r} is unknown; valid: {', '.join(STAGES)}")
    ops: list[Op] = []
    prompt = workload.num_prompt_tokens
    for stage in stages:
        step = DecoderPass(
            stage=stage,
            num_query_tokens=prompt if stage == "prefill" else 1,
            num_kv_tokens=prompt,
            batch_size=workload.batch_size,
        )
        ops += decoder_ops(model.llm, quant, step, accounting, flash_attention,
                           hardware.onchip_buffer_bytes)
    rows = []
    for op in ops:
        timing = time_op(op, hardware)
        rows.append(OperatorEstimate(op, float(timing.compute_time_s), float(timing.memory_time_s)))
    return Estimate(model, workload, quant, hardware, accounting, flash_attention, tuple(rows))

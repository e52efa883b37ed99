"""One iteration of a continuous-batching server as operator records, and its roofline time.

An iteration runs, in one forward pass of the LLM, one decode step for every decoding
request and a prefill (or a prefill chunk) for every prefilling one, plus the vision side
(tower, selection, projector) of the requests whose prefill starts in it:

- ``tokens``: the LLM's linear and element-wise operators over the iteration's total tokens
  (``T`` = decodes + prefill tokens); the weights are read once per iteration;
- ``decode_attention``: one batched attention kernel over every decoding request, its
  FLOPs and bytes the sums of each request's own (1 query token over its context);
- ``prefill_attention``: one attention per prefilling request, its chunk of query tokens
  over its context (cached tokens + the chunk);
- ``lm_head``: the LM head for the requests that emit a token this iteration;
- ``vision``: the vision stages of each newly started request (grouped by workload: a
  group of n identical images runs as a batch of n, weights read once).

Every operator comes from the stage assembly the estimate uses (``pipeline.stage_ops``
for the vision side, the family's ``decoder_ops`` with a ``DecoderPass`` for the LLM), so
with one request at a time an iteration is exactly the estimate's prefill (with vision) or
one of its decode steps. The context a decode step attends to follows the estimate's
convention: step i of a request reads a cache of prompt + i tokens (LLM-Viewer's).

``iteration_ops`` is the one definition of what an iteration runs; a parallelism transform
(``OpsTransform``: part name, operators and the part's counts in, operators out) rewrites
each part in it and in ``IterationCost`` alike; it may add ``Transfer`` records (GPU-to-GPU
traffic, parallel.py), which ``ops_time_s`` times on the profile's link. ``IterationCost``
times iterations fast: the ``tokens`` and ``lm_head`` parts are memoised per count,
prefill attention per (chunk, context), the vision side per (workload, count), and decode
attention in closed form: every FLOP and byte of a decode step's attention is affine in
the context length (checked exactly when the coefficients are fitted), so the batched
kernel's totals are n·α + K·β for n decoding requests with K context tokens in all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from ..errors import WorkloadError
from ..families import family_of
from ..hardware import HardwareProfile
from ..llm import DecoderPass
from ..ops import NUMERIC_FIELDS, Op
from ..parallel import Transfer
from ..pipeline import VISION_STAGES, PipelineSettings, applicable_stages, stage_ops
from ..roofline import time_op
from ..spec import ModelSpec
from ..workload import Workload

LM_HEAD_BLOCK = "lm_head"
# The operators of llm.py's decoder that read the context (the rest see only the new tokens).
ATTENTION_OPS = ("qk_matmul", "softmax", "sv_matmul", "fused_attention")
# Context lengths at which decode attention's affine coefficients are fitted and checked.
FIT_CONTEXTS = (1, 2, 1_000_003)


@dataclass(frozen=True)
class PrefillChunk:
    """A prefilling request's share of an iteration: ``num_query_tokens`` new tokens over a
    context of ``num_kv_tokens`` (its cached tokens plus these); ``emits``: the chunk ends
    the prompt, so the request samples a token (the LM head runs for it)."""

    num_query_tokens: int
    num_kv_tokens: int
    emits: bool


@dataclass(frozen=True)
class IterationBatch:
    """What one iteration runs. ``decode_kv_tokens``: each decoding request's context;
    ``prefill_chunks``: one per prefilling request; ``vision``: (workload, count) for the
    requests whose prefill starts here, grouped by workload (each workload of batch 1)."""

    decode_kv_tokens: tuple[int, ...] = ()
    prefill_chunks: tuple[PrefillChunk, ...] = ()
    vision: tuple[tuple[Workload, int], ...] = ()

    @property
    def num_tokens(self) -> int:
        """Tokens the LLM's linear layers run on: one per decode plus every chunk's."""
        return len(self.decode_kv_tokens) + sum(c.num_query_tokens for c in self.prefill_chunks)

    @property
    def num_emitting(self) -> int:
        return len(self.decode_kv_tokens) + sum(1 for c in self.prefill_chunks if c.emits)


def _llm_ops(model: ModelSpec, settings: PipelineSettings, step: DecoderPass) -> list[Op]:
    return family_of(model).decoder_ops(model, settings, step)


def part_ops(model: ModelSpec, settings: PipelineSettings, part: str, **counts) -> list[Op]:
    """The operators of one part of an iteration (module docstring). ``counts``:
    ``tokens``: num_tokens, stage; ``decode_attention``: kv_tokens (an int or an integer
    array: one request each, not yet summed); ``prefill_attention``: query_tokens,
    kv_tokens; ``lm_head``: num_emitting, stage; ``vision``: workload, count."""
    if part == "tokens":
        ops = _llm_ops(model, settings, DecoderPass(counts["stage"], counts["num_tokens"],
                                                    counts["num_tokens"], 1))
        return [op for op in ops if op.name not in ATTENTION_OPS and op.block != LM_HEAD_BLOCK]
    if part == "decode_attention":
        ops = _llm_ops(model, settings, DecoderPass("decode", 1, counts["kv_tokens"], 1))
        return [op for op in ops if op.name in ATTENTION_OPS]
    if part == "prefill_attention":
        ops = _llm_ops(model, settings, DecoderPass("prefill", counts["query_tokens"],
                                                    counts["kv_tokens"], 1))
        return [op for op in ops if op.name in ATTENTION_OPS]
    if part == "lm_head":
        ops = _llm_ops(model, settings, DecoderPass(counts["stage"], 1, 1, counts["num_emitting"]))
        return [op for op in ops if op.block == LM_HEAD_BLOCK]
    if part == "vision":
        workload = replace(counts["workload"], batch_size=counts["count"])
        stages = [s for s in applicable_stages(model, workload, settings.selection)
                  if s in VISION_STAGES]
        return [op for stage in stages for op in stage_ops(stage, model, workload, settings)]
    raise ValueError(f"unknown iteration part {part!r}")


def _summed(op: Op, num_requests: int) -> Op:
    """An operator whose fields are arrays (one element per request; a term that does not
    depend on the context is a scalar, the same for each) as one batched kernel: each FLOP
    and byte term summed over the requests."""
    import numpy as np

    return replace(op, **{name: float(np.broadcast_to(getattr(op, name), (num_requests,)).sum())
                          for name in NUMERIC_FIELDS})


# A rewrite of one part's operators, e.g. to add the collectives of a split over GPUs:
# (part name, operators, **the part's counts as part_ops takes them) -> operators and
# ``Transfer`` records. Decode attention must stay operators, affine in the context.
OpsTransform = Callable[..., list[Op | Transfer]]


def iteration_ops(model: ModelSpec, batch: IterationBatch, settings: PipelineSettings,
                  ops_transform: OpsTransform | None = None) -> list[Op | Transfer]:
    """Every operator (and, with ``ops_transform``, transfer) one iteration runs (module
    docstring), op by op: the reference that ``IterationCost`` must equal."""
    import numpy as np

    def part(name: str, **counts) -> list[Op | Transfer]:
        ops = part_ops(model, settings, name, **counts)
        return ops_transform(name, ops, **counts) if ops_transform is not None else ops

    stage = "prefill" if batch.prefill_chunks else "decode"
    ops: list[Op] = []
    for workload, count in batch.vision:
        ops += part("vision", workload=workload, count=count)
    if batch.num_tokens:
        ops += part("tokens", num_tokens=batch.num_tokens, stage=stage)
    if batch.decode_kv_tokens:
        kv = np.asarray(batch.decode_kv_tokens, dtype=np.int64)
        ops += [_summed(op, len(kv)) for op in part("decode_attention", kv_tokens=kv)]
    for chunk in batch.prefill_chunks:
        ops += part("prefill_attention", query_tokens=chunk.num_query_tokens,
                    kv_tokens=chunk.num_kv_tokens)
    if batch.num_emitting:
        ops += part("lm_head", num_emitting=batch.num_emitting, stage=stage)
    return ops


def ops_time_s(ops: list[Op | Transfer], hardware: HardwareProfile) -> float:
    """Roofline time of a list of operators: each instance at max(compute, memory); a
    ``Transfer`` at its link time (bytes / bandwidth + steps · latency, parallel.py)."""
    total = 0.0
    for op in ops:
        if isinstance(op, Transfer):
            total += op.time_s(hardware)
            continue
        timing = time_op(op, hardware)
        total += op.count * max(timing.compute_time_s, timing.memory_time_s)
    return total


@dataclass(frozen=True)
class _AffineOp:
    """Compute and memory time of a batched decode-attention operator (all ``count``
    instances) as n·per_request + K·per_context_token."""

    compute_per_request_s: float
    compute_per_token_s: float
    memory_per_request_s: float
    memory_per_token_s: float


class IterationCost:
    """Fast iteration times, equal to ``ops_time_s(iteration_ops(...))`` to float rounding
    (tests/serve check it). ``ops_transform`` (default none) rewrites every part's operators
    as ``iteration_ops`` does, e.g. to shard them across GPUs."""

    def __init__(self, model: ModelSpec, settings: PipelineSettings, hardware: HardwareProfile,
                 ops_transform: OpsTransform | None = None):
        self.model, self.settings, self.hardware = model, settings, hardware
        self._transform = ops_transform or (lambda part, ops, **counts: ops)
        self._tokens: dict[tuple[int, str], float] = {}
        self._lm_head: dict[tuple[int, str], float] = {}
        self._prefill_attention: dict[tuple[int, int], float] = {}
        self._vision: dict[tuple[Workload, int], float] = {}
        self._check_split()
        self._decode = self._fit_decode_attention()

    def _check_split(self) -> None:
        """Only ``ATTENTION_OPS`` may read the context: every other operator of a pass must
        be the same over a context of 3 or 7 tokens (a family adding another would break the
        split into parts)."""
        short, long = (_llm_ops(self.model, self.settings, DecoderPass("prefill", 3, kv, 1))
                       for kv in (3, 7))
        for a, b in zip(short, long, strict=True):
            if a.name not in ATTENTION_OPS and a != b:
                raise WorkloadError(f"{self.model.name}: operator {a.name} depends on the context "
                                    "length; fpcost serve cannot split its iterations")

    def _part(self, part: str, **counts) -> list[Op | Transfer]:
        return self._transform(part, part_ops(self.model, self.settings, part, **counts), **counts)

    def _fit_decode_attention(self) -> list[_AffineOp]:
        """Per operator, the per-request and per-context-token coefficients of decode
        attention, fitted at contexts 1 and 2 and checked exactly at a third."""
        import numpy as np

        kv = np.asarray(FIT_CONTEXTS, dtype=np.int64)
        fitted = []
        for op in self._part("decode_attention", kv_tokens=kv):
            if not isinstance(op, Op):
                raise WorkloadError("a transform added traffic to decode attention; put it in the "
                                    "tokens part (the closed-form decode cost times operators)")
            per_token, per_request = {}, {}
            for name in NUMERIC_FIELDS:
                values = np.broadcast_to(np.asarray(getattr(op, name), dtype=np.float64), kv.shape)
                slope = values[1] - values[0]
                intercept = values[0] - slope * kv[0]
                if values[2] != intercept + slope * kv[2]:
                    raise WorkloadError(f"decode attention's {op.name} {name} is not affine in the "
                                        "context length; the closed-form decode cost does not apply")
                per_token[name], per_request[name] = float(slope), float(intercept)
            scalar = {f.name: getattr(op, f.name) for f in fields(op) if f.name not in NUMERIC_FIELDS}
            a = time_op(Op(**scalar, **per_request), self.hardware)
            b = time_op(Op(**scalar, **per_token), self.hardware)
            fitted.append(_AffineOp(op.count * a.compute_time_s, op.count * b.compute_time_s,
                                    op.count * a.memory_time_s, op.count * b.memory_time_s))
        return fitted

    def tokens_time_s(self, num_tokens: int, stage: str) -> float:
        key = (num_tokens, stage)
        if key not in self._tokens:
            self._tokens[key] = ops_time_s(self._part("tokens", num_tokens=num_tokens, stage=stage),
                                           self.hardware)
        return self._tokens[key]

    def lm_head_time_s(self, num_emitting: int, stage: str) -> float:
        key = (num_emitting, stage)
        if key not in self._lm_head:
            self._lm_head[key] = ops_time_s(self._part("lm_head", num_emitting=num_emitting,
                                                       stage=stage), self.hardware)
        return self._lm_head[key]

    def decode_attention_time_s(self, num_requests: int, num_context_tokens: int) -> float:
        """The batched decode-attention kernel of ``num_requests`` requests whose contexts
        sum to ``num_context_tokens``."""
        total = 0.0
        for op in self._decode:
            compute = num_requests * op.compute_per_request_s + num_context_tokens * op.compute_per_token_s
            memory = num_requests * op.memory_per_request_s + num_context_tokens * op.memory_per_token_s
            total += compute if compute >= memory else memory
        return total

    def prefill_attention_time_s(self, query_tokens: int, kv_tokens: int) -> float:
        key = (query_tokens, kv_tokens)
        if key not in self._prefill_attention:
            self._prefill_attention[key] = ops_time_s(
                self._part("prefill_attention", query_tokens=query_tokens, kv_tokens=kv_tokens),
                self.hardware)
        return self._prefill_attention[key]

    def vision_time_s(self, workload: Workload, count: int) -> float:
        key = (workload, count)
        if key not in self._vision:
            self._vision[key] = ops_time_s(self._part("vision", workload=workload, count=count),
                                           self.hardware)
        return self._vision[key]

    def time_s(self, batch: IterationBatch) -> float:
        """The iteration's roofline time (what ``iteration_ops`` runs), from the caches."""
        return self.parts_time_s(len(batch.decode_kv_tokens), sum(batch.decode_kv_tokens),
                                 batch.prefill_chunks, batch.vision)

    def parts_time_s(self, num_decodes: int, decode_context_tokens: int,
                     chunks: tuple[PrefillChunk, ...] | list[PrefillChunk],
                     vision: tuple[tuple[Workload, int], ...] | list[tuple[Workload, int]]) -> float:
        """``time_s`` from the counts the scheduler keeps (no batch object needed)."""
        stage = "prefill" if chunks else "decode"
        total = 0.0
        for workload, count in vision:
            total += self.vision_time_s(workload, count)
        num_tokens = num_decodes
        emitting = num_decodes
        for chunk in chunks:
            num_tokens += chunk.num_query_tokens
            emitting += chunk.emits
        if num_tokens:
            total += self.tokens_time_s(num_tokens, stage)
        if num_decodes:
            total += self.decode_attention_time_s(num_decodes, decode_context_tokens)
        for chunk in chunks:
            total += self.prefill_attention_time_s(chunk.num_query_tokens, chunk.num_kv_tokens)
        if emitting:
            total += self.lm_head_time_s(emitting, stage)
        return total

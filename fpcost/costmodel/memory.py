"""Device memory a request needs: weights, KV cache and peak live activations, whether that
fits the device, and the largest batch that does.

Definitions (all bytes, per device, no framework overhead: CUDA context, allocator
fragmentation and workspace buffers are not counted):

- weights: every part's parameters (params.py) at its bit width: the LLM at the plan's
  ``weight_bits``, every other part the family counts (vision tower(s), projector,
  LLaVA-NeXT's newline embedding) at the vision plan's (16-bit by default). Video-LLaVA
  keeps both its image and video towers.
- KV cache: K and V of every LLM layer for the final context, prompt + decode steps (N − 1
  for N generated tokens: the last token is never fed back), of every sample: batch ×
  context × layers × 2 × kv_heads·head_dim × kv bytes.
- peak activations: the largest, over every operator of every stage the request runs
  (decode at its last step, the longest cache), of the activation bytes the operator reads
  and writes — its input and output tensors, the s × s scores when attention is unfused —
  plus the stage's residual stream held for the residual add (batch × tokens × hidden; none
  in the projector). Weights and the KV cache are counted apart, above.

With tensor / pipeline parallelism (parallel.py) every figure is one GPU's: the busiest one,
the pipeline stage whose weights + KV cache are largest (ties: the earliest). A stage holds
its decoder layers' shards and KV cache; the first stage also the embedding shard, the
vision tower(s) and projector (whole: replicated on every tensor-parallel rank); the last
the final norm and the LM head shard (with tied embeddings and more than one stage, its own
copy of the embedding shard). The peak activations are one rank's, the largest over every
operator of the request, counted on every stage (an upper bound for the stages without
that operator). Fits and the largest batch are per GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .errors import WorkloadError
from .estimate import Estimate
from .families import family_of
from .parallel import SINGLE, Parallelism, shard_model, stage_layers
from .params import RMS_NORM_PARAMS_PER_CHANNEL, parameter_counts
from .pipeline import PipelineSettings, applicable_stages, stage_ops, workload_layout
from .quant import QuantPlan
from .spec import ModelSpec
from .workload import MAX_BATCH, Workload

KV_TENSORS = 2
MAX_BATCH_SEARCH = MAX_BATCH  # the search gives up above this batch size


@dataclass(frozen=True)
class MemoryFootprint:
    weight_bytes: dict[str, float]
    kv_cache_bytes: float
    peak_activation_bytes: float
    peak_activation_operator: str
    device_memory_bytes: float
    max_batch_size: int
    num_gpus: int = 1
    pipeline_stage: int = 0  # the busiest GPU's stage (0-based)
    layers_per_stage: tuple[int, ...] = ()  # () on one GPU

    @property
    def total_weight_bytes(self) -> float:
        return sum(self.weight_bytes.values())

    @property
    def total_bytes(self) -> float:
        return self.total_weight_bytes + self.kv_cache_bytes + self.peak_activation_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.device_memory_bytes

    def as_dict(self) -> dict:
        return {
            "weight_bytes": {**self.weight_bytes, "total": self.total_weight_bytes},
            "kv_cache_bytes": self.kv_cache_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "peak_activation_operator": self.peak_activation_operator,
            "total_bytes": self.total_bytes,
            "device_memory_bytes": self.device_memory_bytes,
            "fits": self.fits,
            "max_batch_size": self.max_batch_size,
            "num_gpus": self.num_gpus,
            **({"pipeline_stage": self.pipeline_stage,
                "layers_per_stage": list(self.layers_per_stage)} if self.num_gpus > 1 else {}),
        }


def weight_bytes_by_part(model: ModelSpec, quant: QuantPlan, vision_quant: QuantPlan) -> dict[str, float]:
    counts = parameter_counts(model)
    return {part: count * (quant.weight_bytes_per_element if part == "llm"
                           else vision_quant.weight_bytes_per_element)
            for part, count in counts.items() if part != "total"}


def kv_cache_bytes(model: ModelSpec, workload: Workload, quant: QuantPlan,
                   num_layers: int | None = None) -> float:
    """The KV cache of ``num_layers`` decoder layers (default all) at the final context."""
    llm = model.llm
    layers = llm.num_hidden_layers if num_layers is None else num_layers
    return (workload.batch_size * workload.num_final_context_tokens * layers
            * KV_TENSORS * llm.kv_size * quant.kv_bytes_per_element)


def stage_weight_bytes(model: ModelSpec, parallelism: Parallelism, quant: QuantPlan,
                       vision_quant: QuantPlan) -> list[dict[str, float]]:
    """Weight bytes by part on one GPU of each pipeline stage (module docstring)."""
    rank = shard_model(model, parallelism)
    llm = rank.llm
    parts = weight_bytes_by_part(rank, quant, vision_quant)
    embed = llm.vocab_size * llm.hidden_size  # the vocabulary-parallel shard
    head = 0 if llm.tie_word_embeddings else embed
    norm = RMS_NORM_PARAMS_PER_CHANNEL * llm.hidden_size
    per_layer, rest = divmod(parameter_counts(rank)["llm"] - embed - head - norm,
                             llm.num_hidden_layers)
    if rest:  # the family counts something per LLM that is not a layer: say so, never guess
        raise WorkloadError(f"{model.name}: the LLM's parameters do not split into equal layers; "
                            "pipeline parallelism cannot place them")
    layers = stage_layers(llm.num_hidden_layers, parallelism.pipeline)
    last = len(layers) - 1
    out = []
    for k, num_layers in enumerate(layers):
        params = num_layers * per_layer + (embed if k == 0 else 0)
        if k == last:
            params += norm + (head if head or last == 0 else embed)  # tied: a copy on the last
        stage = {part: (params * quant.weight_bytes_per_element if part == "llm"
                        else value if k == 0 else 0.0)
                 for part, value in parts.items()}
        out.append(stage)
    return out


def gpu_footprints(model: ModelSpec, workload: Workload, settings: PipelineSettings,
                   parallelism: Parallelism) -> list[tuple[dict[str, float], float]]:
    """(weight bytes by part, KV cache bytes) of one GPU of each pipeline stage."""
    rank = shard_model(model, parallelism)
    layers = stage_layers(model.llm.num_hidden_layers, parallelism.pipeline)
    weights = stage_weight_bytes(model, parallelism, settings.quant, settings.vision_quant)
    return [(w, kv_cache_bytes(rank, workload, settings.quant, n))
            for w, n in zip(weights, layers, strict=True)]


def kv_bytes_per_token(model: ModelSpec, parallelism: Parallelism, quant: QuantPlan) -> float:
    """KV-cache bytes one token of context takes on the GPU that holds the most of it (the
    stage with the most layers): layers × K and V × KV heads per GPU × head size × kv bytes.
    A serving simulator's block size × this is one cache block on that GPU."""
    rank = shard_model(model, parallelism).llm
    layers = max(stage_layers(rank.num_hidden_layers, parallelism.pipeline))
    return layers * KV_TENSORS * rank.kv_size * quant.kv_bytes_per_element


def busiest_stage(footprints: list[tuple[dict[str, float], float]]) -> int:
    """The stage whose weights + KV cache are largest (the earliest of equals)."""
    totals = [sum(w.values()) + kv for w, kv in footprints]
    return totals.index(max(totals))


def peak_activation(model: ModelSpec, workload: Workload, settings: PipelineSettings) -> tuple[float, str]:
    """(bytes, "stage/block/name" of the operator where the peak occurs)."""
    b = workload.batch_size
    layout = workload_layout(model, workload)
    last_step_kv = workload.num_prompt_tokens + max(workload.num_decode_steps - 1, 0)
    residual = {"prefill": b * workload.num_prompt_tokens * model.llm.hidden_size
                * settings.quant.act_bytes_per_element,
                "decode": b * model.llm.hidden_size * settings.quant.act_bytes_per_element,
                "projector": 0.0}
    if family_of(model).has_vision:
        residual["vision"] = residual["selection"] = (
            b * family_of(model).vision_residual_elements(model, layout)
            * settings.vision_quant.act_bytes_per_element)
    stages = applicable_stages(model, workload, settings.selection)
    if workload.num_decode_steps == 0:
        stages = tuple(s for s in stages if s != "decode")
    best, where = 0.0, ""
    for stage in stages:
        for op in stage_ops(stage, model, workload, settings, decode_kv_tokens=last_step_kv):
            live = op.act_read_bytes + op.act_write_bytes + residual[stage]
            if live > best:
                best, where = float(live), f"{op.stage}/{op.block}/{op.name}"
    return best, where


def footprint_bytes(model: ModelSpec, workload: Workload, settings: PipelineSettings,
                    parallelism: Parallelism = SINGLE) -> float:
    """Weights + KV cache at the final context + peak activations (module docstring) of
    the busiest GPU."""
    if not parallelism.is_single:
        footprints = gpu_footprints(model, workload, settings, parallelism)
        weights, kv = footprints[busiest_stage(footprints)]
        peak = peak_activation(shard_model(model, parallelism), workload, settings)[0]
        return sum(weights.values()) + kv + peak
    weights = sum(weight_bytes_by_part(model, settings.quant, settings.vision_quant).values())
    return (weights + kv_cache_bytes(model, workload, settings.quant)
            + peak_activation(model, workload, settings)[0])


def max_batch_size(model: ModelSpec, workload: Workload, settings: PipelineSettings,
                   memory_bytes: float, parallelism: Parallelism = SINGLE) -> int:
    """The largest batch whose footprint fits ``memory_bytes`` (0 if not even one sample
    does). The footprint never shrinks as the batch grows, so a doubling then bisection
    search is exact; it stops at ``MAX_BATCH_SEARCH``."""

    def fits(batch: int) -> bool:
        return footprint_bytes(model, replace(workload, batch_size=batch), settings,
                               parallelism) <= memory_bytes

    if not fits(1):
        return 0
    low, high = 1, 2  # fits(low) holds; find a high that does not
    while high <= MAX_BATCH_SEARCH and fits(high):
        low, high = high, high * 2
    if high > MAX_BATCH_SEARCH:
        if fits(MAX_BATCH_SEARCH):
            return MAX_BATCH_SEARCH
        high = MAX_BATCH_SEARCH
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def memory_footprint(result: Estimate) -> MemoryFootprint:
    """The footprint of an estimate's request on its device (the busiest GPU in parallel)."""
    model, workload, settings = result.model, result.workload, result.settings
    parallelism = result.parallelism
    if parallelism.is_single:
        peak, where = peak_activation(model, workload, settings)
        weights = weight_bytes_by_part(model, settings.quant, settings.vision_quant)
        kv, stage, layers = kv_cache_bytes(model, workload, settings.quant), 0, ()
    else:
        peak, where = peak_activation(shard_model(model, parallelism), workload, settings)
        footprints = gpu_footprints(model, workload, settings, parallelism)
        stage = busiest_stage(footprints)
        weights, kv = footprints[stage]
        layers = stage_layers(model.llm.num_hidden_layers, parallelism.pipeline)
    footprint = MemoryFootprint(
        weight_bytes=weights,
        kv_cache_bytes=kv,
        peak_activation_bytes=peak,
        peak_activation_operator=where,
        device_memory_bytes=result.hardware.memory_bytes,
        max_batch_size=max_batch_size(model, workload, settings, result.hardware.memory_bytes,
                                      parallelism),
        num_gpus=parallelism.num_gpus,
        pipeline_stage=stage,
        layers_per_stage=layers,
    )
    values = {**footprint.weight_bytes, "kv_cache_bytes": footprint.kv_cache_bytes,
              "peak_activation_bytes": footprint.peak_activation_bytes,
              "device_memory_bytes": footprint.device_memory_bytes}
    for name, value in values.items():  # the last line of defence, as for the estimate
        if not 0 <= value < math.inf:
            raise WorkloadError(f"memory footprint {name} came out as {value!r}, not a finite "
                                "non-negative number of bytes; check the hardware profile and "
                                "the workload")
    return footprint

"""``fpcost serve`` on more than one GPU: what one iteration sends between them.

A server split over ``tensor`` × ``pipeline`` GPUs (parallel.py's sharding, the same as
``fpcost estimate --tensor-parallel N --pipeline-parallel P``) runs each iteration as one
forward pass of one tensor-parallel rank through every pipeline stage: its operators are
built on ``shard_model`` (the LLM's heads, FFN and vocabulary split N ways, the vision tower
and projector whole, on the first stage), and ``parallel_transform`` adds the iteration's
traffic to two of its parts:

- ``tokens`` (the T tokens of the iteration, decodes plus prefill chunks): the
  vocabulary-parallel embedding's all-reduce and two all-reduces per decoder layer, each of
  T × hidden activations, and the P − 1 stage-to-stage sends of the hidden state and the
  residual stream (2 × T × hidden); ``transfers`` of one pass of T tokens, batch 1;
- ``lm_head`` (the E requests that emit a token): the gather of their logits (E × padded
  vocabulary) to one rank; ``transfers``' gather at batch E.

With one request alone in an iteration this is exactly the estimate's traffic: its
prefill pass over the prompt, or one of its decode steps (batch 1).

Pipeline parallelism: one batch in flight. The iteration's time is the sum of every
stage's operators plus the sends, and the next iteration starts when it ends, as vLLM
V1's ``EngineCore.step`` runs (schedule, execute through every stage, wait for the
output). With PP, vLLM V1 instead fills a batch queue of ``max_concurrent_batches`` (the
pipeline depth) with ``step_with_batch_queue`` (vllm/v1/engine/core.py), keeping several
micro-batches in the pipeline; fpcost does not model that overlap, so its PP throughput
is a lower bound (pipeline parallelism here buys memory: KV cache, weights per GPU).
"""

from __future__ import annotations

from ..hardware import HardwareProfile
from ..ops import Op
from ..parallel import GATHER, VISION_PLACEMENT, Parallelism, Transfer, stage_layers, transfers
from ..spec import ModelSpec

PIPELINE_MODEL = ("one batch in flight: an iteration runs through every pipeline stage (the sum "
                  "of their times plus the stage sends) before the next starts, as vLLM V1's "
                  "EngineCore.step; vLLM's batch queue of several micro-batches is not modelled")


def parallel_transform(model: ModelSpec, parallelism: Parallelism, act_bytes_per_element: float):
    """The ``OpsTransform`` adding an iteration's traffic (module docstring) to its parts;
    ``model`` unsharded (``transfers`` shards it)."""

    def transform(part: str, ops: list[Op], **counts) -> list[Op | Transfer]:
        if part == "tokens":
            sent = transfers(model, parallelism, counts["stage"], counts["num_tokens"], 1,
                             act_bytes_per_element)
            return [*ops, *(t for t in sent if t.collective != GATHER)]
        if part == "lm_head":
            sent = transfers(model, parallelism, counts["stage"], 1, counts["num_emitting"],
                             act_bytes_per_element)
            return [*ops, *(t for t in sent if t.collective == GATHER)]
        return ops

    return transform


def server_payload(model: ModelSpec, hardware: HardwareProfile, parallelism: Parallelism,
                   kv_stage: int) -> dict:
    """The JSON ``server`` object: the GPU split and, on more than one GPU, how the
    simulator runs it (``kv_stage``: the stage whose GPU fits the fewest KV blocks)."""
    p = parallelism
    out = {"tensor_parallel": p.tensor, "pipeline_parallel": p.pipeline, "num_gpus": p.num_gpus,
           "layers_per_stage": list(stage_layers(model.llm.num_hidden_layers, p.pipeline))}
    if not p.is_single:
        out.update({
            "vision": VISION_PLACEMENT,
            "pipeline": PIPELINE_MODEL,
            "kv_cache": "per GPU; every GPU holds the blocks of the stage fitting the fewest "
                        f"(stage {kv_stage + 1}), as vLLM's smallest num_blocks among ranks",
            "interconnect": {"kind": hardware.interconnect_kind,
                             "bandwidth_bytes_per_s": hardware.interconnect_bandwidth_bytes_per_s,
                             "latency_s": hardware.interconnect_latency_s}})
    return out

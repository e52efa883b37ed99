"""The server's settings and its KV-cache capacity in blocks.

Capacity, as vLLM sizes it (``gpu_memory_utilization``, default 0.9): device memory ×
utilisation − weights − an activation reserve, divided into blocks of 16 tokens. The
reserve is fpcost's peak live activations (memory.py) of the largest forward pass the
server schedules: one request whose prompt is ``max_num_batched_tokens`` tokens (the
model's unpruned visual tokens, capped at that, plus text), its vision tower included —
the pass vLLM's start-up profiling runs to size its own reserve. CUDA context, allocator
fragmentation and CUDA graphs are not counted (as in memory.py).

On ``tensor`` × ``pipeline`` GPUs every figure is per GPU: each pipeline stage's GPU has
its own weights (``stage_weight_bytes``: its layers' shards; the first stage also the
embedding shard, vision tower and projector; the last the LM head shard), the activation
reserve of one tensor-parallel rank's largest pass (counted on every stage, as memory.py
does), and a KV block of 16 tokens × its own layers' K and V for its share of the KV heads.
Each stage's GPU fits its own number of blocks; the server has the smallest of them, as
vLLM V1 sets every rank's ``num_blocks`` to the smallest among all ranks
(``get_kv_cache_configs`` in vllm/v1/core/kv_cache_utils.py). ``KVCapacity`` reports that
limiting stage's weights and per-token bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import WorkloadError
from ..families import family_of
from ..hardware import HardwareProfile
from ..memory import kv_cache_bytes, peak_activation, stage_weight_bytes, weight_bytes_by_part
from ..parallel import SINGLE, Parallelism, shard_model, stage_layers
from ..pipeline import PipelineSettings, visual_layout
from ..spec import ModelSpec
from ..workload import MAX_TOKENS, Workload

BLOCK_SIZE_TOKENS = 16  # vLLM's default KV-cache block (--block-size 16)
DEFAULT_MAX_NUM_SEQS = 256  # vLLM's default --max-num-seqs
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192  # vLLM V1's default token budget for online serving
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default


@dataclass(frozen=True)
class ServerSettings:
    """How the simulated server schedules (names after vLLM's engine arguments)."""

    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    chunked_prefill: bool = False
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    block_size_tokens: int = BLOCK_SIZE_TOKENS

    def __post_init__(self) -> None:
        for flag, value in (("--max-num-seqs", self.max_num_seqs),
                            ("--max-num-batched-tokens", self.max_num_batched_tokens),
                            ("block size", self.block_size_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
                raise WorkloadError(f"{flag} {value!r} must be an integer in 1..{MAX_TOKENS:,}")
        utilization = self.gpu_memory_utilization
        if isinstance(utilization, bool) or not isinstance(utilization, (int, float)) or not (
                0 < utilization <= 1):
            raise WorkloadError(f"--gpu-memory-utilization {utilization!r} must be in (0, 1]")


@dataclass(frozen=True)
class KVCapacity:
    """Bytes and blocks of the KV cache (module docstring)."""

    device_memory_bytes: float
    usable_memory_bytes: float
    weight_bytes: float
    activation_reserve_bytes: float
    kv_bytes_per_token: float
    block_size_tokens: int
    num_blocks: int
    pipeline_stage: int = 0  # the stage whose GPU fits the fewest blocks (0-based)

    @property
    def kv_cache_bytes(self) -> float:
        return self.num_blocks * self.block_size_tokens * self.kv_bytes_per_token

    def as_dict(self) -> dict:
        return {"device_memory_bytes": self.device_memory_bytes,
                "usable_memory_bytes": self.usable_memory_bytes,
                "weight_bytes": self.weight_bytes,
                "activation_reserve_bytes": self.activation_reserve_bytes,
                "kv_bytes_per_token": self.kv_bytes_per_token,
                "kv_cache_bytes": self.kv_cache_bytes,
                "block_size_tokens": self.block_size_tokens,
                "num_blocks": self.num_blocks}


def kv_capacity(model: ModelSpec, hardware: HardwareProfile, settings: PipelineSettings,
                server: ServerSettings, parallelism: Parallelism = SINGLE) -> KVCapacity:
    """The KV cache left on ``hardware`` for ``model`` (a ``WorkloadError`` when none is),
    per GPU of ``parallelism`` (module docstring)."""
    usable = hardware.memory_bytes * server.gpu_memory_utilization
    visual = visual_layout(model).num_visual_tokens if family_of(model).has_vision else 0
    visual = min(visual, server.max_num_batched_tokens)
    largest = Workload(visual, server.max_num_batched_tokens - visual, 1, 1)
    one_token = Workload(1, 0, 1, 1)  # one cached token
    if parallelism.is_single:
        weights = [sum(weight_bytes_by_part(model, settings.quant, settings.vision_quant).values())]
        reserve, _ = peak_activation(model, largest, settings)
        per_token = [kv_cache_bytes(model, one_token, settings.quant)]
    else:
        rank = shard_model(model, parallelism)
        weights = [sum(w.values()) for w in stage_weight_bytes(
            model, parallelism, settings.quant, settings.vision_quant)]
        reserve, _ = peak_activation(rank, largest, settings)
        per_token = [kv_cache_bytes(rank, one_token, settings.quant, layers)
                     for layers in stage_layers(model.llm.num_hidden_layers, parallelism.pipeline)]
    blocks = [math.floor((usable - w - reserve) / (t * server.block_size_tokens))
              if usable - w - reserve > 0 else 0 for w, t in zip(weights, per_token, strict=True)]
    stage = blocks.index(min(blocks))
    num_blocks = blocks[stage]
    if num_blocks < 1:
        where = "" if parallelism.is_single else (
            f" (the GPU of pipeline stage {stage + 1} of {parallelism.pipeline}, tensor parallel "
            f"{parallelism.tensor})")
        raise WorkloadError(
            f"{model.name} leaves no KV cache on {hardware.name}{where}: {usable:.4g} B usable "
            f"(--gpu-memory-utilization {server.gpu_memory_utilization}) − {weights[stage]:.4g} B "
            f"weights − {reserve:.4g} B activation reserve (a {server.max_num_batched_tokens}-token "
            "pass) holds no 16-token block; use a larger device, more GPUs (--tensor-parallel / "
            "--pipeline-parallel), fewer bits (--bits/--quant) or a smaller "
            "--max-num-batched-tokens")
    return KVCapacity(hardware.memory_bytes, usable, weights[stage], reserve, per_token[stage],
                      server.block_size_tokens, num_blocks, stage)

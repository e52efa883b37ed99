"""The server's settings and its KV-cache capacity in blocks.

Capacity, as vLLM sizes it (``gpu_memory_utilization``, default 0.9): device memory ×
utilisation − weights − an activation reserve, divided into blocks of 16 tokens. The
reserve is fpcost's peak live activations (memory.py) of the largest forward pass the
server schedules: one request whose prompt is ``max_num_batched_tokens`` tokens (the
model's unpruned visual tokens, capped at that, plus text), its vision tower included —
the pass vLLM's start-up profiling runs to size its own reserve. CUDA context, allocator
fragmentation and CUDA graphs are not counted (as in memory.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import WorkloadError
from ..families import family_of
from ..hardware import HardwareProfile
from ..memory import kv_cache_bytes, peak_activation, weight_bytes_by_part
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
                server: ServerSettings) -> KVCapacity:
    """The KV cache left on ``hardware`` for ``model`` (a ``WorkloadError`` when none is)."""
    usable = hardware.memory_bytes * server.gpu_memory_utilization
    weights = sum(weight_bytes_by_part(model, settings.quant, settings.vision_quant).values())
    visual = visual_layout(model).num_visual_tokens if family_of(model).has_vision else 0
    visual = min(visual, server.max_num_batched_tokens)
    largest = Workload(visual, server.max_num_batched_tokens - visual, 1, 1)
    reserve, _ = peak_activation(model, largest, settings)
    per_token = kv_cache_bytes(model, Workload(1, 0, 1, 1), settings.quant)  # one cached token
    free = usable - weights - reserve
    num_blocks = math.floor(free / (per_token * server.block_size_tokens)) if free > 0 else 0
    if num_blocks < 1:
        raise WorkloadError(
            f"{model.name} leaves no KV cache on {hardware.name}: {usable:.4g} B usable "
            f"(--gpu-memory-utilization {server.gpu_memory_utilization}) − {weights:.4g} B weights − "
            f"{reserve:.4g} B activation reserve (a {server.max_num_batched_tokens}-token pass) "
            "holds no 16-token block; use a larger device, fewer bits (--bits/--quant) or a smaller "
            "--max-num-batched-tokens")
    return KVCapacity(hardware.memory_bytes, usable, weights, reserve, per_token,
                      server.block_size_tokens, num_blocks)

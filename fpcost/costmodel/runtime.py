"""Runtime execution profiles: how a runtime executes the cost model's operators.

The cost model counts one record per operator (``decoder_ops``): an RMSNorm reads its
input once and writes it once, SwiGLU is one operator, attention one fused kernel. A
runtime launches other kernels, each with its own passes over memory and its own fixed
launch / dispatch time. An execution profile maps each cost-model operator of a Llama
prefill to the kernels a runtime launches for it (``Kernel``: an ``Op`` record with the
bytes and FLOPs of that kernel, plus how many launches it takes):

``transformers-sdpa``
    transformers' Llama in eager PyTorch with SDPA attention (what ``fpcost validate`` times).
    Per layer (fp32; a 16-bit model adds the two casts of each norm):

    - RMSNorm (``LlamaRMSNorm.forward``): [cast to fp32], ``pow(2)``, ``mean`` (a sum and a
      division: 2 launches), ``+ eps`` and ``rsqrt`` (2 launches over one value per token),
      ``x * rsqrt``, [cast back], ``weight * x``: 7 launches, 4 passes over the activations;
    - rotary (``apply_rotary_pos_emb``) for q and for k: ``-x2`` (half), ``cat``,
      ``x * cos``, ``rotate_half(x) * sin``, the sum: 5 launches each;
    - KV cache (``DynamicLayer.update``): ``torch.cat`` of K and of V into the cache: 2;
    - SDPA (the fused operator ``fused_attention``), then ``transpose(1, 2).contiguous()``;
    - ``act_fn(gate) * up``: SiLU and the product, 2 kernels;
    - each residual add reads both inputs: 1 kernel each;
    - per pass: the embedding gather, the rotary tables (``LlamaRotaryEmbedding``: ~8
      small launches), the final RMSNorm over every position, the LM head on the last one.

``fused``
    a vLLM-like runtime: the residual add fused into the next RMSNorm (one kernel reading
    residual and input, writing both), SiLU·up as one kernel, rotary in place on q and k in
    one kernel, the cache written by one kernel, FlashAttention writing its output in the
    layout ``o_proj`` reads, rotary tables precomputed.

Times: a kernel takes ``count × (t_busy / efficiency + launches × kernel_launch_s)``.
On a GPU ``t_busy`` is the roofline, max(compute, memory). On a calibrated CPU two things
differ (``kernel_time_s``): activations are read from cache (each kernel reads what the
previous one just wrote: measured here, a residual add of 512 × 768 fp32 moves ~100 GB/s
against a 15 GB/s DRAM copy), and the weight read of a GEMM does not overlap the
arithmetic: a CPU GEMM packs its weight panels before computing on them (measured here:
``F.linear`` with cold 1024 × 2816 fp32 weights, one thread, from 16 to 256 tokens takes
≈ 0.9 ms + the FLOPs at the GEMM peak; 0.9 ms is 11.5 MB at ~13 GB/s, well below the
39 GB/s of a copy counted read + write). ``fpcost calibrate`` fits that rate, the profile's
``weight_bandwidth_bytes_per_s``, together with the matmul efficiency; no efficiency scales
it. And transformers' SDPA on a CPU runs PyTorch's CPU flash-attention kernel
(``cpu_flash_work``): query blocks of 32, 64 or 256 rows and key blocks of 512 skip less of
the causal triangle than square tiles (at 512 tokens nothing: every score is computed).
Pure arithmetic; SI units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .accounting import FPCOST
from .errors import WorkloadError
from .flash import FlashWork, flash_attention_row_block, flash_work
from .hardware import OPERATOR_CLASSES, HardwareProfile
from .llm import DecoderPass, decoder_ops
from .ops import ATTENTION, NORM, VECTOR, Op
from .quant import QuantPlan
from .spec import LLMSpec

RUNTIMES = {
    "transformers-sdpa": "transformers' eager Llama with SDPA attention (what `fpcost validate` times)",
    "fused": "vLLM-like fused kernels: add+RMSNorm, SiLU·mul, in-place rotary, FlashAttention",
}
DEFAULT_RUNTIME = "transformers-sdpa"
FP32_BYTES = 4.0  # LlamaRMSNorm computes in fp32 whatever the model's dtype
SILU_FLOPS_PER_ELEMENT = 5  # negate, exp, add 1, divide, multiply by x
ROTARY_FLOPS_PER_ELEMENT = 3.5  # negate (half), two products, one sum
FUSED_NORM_FLOPS_PER_ELEMENT = 5  # add residual, square, sum, scale, weight
ROTARY_TABLE_LAUNCHES = 8  # inv_freq × positions, cat, cos, sin, 2 × scaling, 2 × cast
ROTARY_TABLE_PASSES = 6  # passes over the (tokens, head_dim) fp32 tables
# PyTorch's CPU flash attention (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp): query
# blocks of 32 rows, 64 from 192 query tokens, 256 from 768; key blocks of 512.
CPU_FLASH_Q_SPLITS = ((768, 256), (192, 64), (0, 32))
CPU_FLASH_KV_SPLIT = 512
SDPA_OP = "fused_attention"  # the cost-model operator a runtime's SDPA call runs


@dataclass(frozen=True)
class Kernel:
    """One kernel (``op.count`` instances: one per layer) that the runtime launches
    ``num_launches`` times per instance; ``source`` is the cost-model operator it runs for."""

    op: Op
    num_launches: int
    source: str


def check_runtime(name: str) -> str:
    if name not in RUNTIMES:
        raise WorkloadError(f"runtime {name!r} is unknown; valid: {', '.join(RUNTIMES)}")
    return name


def prefill_kernels(llm: LLMSpec, quant: QuantPlan, num_tokens: int, runtime: str,
                    onchip_buffer_bytes: float, device_type: str = "gpu") -> list[Kernel]:
    """The kernels ``runtime`` launches for one batch-1 prefill of ``num_tokens`` tokens
    (every decoder layer, the LM head on the last position, and the per-pass extras). On a
    ``device_type`` "cpu" device transformers' SDPA runs PyTorch's CPU flash-attention
    kernel, whose tiles (``cpu_flash_work``) set its causal work."""
    check_runtime(runtime)
    step = DecoderPass("prefill", num_tokens, num_tokens, 1)
    ops = decoder_ops(llm, quant, step, FPCOST, True, onchip_buffer_bytes)
    build = _SdpaKernels(llm, quant, num_tokens) if runtime == "transformers-sdpa" else \
        _FusedKernels(llm, quant, num_tokens)
    build.cpu_tiles = device_type == "cpu" and runtime == "transformers-sdpa"
    build.onchip_buffer_bytes = onchip_buffer_bytes
    kernels = []
    for op in ops:
        kernels += build.expand(op)
    kernels += build.per_pass()
    return kernels


def cpu_flash_work(num_query_tokens: int, num_kv_tokens: int):
    """Score elements and K/V rows of one head in PyTorch's causal CPU flash attention: query
    block m (``q`` rows) walks key blocks of 512 while they start below its last key
    (min(m + q, s_kv)), each block whole but cut at s_kv."""
    s_q, s_kv = num_query_tokens, num_kv_tokens
    q_split = next(size for start, size in CPU_FLASH_Q_SPLITS if s_q >= start)
    scores = rows = 0
    for m in range(0, s_q, q_split):
        block = min(q_split, s_q - m)
        keys = min(m + block, s_kv)
        columns = min(math.ceil(keys / CPU_FLASH_KV_SPLIT) * CPU_FLASH_KV_SPLIT, s_kv)
        scores += block * columns
        rows += columns
    return FlashWork(scores, rows)


class _Shapes:
    cpu_tiles = False
    onchip_buffer_bytes = 0.0

    def __init__(self, llm: LLMSpec, quant: QuantPlan, num_tokens: int) -> None:
        self.llm, self.quant, self.t = llm, quant, num_tokens
        self.a = quant.act_bytes_per_element
        self.kv = quant.kv_bytes_per_element
        self.n = num_tokens * llm.hidden_size  # elements of a hidden-state tensor
        self.f = num_tokens * llm.intermediate_size
        self.q = num_tokens * llm.q_size
        self.k = num_tokens * llm.kv_size
        self.table = num_tokens * llm.resolved_head_dim  # rotary cos (or sin) elements

    def kernel(self, source: Op | str, name: str, op_class: str, launches: int = 1,
               count: int | None = None, flops: float = 0.0, read: float = 0.0,
               write: float = 0.0, weight: float = 0.0, kv_write: float = 0.0) -> Kernel:
        src = source if isinstance(source, str) else source.name
        layers = self.llm.num_hidden_layers if count is None else count
        op = Op("prefill", "runtime", f"{src}.{name}", op_class, self.quant.vector_precision,
                self.quant.vector_precision, layers, vector_flops=flops, weight_bytes=weight,
                act_read_bytes=read, act_write_bytes=write, kv_write_bytes=kv_write)
        return Kernel(op, launches, src)

    def expand(self, op: Op) -> list[Kernel]:
        if op.op_class == "matmul":  # one GEMM per linear layer and for the LM head
            return [Kernel(op, 1, op.name)]
        return getattr(self, op.name)(op)


class _SdpaKernels(_Shapes):
    """transformers' eager Llama (SDPA); see the module docstring."""

    def rms_norm(self, source: Op | str, count: int | None = None) -> list[Kernel]:
        n, a, f32, rows = self.n, self.a, FP32_BYTES, self.t
        ks = []
        upcast = a != f32
        if upcast:
            ks.append(self.kernel(source, "to_fp32", NORM, count=count, read=n * a, write=n * f32))
        ks += [
            self.kernel(source, "pow", NORM, count=count, flops=n, read=n * f32, write=n * f32),
            self.kernel(source, "mean", NORM, 2, count, flops=n + rows, read=n * f32 + rows * f32,
                        write=2 * rows * f32),
            self.kernel(source, "rsqrt", NORM, 2, count, flops=2 * rows, read=2 * rows * f32,
                        write=2 * rows * f32),
            self.kernel(source, "scale", NORM, count=count, flops=n, read=(n + rows) * f32,
                        write=n * f32),
        ]
        if upcast:
            ks.append(self.kernel(source, "to_input_dtype", NORM, count=count, read=n * f32,
                                  write=n * a))
        ks.append(self.kernel(source, "weight", NORM, count=count, flops=n, read=n * a,
                              write=n * a, weight=self.llm.hidden_size * a))
        return ks

    def attn_norm(self, op):
        return self.rms_norm(op)

    mlp_norm = attn_norm

    def fused_attention(self, op: Op) -> list[Kernel]:
        a, kv = self.a, self.kv
        ks = []
        for which, e in (("q", self.q), ("k", self.k)):
            table = self.table * a
            ks += [
                self.kernel(op, f"rotary_{which}.neg", ATTENTION, flops=e / 2, read=e / 2 * a,
                            write=e / 2 * a),
                self.kernel(op, f"rotary_{which}.cat", ATTENTION, read=e * a, write=e * a),
                self.kernel(op, f"rotary_{which}.mul_cos", ATTENTION, flops=e, read=e * a + table,
                            write=e * a),
                self.kernel(op, f"rotary_{which}.mul_sin", ATTENTION, flops=e, read=e * a + table,
                            write=e * a),
                self.kernel(op, f"rotary_{which}.add", ATTENTION, flops=e, read=2 * e * a,
                            write=e * a),
            ]
        # DynamicLayer.update: torch.cat([empty cache, new]) for K and for V
        ks.append(self.kernel(op, "cache_cat", ATTENTION, 2, read=2 * self.k * a,
                              kv_write=2 * self.k * kv))
        # SDPA itself: the cost model's fused operator, on a CPU with PyTorch's tiles
        ks.append(Kernel(self.cpu_sdpa(op) if self.cpu_tiles else op, 1, op.name))
        ks.append(self.kernel(op, "output_contiguous", ATTENTION, read=self.q * a,
                              write=self.q * a))
        return ks

    def cpu_sdpa(self, op: Op) -> Op:
        """``op`` (FlashAttention with square tiles) recounted with the tiles of PyTorch's
        CPU kernel: FLOPs scale with the score elements, K/V traffic with the rows read."""
        d, s = self.llm.resolved_head_dim, self.t
        rows = flash_attention_row_block(self.onchip_buffer_bytes, self.kv, d)
        model = flash_work(s, s, rows, causal=True)
        cpu = cpu_flash_work(s, s)
        ratio = cpu.score_elements / model.score_elements
        return replace(op, tensor_flops=op.tensor_flops * ratio,
                       vector_flops=op.vector_flops * ratio,
                       kv_read_bytes=op.kv_read_bytes * cpu.kv_rows_read / model.kv_rows_read)

    def mlp_act(self, op: Op) -> list[Kernel]:
        f, a = self.f, self.a
        return [
            self.kernel(op, "silu", VECTOR, flops=SILU_FLOPS_PER_ELEMENT * f, read=f * a, write=f * a),
            self.kernel(op, "mul_up", VECTOR, flops=f, read=2 * f * a, write=f * a),
        ]

    def attn_add(self, op: Op) -> list[Kernel]:
        return [Kernel(op, 1, op.name)]  # reads both inputs, as the cost model counts

    mlp_add = attn_add

    def per_pass(self) -> list[Kernel]:
        n, a, table = self.n, self.a, self.table * FP32_BYTES
        return [
            self.kernel("embed_tokens", "gather", VECTOR, count=1, read=n * a, write=n * a),
            self.kernel("rotary_tables", "build", VECTOR, ROTARY_TABLE_LAUNCHES, count=1,
                        flops=ROTARY_TABLE_PASSES * self.table,
                        read=ROTARY_TABLE_PASSES * table, write=ROTARY_TABLE_PASSES * table),
            *self.rms_norm("final_norm", count=1),
        ]


class _FusedKernels(_Shapes):
    """A vLLM-like runtime; see the module docstring."""

    def _add_norm(self, source, count=None) -> Kernel:
        n, a = self.n, self.a
        return self.kernel(source, "fused_add_rms_norm", NORM, count=count,
                           flops=FUSED_NORM_FLOPS_PER_ELEMENT * n, read=2 * n * a,
                           write=2 * n * a, weight=self.llm.hidden_size * a)

    def attn_norm(self, op):
        return [self._add_norm(op)]

    mlp_norm = attn_norm

    def fused_attention(self, op: Op) -> list[Kernel]:
        a, kv, e = self.a, self.kv, self.q + self.k
        return [
            self.kernel(op, "rotary_inplace", ATTENTION, flops=ROTARY_FLOPS_PER_ELEMENT * e,
                        read=e * a + 2 * self.table * a, write=e * a),
            self.kernel(op, "reshape_and_cache", ATTENTION, read=2 * self.k * a,
                        kv_write=2 * self.k * kv),
            Kernel(op, 1, op.name),
        ]

    def mlp_act(self, op: Op) -> list[Kernel]:
        f, a = self.f, self.a
        return [self.kernel(op, "silu_and_mul", VECTOR,
                            flops=(SILU_FLOPS_PER_ELEMENT + 1) * f, read=2 * f * a, write=f * a)]

    def attn_add(self, op: Op) -> list[Kernel]:
        return []  # folded into the next fused add + RMSNorm

    mlp_add = attn_add

    def per_pass(self) -> list[Kernel]:
        n, a = self.n, self.a
        return [
            self.kernel("embed_tokens", "gather", VECTOR, count=1, read=n * a, write=n * a),
            self._add_norm("final_norm", count=1),
        ]


def kernel_split_s(kernel: Kernel, hardware: HardwareProfile) -> tuple[float, float]:
    """(seconds at efficiency 1 that the class efficiency scales, weight bytes streamed
    apart) of all ``count`` instances of ``kernel``, launches excluded.

    GPU (no ``cache_bandwidth_bytes_per_s``): max(compute, every byte at the memory
    bandwidth), no bytes apart. CPU (calibrated, with a cache bandwidth): max(compute,
    activation and cache bytes at the cache bandwidth up to ``cache_bytes``, the rest at the
    memory bandwidth — each kernel reads what the previous one just wrote); the weight bytes
    are apart: a CPU GEMM reads and packs its weight panels before it computes on them (no
    overlap; see the module docstring), at ``weight_bandwidth_bytes_per_s``.
    """
    op = kernel.op
    compute_s = (op.tensor_flops / hardware.peak_flops_per_s("tensor", op.precision)
                 + op.vector_flops / hardware.peak_flops_per_s("vector", op.vector_precision))
    cache = hardware.cache_bandwidth_bytes_per_s
    if cache is None:
        return op.count * max(compute_s, op.memory_access_bytes
                              / hardware.hbm_bandwidth_bytes_per_s), 0.0
    activation_bytes = op.memory_access_bytes - op.weight_bytes
    cached = min(activation_bytes, hardware.cache_bytes or activation_bytes)
    activation_s = cached / cache + (activation_bytes - cached) / hardware.hbm_bandwidth_bytes_per_s
    return op.count * max(compute_s, activation_s), op.count * op.weight_bytes


def weight_stream_s(weight_bytes: float, hardware: HardwareProfile) -> float:
    """Seconds of streaming ``weight_bytes`` apart from the computation: at the calibrated
    weight bandwidth (no efficiency applied); 0 without one (they are then part of the
    efficiency-scaled time, at the memory bandwidth)."""
    rate = hardware.weight_bandwidth_bytes_per_s
    return weight_bytes / rate if rate else 0.0


def kernel_time_s(kernel: Kernel, hardware: HardwareProfile, with_launch: bool = True) -> float:
    """Seconds of all ``count`` instances of ``kernel`` on ``hardware``: the scaled part
    (``kernel_split_s``) over the class efficiency, the weight stream, the fixed time of an
    SDPA call (``sdpa_call_s``, SDPA kernels only) and, with ``with_launch``,
    ``num_launches`` launches per instance."""
    scaled_s, fixed_s = _scaled_and_fixed_s(kernel, hardware, with_launch)
    return scaled_s / hardware.efficiency_for(kernel.op.op_class) + fixed_s


def _scaled_and_fixed_s(kernel: Kernel, hardware: HardwareProfile,
                        with_launch: bool = True) -> tuple[float, float]:
    """(seconds at efficiency 1 the efficiency scales, seconds it does not: the weight
    stream at a calibrated weight bandwidth, an SDPA call's fixed time and the launches)."""
    scaled_s, weight_bytes = kernel_split_s(kernel, hardware)
    if hardware.weight_bandwidth_bytes_per_s is None:
        scaled_s += weight_bytes / hardware.hbm_bandwidth_bytes_per_s
    launch_s = (hardware.kernel_launch_s or 0.0) if with_launch else 0.0
    call_s = (hardware.sdpa_call_s or 0.0) if kernel.op.name == SDPA_OP else 0.0
    return scaled_s, (weight_stream_s(weight_bytes, hardware)
                      + kernel.op.count * (kernel.num_launches * launch_s + call_s))


def class_times_s(kernels: list[Kernel], hardware: HardwareProfile,
                  with_launch: bool = True) -> dict[str, float]:
    """Seconds per operator class, summed over ``kernels``."""
    sums = dict.fromkeys(OPERATOR_CLASSES, 0.0)
    for kernel in kernels:
        sums[kernel.op.op_class] += kernel_time_s(kernel, hardware, with_launch)
    return sums


def split_class_times_s(kernels: list[Kernel], hardware: HardwareProfile
                        ) -> tuple[dict[str, float], dict[str, float]]:
    """Per operator class: (seconds at efficiency 1 that the efficiency scales, seconds it
    does not — launches and the calibrated weight stream)."""
    scaled = dict.fromkeys(OPERATOR_CLASSES, 0.0)
    fixed = dict.fromkeys(OPERATOR_CLASSES, 0.0)
    for kernel in kernels:
        s, f = _scaled_and_fixed_s(kernel, hardware)
        scaled[kernel.op.op_class] += s
        fixed[kernel.op.op_class] += f
    return scaled, fixed


def launch_times_s(kernels: list[Kernel], launch_s: float) -> dict[str, float]:
    """Seconds of launch / dispatch per operator class at ``launch_s`` per launch."""
    sums = dict.fromkeys(OPERATOR_CLASSES, 0.0)
    for kernel in kernels:
        sums[kernel.op.op_class] += kernel.op.count * kernel.num_launches * launch_s
    return sums


def num_launches(kernels: list[Kernel]) -> int:
    """Kernel launches of one pass."""
    return sum(k.op.count * k.num_launches for k in kernels)


def without_launch(profile: HardwareProfile) -> HardwareProfile:
    return replace(profile, kernel_launch_s=None)


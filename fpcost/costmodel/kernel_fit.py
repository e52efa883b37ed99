"""Operator-class efficiencies fitted on the module implementations the model runs.

``kernel_suite`` lists one module of a decoder layer at a time — projections, attention,
RMSNorm, SwiGLU, residual add — as transformers' Llama runs them, at several widths and
token counts; ``case_time_s`` predicts each from the kernels the runtime launches for it
(runtime.py: every pass over memory, every launch) on the measured ceilings. Per operator
class the efficiency is the factor that brings the predicted busy times (measured time less
the launches) closest to the measured ones in relative terms (``fit_efficiency``); on a CPU
the GEMMs' weight stream is fitted beside it (``fit_efficiency_and_rate``). The ceilings
themselves and the profile they make are in calibration.py. SI units; no torch, no files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .accounting import FPCOST
from .errors import HardwareError
from .hardware import OPERATOR_CLASSES, HardwareProfile
from .llm import DecoderPass, decoder_ops
from .ops import Op
from .quant import QuantPlan
from .roofline import time_op
from .runtime import (
    DEFAULT_RUNTIME,
    Kernel,
    kernel_split_s,
    kernel_time_s,
    num_launches,
    prefill_kernels,
)
from .spec import LLMSpec


@dataclass(frozen=True)
class KernelCase:
    """One module of one decoder layer of ``llm`` (``num_hidden_layers`` = 1), run alone
    over ``num_tokens`` tokens, exactly as transformers' Llama runs it.

    ``op_name`` names the cost-model operator whose runtime kernels the module launches
    (``runtime.prefill_kernels``): q_proj, gate_proj, down_proj (``nn.Linear``),
    fused_attention (rotary, cache update, SDPA, output copy), attn_norm (``LlamaRMSNorm``),
    mlp_act (``act_fn(gate) * up``), attn_add (the residual add).
    """

    op_name: str
    llm: LLMSpec
    num_tokens: int

    @property
    def label(self) -> str:
        return f"{self.op_name} h{self.llm.hidden_size} s{self.num_tokens}"

    def op(self, quant: QuantPlan, onchip_buffer_bytes: float) -> Op:
        """The cost model's record of this operator (one instance)."""
        step = DecoderPass("prefill", self.num_tokens, self.num_tokens, 1)
        ops = decoder_ops(self.llm, quant, step, FPCOST, True, onchip_buffer_bytes)
        (op,) = [o for o in ops if o.name == self.op_name]
        return op

    def kernels(self, quant: QuantPlan, onchip_buffer_bytes: float,
                runtime: str = DEFAULT_RUNTIME, device_type: str = "gpu") -> list[Kernel]:
        """The kernels ``runtime`` launches for this module on a ``device_type`` device."""
        every = prefill_kernels(self.llm, quant, self.num_tokens, runtime, onchip_buffer_bytes,
                                device_type)
        return [k for k in every if k.source == self.op_name]

    @property
    def op_class(self) -> str:
        return KERNEL_OP_CLASSES[self.op_name]


KERNEL_OP_CLASSES = {
    "q_proj": "matmul", "gate_proj": "matmul", "down_proj": "matmul",
    "fused_attention": "attention", "attn_norm": "norm", "mlp_act": "vector", "attn_add": "vector",
}
# Widths of the suite: Llama-shaped layers (head_dim 64 or 128, FFN ≈ 2.7 × hidden), chosen
# to span the models a device runs, not tuned to any one of them. Token counts span small
# (launch-dominated) to large (throughput-bound) passes.
SUITE_WIDTHS = {
    "cpu": ((768, 12, 2048), (2048, 16, 5632)),
    "gpu": ((2048, 16, 5632), (4096, 32, 11008), (5120, 40, 13824)),
}
SUITE_TOKENS = {"cpu": (32, 128, 512, 1536), "gpu": (64, 256, 1024, 4096)}


def kernel_suite(device_type: str) -> tuple[KernelCase, ...]:
    """The modules calibration times on a ``device_type`` device."""
    if device_type not in SUITE_WIDTHS:
        raise HardwareError(f"no kernel suite for device_type {device_type!r}; valid: cpu, gpu")
    cases = []
    for hidden, heads, ffn in SUITE_WIDTHS[device_type]:
        llm = LLMSpec(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=heads,
                      num_key_value_heads=heads, intermediate_size=ffn, vocab_size=32000,
                      name=f"suite-h{hidden}")
        for tokens in SUITE_TOKENS[device_type]:
            cases += [KernelCase(name, llm, tokens) for name in KERNEL_OP_CLASSES]
    return tuple(cases)


def roofline_time_s(op: Op, hardware: HardwareProfile) -> float:
    """Roofline time of one instance of ``op`` on ``hardware`` (with its efficiencies)."""
    timing = time_op(op, hardware)
    return max(timing.compute_time_s, timing.memory_time_s)


def case_time_s(case: KernelCase, hardware: HardwareProfile, quant: QuantPlan,
                with_launch: bool = True, runtime: str = DEFAULT_RUNTIME) -> float:
    """Predicted seconds of ``case``'s module: its runtime kernels on ``hardware``."""
    return sum(kernel_time_s(k, hardware, with_launch)
               for k in case.kernels(quant, hardware.onchip_buffer_bytes, runtime,
                                     hardware.device_type))


def case_launches(case: KernelCase, quant: QuantPlan, onchip_buffer_bytes: float,
                  runtime: str = DEFAULT_RUNTIME, device_type: str = "gpu") -> int:
    return num_launches(case.kernels(quant, onchip_buffer_bytes, runtime, device_type))


def fit_efficiency(predicted_s: Sequence[float], measured_s: Sequence[float]) -> float:
    """The efficiency e minimising Σ ((p/e − m) / m)²: predictions p made at efficiency 1,
    measurements m, each error relative to its measurement.

    With x = 1/e the problem is linear: x = Σ(p/m) / Σ(p/m)².
    """
    if len(predicted_s) != len(measured_s) or not predicted_s:
        raise HardwareError("fit_efficiency needs as many measurements as predictions, at least one")
    ratios = [p / m if m > 0 else math.inf for p, m in zip(predicted_s, measured_s, strict=True)]
    if any(not math.isfinite(r) or r < 0 for r in ratios) or not any(ratios):
        raise HardwareError(f"cannot fit an efficiency to predicted/measured ratios {ratios}")
    inverse = sum(ratios) / sum(r * r for r in ratios)
    return 1.0 / inverse


def fit_kernel_efficiencies(
    cases: Sequence[KernelCase], measured_s: Sequence[float], hardware: HardwareProfile,
    quant: QuantPlan, launch_s: float = 0.0,
) -> dict[str, float]:
    """Per operator class, the efficiency fitted over that class's modules
    (``fit_kernel_profile`` without the weight bandwidth)."""
    return fit_kernel_profile(cases, measured_s, hardware, quant, launch_s)[0]


def fit_kernel_profile(
    cases: Sequence[KernelCase], measured_s: Sequence[float], hardware: HardwareProfile,
    quant: QuantPlan, launch_s: float = 0.0,
) -> tuple[dict[str, float], float | None, float | None]:
    """(per operator class, the efficiency fitted over that class's modules; on a CPU the
    weight bandwidth of its GEMMs and the fixed time of an SDPA call, else None).

    Each module is predicted by its runtime kernels on ``hardware`` with its efficiencies
    removed, against the measured time minus ``launch_s`` per launch. On a CPU
    (``cache_bandwidth_bytes_per_s`` set) a GEMM's time is x·P + y·W (P: its roofline time
    without the weights, W: the weight bytes it reads and packs apart, ``kernel_split_s``):
    the matmul efficiency 1/x and the weight bandwidth 1/y are fitted together
    (``fit_efficiency_and_rate``, over the GEMMs one by one); if the measurements cannot
    separate the two (one token count, or a non-positive value) the matmul class falls back
    to one efficiency with the weights at the memory bandwidth, and the rate is None. The
    other classes then subtract their (small) weight stream at that bandwidth and fit
    their efficiency alone, except attention on a CPU: each attention module is one SDPA
    call, whose time is x·P + c (c: the call's fixed time beyond its launches, the
    Python of ``sdpa_attention_forward`` and the CPU kernel's setup, which dominate at 32
    tokens), fitted the same way over the modules one by one (same fallback).

    Modules are summed per layer shape (width and token count) before fitting, so a class
    is judged by what it costs a decoder layer: the cheap residual add does not outvote
    the SwiGLU activation that dominates the class's time. A module measured faster than
    its launches alone raises ``HardwareError`` (the measurement cannot be right).
    """
    bare = replace(hardware, efficiency={}, kernel_launch_s=None, weight_bandwidth_bytes_per_s=None,
                   sdpa_call_s=None)
    cpu = hardware.cache_bandwidth_bytes_per_s is not None
    groups: dict[tuple[str, LLMSpec, int], list[float]] = {}
    single: list[tuple[float, float, float]] = []  # (scaled, weight bytes, busy) per module
    for case, measured in zip(cases, measured_s, strict=True):
        kernels = case.kernels(quant, bare.onchip_buffer_bytes, DEFAULT_RUNTIME, bare.device_type)
        parts = [kernel_split_s(k, bare) for k in kernels]
        scaled = sum(p for p, _ in parts)
        weight = sum(w for _, w in parts)
        if not cpu:  # the weights are part of the roofline's memory time
            scaled, weight = sum(kernel_time_s(k, bare, False) for k in kernels), 0.0
        busy = measured - launch_s * num_launches(kernels)
        if busy <= 0:
            raise HardwareError(
                f"{case.label}: measured {measured:.3g} s, less than its launches at "
                f"{launch_s:.3g} s each; the measurement is not stable")
        single.append((scaled, weight, busy))
        sums = groups.setdefault((case.op_class, case.llm, case.num_tokens), [0.0, 0.0, 0.0])
        sums[0] += scaled
        sums[1] += weight
        sums[2] += busy
    weight_rate = sdpa_call_s = None
    efficiencies = {}
    if cpu:  # GEMMs one by one: their shapes differ in FLOPs per weight byte
        matmul = [single[i] for i, case in enumerate(cases) if case.op_class == "matmul"]
        try:
            efficiencies["matmul"], weight_rate = fit_efficiency_and_rate(
                [p for p, _, _ in matmul], [w for _, w, _ in matmul], [m for _, _, m in matmul])
        except HardwareError:  # not separable (e.g. one token count): one factor, as on a GPU
            weight_rate = None
        attention = [single[i] for i, case in enumerate(cases) if case.op_class == "attention"]
        stream = [w / weight_rate if weight_rate else 0.0 for _, w, _ in attention]
        try:  # one SDPA call per module: the fixed term's "bytes" are 1 call
            efficiencies["attention"], calls_per_s = fit_efficiency_and_rate(
                [p for p, _, _ in attention], [1.0] * len(attention),
                [m - s for (_, _, m), s in zip(attention, stream, strict=True)])
            sdpa_call_s = 1.0 / calls_per_s
        except HardwareError:
            efficiencies.pop("attention", None)
    for op_class in OPERATOR_CLASSES:
        pairs = [sums for (c, _, _), sums in groups.items() if c == op_class]
        if pairs and op_class not in efficiencies:
            stream = [w / weight_rate if weight_rate else 0.0 for _, w, _ in pairs]
            if weight_rate is None:  # without a fitted rate the weights join the scaled part
                pairs = [(p + w / hardware.hbm_bandwidth_bytes_per_s, 0.0, m) for p, w, m in pairs]
            efficiencies[op_class] = fit_efficiency(
                [p for p, _, _ in pairs], [m - s for (_, _, m), s in zip(pairs, stream, strict=True)])
    return efficiencies, weight_rate, sdpa_call_s


def fit_efficiency_and_rate(scaled_s: Sequence[float], weight_bytes: Sequence[float],
                            measured_s: Sequence[float]) -> tuple[float, float]:
    """(efficiency 1/x, bandwidth 1/y) minimising Σ ((x·p + y·w − m) / m)² with efficiency
    ≤ 1: predictions p at efficiency 1, weight bytes w, measurements m. Two linear unknowns:
    the 2 × 2 normal equations; an efficiency above 1 (the GEMM ceiling was timed with its
    own weight reads inside) puts the optimum on the bound x = 1. ``HardwareError`` if the
    system is singular or either value is not positive (the measurements cannot separate
    compute from the weight stream)."""
    rows = [(p / m, w / m) for p, w, m in zip(scaled_s, weight_bytes, measured_s, strict=True)]
    a = sum(p * p for p, _ in rows)
    b = sum(p * w for p, w in rows)
    c = sum(w * w for _, w in rows)
    d = sum(p for p, _ in rows)
    e = sum(w for _, w in rows)
    det = a * c - b * b
    if len(rows) < 2 or det <= 0:
        raise HardwareError("cannot fit an efficiency and a fixed term (weight reads, call "
                            "time): the measurements do not separate them")
    x, y = (d * c - b * e) / det, (a * e - b * d) / det
    if 0 < x < 1:  # beyond the ceiling, which itself includes its GEMM's weight reads: the
        x = 1.0    # constrained optimum lies on efficiency 1, y from Σ (w/m)(1 − p/m) / Σ (w/m)²
        y = (e - b) / c
    if x <= 0 or y <= 0:
        raise HardwareError(f"fitting gave 1/efficiency {x:.3g} and a fixed term of {y:.3g} s "
                            "per unit (weight byte or call); both must be positive")
    return 1.0 / x, 1.0 / y

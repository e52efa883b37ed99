"""``fpcost calibrate``, the torch side: time the device's own ceilings, the fixed time of a
kernel launch, and one module of a decoder layer at a time (the modules transformers' Llama
runs), then hand the numbers to ``fpcost.costmodel.calibration``.

Every measurement is ``repeats`` timed calls after ``warmup`` untimed ones, reduced by the
statistic (median or min), at a fixed intra-op thread count (``fixed_threads``); the
dispersion of the passes is kept, and unstable measurements are re-measured or refused
(``fpcost.costmodel.noise``). The ceilings are timed in ``ceilings.py``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace

import torch
from torch import nn

from fpcost.costmodel.calibration import (
    CeilingMeasurements,
    build_profile,
    calibrated,
    gemm_ceiling_without_weights,
    nominal_profile,
    shortfall_notes,
)
from fpcost.costmodel.errors import HardwareError
from fpcost.costmodel.hardware import HardwareProfile
from fpcost.costmodel.kernel_fit import KernelCase, case_launches, fit_kernel_profile, kernel_suite
from fpcost.costmodel.noise import (
    DEFAULT_MAX_SPREAD,
    Dispersion,
    efficiencies_out_of_range,
    high_spread,
    non_monotonic,
    too_noisy,
)
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.runtime import DEFAULT_RUNTIME

from .ceilings import (  # noqa: F401  (re-exported: the ladders tests shrink, timed_call_s)
    CALIBRATE_DTYPES,
    COPY_BYTES,
    MATMUL_SHAPES,
    SUITE_DTYPE,
    VECTOR_SIZES,
    cpu_cache_bytes,
    measure_ceilings,
    onchip_buffer,
    timed_call_s,
)
from .timing import (
    DTYPE_BITS,
    DTYPES,
    Device,
    DeviceError,
    fixed_threads,
    measure_s,
    memory_bytes,
    nominal_cpu_peak,
    summarize,
)

Progress = Callable[[str], None]
# Weights a timed GEMM cycles through: twice a 32 MiB last-level cache (the suite's layers
# are 2.4 to 46 MB), so each call reads its weights from memory, as in a model.
COLD_WEIGHT_BYTES = 64 * 2**20


@dataclass(frozen=True)
class CalibrationResult:
    profile: HardwareProfile  # calibrated: measured ceilings and fitted efficiencies
    measurements: CeilingMeasurements
    kernel_cases: tuple[KernelCase, ...]
    kernel_times_s: tuple[float, ...]
    # Datasheet-style profile (nominal SIMD peak, efficiency 1); CPUs only: a GPU's
    # datasheet figures are the built-in profiles.
    nominal: HardwareProfile | None = None
    dispersions: dict[str, Dispersion] | None = None  # every measurement's passes


# ---------------------------------------------------------------------------------------------
# The modules of a decoder layer, as transformers' Llama runs them


def kernel_fn(case: KernelCase, dtype: torch.dtype, device: torch.device) -> Callable[[], object]:
    """A closure running ``case``'s module the way transformers' Llama runs it: the same
    ``nn.Linear``, ``LlamaRMSNorm``, ``act_fn(gate) * up``, rotary, cache update and SDPA
    code, on tensors of the layouts the model passes them."""
    from transformers.activations import ACT2FN
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

    llm, s = case.llm, case.num_tokens
    h, ffn, heads, d = llm.hidden_size, llm.intermediate_size, llm.num_attention_heads, llm.resolved_head_dim
    kv_heads = llm.num_key_value_heads
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):  # (shape), N(0, 1) in dtype on the device
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    name = case.op_name
    if name in ("q_proj", "gate_proj", "down_proj"):
        in_f, out_f = {"q_proj": (h, h), "gate_proj": (h, ffn), "down_proj": (ffn, h)}[name]
        # A ring of nn.Linear layers whose weights together exceed the last-level cache, called
        # in turn: in a model every layer's weights are evicted before it runs again, so a
        # GEMM reads them cold (one reused weight would stay cached and time too fast).
        element = torch.empty((), dtype=dtype).element_size()
        ring = max(2, math.ceil(COLD_WEIGHT_BYTES / (in_f * out_f * element)))
        weights = torch.empty(ring, out_f, in_f, device=device, dtype=dtype).uniform_(-0.03, 0.03)
        linears = []
        for i in range(ring):
            linear = nn.utils.skip_init(nn.Linear, in_f, out_f, bias=False, device=device,
                                        dtype=dtype)
            linear.weight = nn.Parameter(weights[i], requires_grad=False)
            linears.append(linear)
        x = rand(1, s, in_f)
        turn = itertools.cycle(linears)
        return lambda: next(turn)(x)
    if name == "fused_attention":
        # (B, H, S, D) views of (B, S, H, D) projections, as LlamaAttention makes them
        q = rand(1, s, heads, d).transpose(1, 2)
        k, v = (rand(1, s, kv_heads, d).transpose(1, 2) for _ in range(2))
        cos, sin = rand(1, s, d), rand(1, s, d)  # (B, S, D) rotary tables
        empty = torch.tensor([], device=device, dtype=dtype)  # DynamicLayer's initial cache
        # what sdpa_attention_forward reads of LlamaAttention
        module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True,
                                 training=False)

        def attention():
            q_rot, k_rot = apply_rotary_pos_emb(q, k, cos, sin)
            keys, values = torch.cat([empty, k_rot], dim=-2), torch.cat([empty, v], dim=-2)
            # SDPA, then transpose(1, 2).contiguous(): (B, S, H, D), as o_proj reads it
            return sdpa_attention_forward(module, q_rot, keys, values, None, scaling=d**-0.5)[0]

        return attention
    if name == "attn_norm":
        norm = LlamaRMSNorm(h).to(device=device, dtype=dtype)
        x = rand(1, s, h)
        return lambda: norm(x)
    if name == "mlp_act":
        act = ACT2FN["silu"]  # LlamaMLP: act_fn(gate_proj(x)) * up_proj(x)
        gate, up = rand(1, s, ffn), rand(1, s, ffn)
        return lambda: act(gate) * up
    if name == "attn_add":
        a, b = rand(1, s, h), rand(1, s, h)
        return lambda: a + b
    raise DeviceError(f"no kernel for operator {name!r}")


# Modules timed at one token for the launch time: per launch, what a call costs when
# there is almost nothing to compute (the dispatch and launch overhead of each kernel).
LAUNCH_MODULES = ("attn_norm", "mlp_act", "attn_add")


def measure_launch_s(device: Device, llm, dtype: str, warmup: int, repeats: int,
                     statistic: str, dispersions: dict[str, Dispersion]) -> float:
    """Seconds per kernel launch: the runtime's modules on one token, divided by the
    launches the runtime profile counts for them."""
    quant = QuantPlan.uniform(DTYPE_BITS[dtype])
    total_s, launches = 0.0, 0
    for name in LAUNCH_MODULES:
        case = KernelCase(name, llm, 1)
        fn = kernel_fn(case, DTYPES[dtype], device.torch_device)
        approx = measure_s(fn, device.timer, 1, 1)
        total_s += timed_call_s(device, fn, warmup, repeats, approx, statistic, dispersions,
                          f"launch {name} s1")
        launches += case_launches(case, quant, 1.0e6)  # the buffer only sizes attention tiles
    return total_s / launches


def calibration_steps(device_type: str, dtypes: Sequence[str]) -> int:
    """How many progress steps ``calibrate`` reports (an upper bound: skipped shapes
    count as done at the end)."""
    shapes = len(MATMUL_SHAPES[device_type]) * len(dtypes)
    vectors = len(VECTOR_SIZES[device_type]) * len([d for d in dtypes if d in DTYPES])
    suite = len(kernel_suite("gpu" if device_type == "cuda" else "cpu"))
    return shapes + vectors + 2 + suite


def _measure_cases(device, cases, indices, dtype, warmup, repeats, statistic, times,
                   dispersions, progress) -> None:
    for i in indices:
        case = cases[i]
        fn = kernel_fn(case, DTYPES[dtype], device.torch_device)
        approx = measure_s(fn, device.timer, 1, 1)
        times[i] = timed_call_s(device, fn, warmup, repeats, approx, statistic, dispersions,
                          f"kernel {case.label}")
        if progress:
            progress(f"kernel {case.label}")


def _case_problems(cases, times, dispersions, max_spread) -> tuple[list[str], set[int]]:
    """Problems of the module measurements, and the indices to re-measure."""
    labels = {f"kernel {c.label}": i for i, c in enumerate(cases)}
    spread = high_spread({k: dispersions[k] for k in labels}, max_spread)
    flagged = {labels[k] for k in spread}
    problems = [f"{k}: {dispersions[k].problem(max_spread)}" for k in spread]
    series: dict[tuple, list[int]] = {}
    for i, c in enumerate(cases):
        series.setdefault((c.op_name, c.llm), []).append(i)
    for (op_name, llm), members in series.items():
        bad = non_monotonic([cases[i].num_tokens for i in members], [times[i] for i in members])
        for j in bad:
            i = members[j]
            flagged.update(members)
            problems.append(f"{op_name} h{llm.hidden_size}: {cases[i].num_tokens} tokens timed "
                            "faster than fewer tokens")
    return problems, flagged


def calibrate(device: Device, dtypes: Sequence[str], name: str, warmup: int = 1,
              repeats: int = 5, progress: Progress | None = None,
              statistic: str = "median", max_spread: float = DEFAULT_MAX_SPREAD,
              retries: int = 2) -> CalibrationResult:
    """Measure ``device`` and return a calibrated profile (nothing is written).
    ``statistic`` ("median" or "min") reduces each measurement's repeats. Measurements whose
    passes spread more than ``max_spread``, module times that fall as tokens grow, and
    efficiencies outside (0, 1] are re-measured up to ``retries`` times; ``TooNoisyError``
    if they stay unstable."""
    summarize([1.0], statistic)  # an unknown statistic fails before any measuring
    for dtype in dtypes:
        if dtype not in CALIBRATE_DTYPES:
            raise DeviceError(f"--dtype {dtype!r} is unknown; valid: {', '.join(CALIBRATE_DTYPES)}")
    suite_dtype = SUITE_DTYPE[device.type]
    dispersions: dict[str, Dispersion] = {}
    problems: list[str] = []
    with torch.inference_mode(), fixed_threads(device.num_threads):
        for attempt in range(retries + 1):
            ceiling_dispersions: dict[str, Dispersion] = {}
            matmul, vector, copy_bytes, copy_time_s = measure_ceilings(
                device, dtypes, warmup, repeats, statistic, ceiling_dispersions,
                progress if attempt == 0 else None)
            if not high_spread(ceiling_dispersions, max_spread):
                break
        dispersions.update(ceiling_dispersions)
        total_bytes, _ = memory_bytes(device)
        buffer_bytes, buffer_source = onchip_buffer(device)
        cases = kernel_suite(device.profile_device_type)
        launch_s = measure_launch_s(device, cases[0].llm, suite_dtype, warmup, repeats,
                                    statistic, dispersions)
        if progress:
            progress("kernel launch")
        # The element-wise ceilings are the busy throughput: one launch less per call (the
        # runtime profiles add the launch separately), never below half the timed call.
        vector = [replace(v, time_s=max(v.time_s - launch_s, v.time_s / 2)) for v in vector]
        measurements = CeilingMeasurements(
            device_type=device.profile_device_type, device_name=device.name,
            matmul=tuple(matmul), vector=tuple(vector), copy_bytes=copy_bytes,
            copy_time_s=copy_time_s, memory_bytes=total_bytes, onchip_buffer_bytes=buffer_bytes,
            onchip_buffer_source=buffer_source,
            cache_bytes=cpu_cache_bytes("3") if device.type == "cpu" else None,
            cache_source="measured: last-level (L3) cache size from sysfs, cpu0",
            provenance=_provenance(device, dtypes, suite_dtype, warmup, repeats, statistic),
        )
        measurements = _with_shortfalls(measurements)
        measured_profile = build_profile(measurements, name)
        profile = measured_profile
        quant = QuantPlan.uniform(DTYPE_BITS[suite_dtype])
        times = [0.0] * len(cases)
        _measure_cases(device, cases, range(len(cases)), suite_dtype, warmup, repeats,
                       statistic, times, dispersions, progress)
        for attempt in range(retries + 1):
            problems, flagged = _case_problems(cases, times, dispersions, max_spread)
            efficiencies: dict[str, float] = {}
            weight_rate = sdpa_call_s = None
            try:
                profile = measured_profile
                efficiencies, weight_rate, sdpa_call_s = fit_kernel_profile(
                    cases, times, profile, quant, launch_s)
                if weight_rate is not None:  # the GEMM ceiling less its own weight read, refit
                    profile = gemm_ceiling_without_weights(profile, measurements, weight_rate)
                    efficiencies, weight_rate, sdpa_call_s = fit_kernel_profile(
                        cases, times, profile, quant, launch_s)
            except HardwareError as exc:
                problems.append(str(exc))
                flagged.update(range(len(cases)))
            for op_class in efficiencies_out_of_range(efficiencies):
                problems.append(f"fitted {op_class} efficiency {efficiencies[op_class]:.3g} is "
                                "outside (0, 1]")
                flagged.update(i for i, c in enumerate(cases) if c.op_class == op_class)
            if not problems or attempt == retries:
                break
            _measure_cases(device, cases, sorted(flagged), suite_dtype, warmup, repeats,
                           statistic, times, dispersions, None)
        ceiling_problems = [f"{k}: {dispersions[k].problem(max_spread)}"
                            for k in high_spread({k: d for k, d in dispersions.items()
                                                  if not k.startswith("kernel ")}, max_spread)]
    if problems or ceiling_problems:
        raise too_noisy("calibration", problems + ceiling_problems,
                        "rerun on a quieter machine (fewer jobs, `--threads 1`), or raise "
                        "`--max-spread` knowingly")
    how = (f"measured: fitted over this class's share of {len(cases)} modules as transformers' "
           f"Llama runs them ({suite_dtype}; nn.Linear, LlamaRMSNorm, SiLU·up, rotary + cache + "
           "causal SDPA, residual add), each predicted by the kernels of the transformers-sdpa "
           "runtime profile, launches subtracted; relative least squares on the measured ceilings")
    launch_how = (f"measured: {', '.join(LAUNCH_MODULES)} on one token, divided by the "
                  f"launches the transformers-sdpa runtime profile counts for them ({statistic})")
    nominal = None
    peak = nominal_cpu_peak(device.num_threads) if device.type == "cpu" else None
    if peak is not None:
        nominal = nominal_profile(measurements, f"{name}-nominal", *peak)
    weight_how = (f"measured: fitted with the matmul efficiency over the {suite_dtype} nn.Linear "
                  "modules of the suite, each cycling through weights twice the last-level cache "
                  "(read cold, as in a model): time = roofline without weights / efficiency + "
                  "weight bytes / this bandwidth; relative least squares")
    sdpa_how = (f"measured: fitted with the attention efficiency over the {suite_dtype} "
                "attention modules of the suite (rotary + cache + causal SDPA, one SDPA call each): "
                "time = launches + roofline / efficiency + this; relative least squares")
    result_profile = calibrated(profile, efficiencies, how, launch_s, launch_how, weight_rate,
                                weight_how, sdpa_call_s, sdpa_how)
    if weight_rate is None and device.type == "cpu":
        result_profile = replace(result_profile, provenance={
            **result_profile.provenance,
            "weight_bandwidth": "not separable from the GEMM efficiency on these measurements: "
                                "weights at the memory bandwidth, inside the matmul efficiency"})
    result_profile = replace(result_profile, provenance={
        **result_profile.provenance, "runtime": DEFAULT_RUNTIME,
        "max_spread": f"{100 * max(d.spread for d in dispersions.values()):.1f}% "
                      f"(median pass above the fastest, worst of {len(dispersions)} measurements)"})
    return CalibrationResult(result_profile, measurements, tuple(cases), tuple(times), nominal,
                             dispersions)


def _provenance(device: Device, dtypes, suite_dtype, warmup, repeats, statistic) -> dict[str, str]:
    return {
        "device": device.name,
        "device_kind": device.type,
        "torch": torch.__version__,
        "threads": str(device.num_threads),
        "clock": device.timer.name,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dtypes": ", ".join(dtypes),
        "efficiency_dtype": suite_dtype,
        "statistic": f"{statistic} of {repeats} after {warmup} warm-up",
        "element_wise": "addcmul times less one kernel launch (the busy throughput)",
        "tool": "fpcost calibrate",
    }


def _with_shortfalls(measured: CeilingMeasurements) -> CeilingMeasurements:
    return replace(measured, provenance={**measured.provenance, **shortfall_notes(measured)})

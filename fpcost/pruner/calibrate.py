"""``fpcost calibrate``, the torch side: time the device's own ceilings, the fixed time of a
kernel launch, and one module of a decoder layer at a time (the modules transformers' Llama
runs), then hand the numbers to ``fpcost.costmodel.calibration``.

Every measurement is ``repeats`` timed calls after ``warmup`` untimed ones, reduced by the
statistic (median or min), at a fixed intra-op thread count (``fixed_threads``); the
dispersion of the passes is kept, and unstable measurements are re-measured or refused
(``fpcost.costmodel.noise``). Shapes too slow for the device (bf16
GEMMs on a CPU without bf16 units run at ~1 GFLOP/s) are skipped once the best rate seen so
far predicts a call longer than ``max_call_s``.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from fpcost.costmodel.calibration import (
    CeilingMeasurements,
    KernelCase,
    MatmulSample,
    VectorSample,
    build_profile,
    calibrated,
    case_launches,
    fit_kernel_efficiencies,
    kernel_suite,
    nominal_profile,
    shortfall_notes,
)
from fpcost.costmodel.errors import HardwareError
from fpcost.costmodel.hardware import HardwareProfile
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
from fpcost.costmodel.units import GIGA, KILO, MEGA, MILLI

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
    time_repeats_occupied,
)

CALIBRATE_DTYPES = (*DTYPES, "int8")
# Matrix shapes (m, k, n), smallest first: decode-like and skinny products, then square ones
# large enough to reach the peak. The GPU ladder is the CPU one scaled up.
MATMUL_SHAPES = {
    "cpu": ((16, 1024, 1024), (64, 1024, 1024), (2048, 64, 2048), (256, 1024, 2816),
            (1024, 1024, 1024), (512, 2048, 5632), (2048, 2048, 2048)),
    "cuda": ((16, 4096, 4096), (128, 4096, 4096), (8192, 128, 8192), (1024, 4096, 11008),
             (4096, 4096, 4096), (8192, 8192, 8192)),
}
VECTOR_SIZES = {"cpu": (2**14, 2**16, 2**18, 2**20), "cuda": (2**20, 2**22, 2**24)}
COPY_BYTES = {"cpu": 512 * MEGA, "cuda": 2 * GIGA}  # ≫ last-level cache, small next to memory
MAX_CALL_S = {"cpu": 1.0, "cuda": 0.5}
INNER_LOOP_SECONDS = 2 * MILLI  # batch tiny kernels into calls of at least this long
INT8_MIN_ROWS = 17  # torch._int_mm needs m > 16
GPU_REGISTER_FILE_BYTES = 256 * KILO  # per SM, LLM-Viewer's on-chip buffer (docs/hardware.md)
SUITE_DTYPE = {"cpu": "float32", "cuda": "float16"}

Progress = Callable[[str], None]


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


def _repeat(fn: Callable[[], object], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            fn()

    return run


def _timed_passes(device: Device, fn: Callable[[], object], warmup: int, repeats: int,
                  approx_s: float | None = None) -> tuple[list[float], list[float] | None]:
    """(seconds of one call of ``fn`` in each of ``repeats`` timed passes, their
    occupancies); tiny kernels are looped so a timed pass lasts at least
    ``INNER_LOOP_SECONDS`` (``approx_s`` is a first guess of one call)."""
    inner = 1
    if approx_s is not None and approx_s < INNER_LOOP_SECONDS:
        inner = min(4096, math.ceil(INNER_LOOP_SECONDS / max(approx_s, 1e-7)))
    times, occupancies = time_repeats_occupied(_repeat(fn, inner), device, warmup, repeats)
    return [t / inner for t in times], occupancies


def _timed(device: Device, fn: Callable[[], object], warmup: int, repeats: int,
           approx_s: float | None = None, statistic: str = "median",
           dispersions: dict[str, Dispersion] | None = None, label: str = "") -> float:
    """Seconds of one call of ``fn``, the passes reduced by ``statistic``; their dispersion
    is recorded in ``dispersions[label]``."""
    passes, occupancies = _timed_passes(device, fn, warmup, repeats, approx_s)
    if dispersions is not None:
        dispersions[label] = Dispersion.of(passes, occupancies)
    return summarize(passes, statistic)


def _matmul_fn(dtype: str, m: int, k: int, n: int, device: torch.device) -> Callable[[], object]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    if dtype == "int8":
        a = torch.randint(-8, 8, (m, k), dtype=torch.int8, generator=gen).to(device)
        b = torch.randint(-8, 8, (k, n), dtype=torch.int8, generator=gen).to(device)
        return lambda: torch._int_mm(a, b)
    a = torch.randn(m, k, generator=gen).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(k, n, generator=gen).to(device=device, dtype=DTYPES[dtype])
    return lambda: torch.mm(a, b)


def measure_matmuls(device: Device, dtype: str, warmup: int, repeats: int,
                    progress: Progress | None = None, statistic: str = "median",
                    dispersions: dict[str, Dispersion] | None = None) -> list[MatmulSample]:
    """The shape ladder in ``dtype``; shapes predicted to take longer than the per-call
    budget (at the best rate so far) are skipped. int8 without ``torch._int_mm`` support
    returns no samples."""
    samples: list[MatmulSample] = []
    best_rate = None
    for m, k, n in MATMUL_SHAPES[device.type]:
        if dtype == "int8":
            m = max(m, INT8_MIN_ROWS)
        flops = 2.0 * m * k * n
        if best_rate is not None and flops / best_rate > MAX_CALL_S[device.type]:
            continue
        fn = _matmul_fn(dtype, m, k, n, device.torch_device)
        try:
            fn()  # a first call: does this dtype run here, and how fast?
        except RuntimeError:
            if dtype == "int8":
                return []
            raise
        approx = measure_s(fn, device.timer, 0, 1)
        time_s = _timed(device, fn, warmup, repeats, approx, statistic, dispersions,
                        f"matmul {dtype} {m}x{k}x{n}")
        sample = MatmulSample(dtype, m, k, n, time_s)
        samples.append(sample)
        best_rate = max(best_rate or 0.0, sample.flops_per_s)
        if progress:
            progress(f"matmul {dtype} {sample.shape}")
    return samples


def measure_vector(device: Device, dtype: str, warmup: int, repeats: int,
                   progress: Progress | None = None, statistic: str = "median",
                   dispersions: dict[str, Dispersion] | None = None) -> list[VectorSample]:
    """``addcmul`` (out = a + b·c: 2 FLOP/element) over cache-sized to larger tensors."""
    samples = []
    for size in VECTOR_SIZES[device.type]:
        a, b, c, out = (torch.rand(size, device=device.torch_device).to(DTYPES[dtype])
                        for _ in range(4))
        fn = lambda a=a, b=b, c=c, out=out: torch.addcmul(a, b, c, out=out)  # noqa: E731
        approx = measure_s(fn, device.timer, 1, 3)
        samples.append(VectorSample(dtype, size, 2, _timed(
            device, fn, warmup, repeats, approx, statistic, dispersions,
            f"element-wise {dtype} {size}")))
        if progress:
            progress(f"element-wise {dtype} {size}")
    return samples


def measure_copy(device: Device, warmup: int, repeats: int, statistic: str = "median",
                 dispersions: dict[str, Dispersion] | None = None) -> tuple[float, float]:
    """(bytes of the copied tensor, seconds) of one large float32 copy."""
    num_bytes = COPY_BYTES[device.type]
    num_elements = int(num_bytes // 4)
    src = torch.ones(num_elements, device=device.torch_device)
    dst = torch.empty_like(src)
    seconds = _timed(device, lambda: dst.copy_(src), warmup, repeats, None, statistic,
                     dispersions, "copy")
    return float(num_elements * 4), seconds


def _cpu_l2_bytes(level: str = "2") -> float | None:
    """Per-core L2 (or ``level``) cache size from sysfs (Linux), in bytes."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")):
        try:
            if (index / "level").read_text().strip() == level:
                text = (index / "size").read_text().strip().upper()
                multiplier = {"K": 1024, "M": 1024**2}.get(text[-1], 1)
                return float(text.rstrip("KM")) * multiplier
        except (OSError, ValueError):
            continue
    return None


def onchip_buffer(device: Device) -> tuple[float, str]:
    """(bytes, source): the on-chip buffer the FlashAttention tile is sized from."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device.torch_device).multi_processor_count
        return sms * GPU_REGISTER_FILE_BYTES, (
            f"derived: {sms} SMs x 256 KB register file (LLM-Viewer's on-chip buffer)")
    l2 = _cpu_l2_bytes()
    if l2 is None:
        l2 = 512 * 1024
        return l2 * device.num_threads, "assumed: 512 KiB L2 per core (sysfs unreadable) x threads"
    return l2 * device.num_threads, f"measured: per-core L2 {l2:.0f} B (sysfs) x {device.num_threads} threads"


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
        linear = nn.Linear(in_f, out_f, bias=False).to(device=device, dtype=dtype)
        x = rand(1, s, in_f)
        return lambda: linear(x)
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
        total_s += _timed(device, fn, warmup, repeats, approx, statistic, dispersions,
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
        times[i] = _timed(device, fn, warmup, repeats, approx, statistic, dispersions,
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


def _measure_ceilings(device, dtypes, warmup, repeats, statistic, dispersions, progress):
    """(matmul samples, vector samples, copy bytes, copy seconds)."""
    matmul: list[MatmulSample] = []
    vector: list[VectorSample] = []
    for dtype in dtypes:
        matmul += measure_matmuls(device, dtype, warmup, repeats, progress, statistic, dispersions)
        if dtype in DTYPES:
            vector += measure_vector(device, dtype, warmup, repeats, progress, statistic,
                                     dispersions)
    if not any(s.dtype == "float32" for s in vector):  # build_profile needs the FP32 rate
        vector += measure_vector(device, "float32", warmup, repeats, progress, statistic,
                                 dispersions)
    copy_bytes, copy_time_s = measure_copy(device, warmup, repeats, statistic, dispersions)
    if progress:
        progress("copy bandwidth")
    return matmul, vector, copy_bytes, copy_time_s


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
            matmul, vector, copy_bytes, copy_time_s = _measure_ceilings(
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
            cache_bytes=_cpu_l2_bytes("3") if device.type == "cpu" else None,
            cache_source="measured: last-level (L3) cache size from sysfs, cpu0",
            provenance=_provenance(device, dtypes, suite_dtype, warmup, repeats, statistic),
        )
        measurements = _with_shortfalls(measurements)
        profile = build_profile(measurements, name)
        quant = QuantPlan.uniform(DTYPE_BITS[suite_dtype])
        times = [0.0] * len(cases)
        _measure_cases(device, cases, range(len(cases)), suite_dtype, warmup, repeats,
                       statistic, times, dispersions, progress)
        for attempt in range(retries + 1):
            problems, flagged = _case_problems(cases, times, dispersions, max_spread)
            efficiencies: dict[str, float] = {}
            try:
                efficiencies = fit_kernel_efficiencies(cases, times, profile, quant, launch_s)
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
    result_profile = calibrated(profile, efficiencies, how, launch_s, launch_how)
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

"""``fpcost calibrate``: measure this device's ceilings and per-class efficiencies and
write them as a hardware profile (atomically: an interrupted run leaves no partial file)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from fpcost.costmodel.units import GIGA, MICRO, MILLI

from .bounds import REPEATS, WARMUP, threads_type
from .files import output_path_callback, same_file
from .render import Column, emit_csv, emit_json, format_option, render_table, stderr_console

CEILING_COLUMNS = (
    Column("what", "Measurement", justify="left"),
    Column("detail", "Shape / size", justify="left"),
    Column("rate", "Rate (G/s)", lambda v: f"{v / GIGA:.2f}"),
    Column("of_peak", "Of peak", lambda v: "—" if v is None else f"{v:.2f}"),
)
KERNEL_COLUMNS = (
    Column("kernel", "Kernel", justify="left"),
    Column("op_class", "Class", justify="left"),
    Column("measured_s", "Measured (ms)", lambda v: f"{v / MILLI:.3f}"),
    Column("roofline_s", "Roofline (ms)", lambda v: f"{v / MILLI:.3f}"),
    Column("calibrated_s", "Calibrated (ms)", lambda v: f"{v / MILLI:.3f}"),
    Column("num_launches", "Launches"),
    Column("spread", "Spread", lambda v: "—" if v is None else f"{100 * v:.1f}%"),
)


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr; yields ``step(label)`` that advances it by one."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TextColumn("{task.fields[label]}"))
    with Progress(*columns, console=stderr_console, transient=True) as bar:
        task = bar.add_task(description, total=total, label="")

        def step(label: str) -> None:
            bar.update(task, advance=1, label=label)

        yield step


@click.command()
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Device to measure.")
@click.option("--dtype", "dtypes", multiple=True,
              type=click.Choice(["float32", "bfloat16", "float16", "int8"]),
              help="Matmul dtypes to measure (repeatable) [default: cpu float32, bfloat16, "
                   "int8; cuda float16, bfloat16, float32, int8].")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, path_type=Path),
              callback=output_path_callback,
              required=True, help="Profile TOML file to write.")
@click.option("--name", default=None, help="Profile name [default: the output file's stem].")
@click.option("--nominal-output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=output_path_callback,
              help="CPU: also write a datasheet-style profile (cores x clock x SIMD FLOP/cycle, "
                   "efficiency 1) to compare against (`fpcost validate --baseline FILE`).")
@click.option("--threads", type=threads_type(), default=None,
              help="Intra-op threads to measure with, recorded in the profile; at most the CPUs "
                   "available here [default: cpu 1 (a shared machine), cuda torch's].")
@click.option("--clock", type=click.Choice(["wall", "thread"]), default="wall", show_default=True,
              help="CPU clock: wall time, or CPU time of the calling thread (needs --threads 1; "
                   "ignores time descheduled by other jobs on a shared machine).")
@click.option("--warmup", type=WARMUP, default=1, show_default=True,
              help="Untimed calls before each measurement (at most 100).")
@click.option("--repeats", type=REPEATS, default=5, show_default=True,
              help="Timed calls per measurement (at most 1000).")
@click.option("--statistic", type=click.Choice(["median", "min"]), default="min",
              show_default=True,
              help="How the repeats are summarised (min: the least-disturbed call; noise from "
                   "other jobs only adds time).")
@click.option("--max-spread", type=click.FloatRange(min=0, min_open=True), default=0.10,
              show_default=True,
              help="Refuse (\"too noisy\", after re-measuring) when a measurement's median "
                   "call is more than this fraction above its fastest.")
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True,
              help="Re-measurements of unstable measurements before refusing.")
@format_option
def calibrate(device, dtypes, output, name, nominal_output, threads, clock, warmup, repeats,
              statistic, max_spread, retries, output_format):
    """Measure the device's ceilings (matmul per dtype over a shape ladder, copy bandwidth,
    element-wise throughput), the fixed time of a kernel launch, and per-class efficiencies
    (the modules of a decoder layer as transformers' Llama runs them, against the kernels
    of the runtime execution profile), and write them as a hardware profile. Unstable
    measurements are re-measured, then refused ("too noisy", non-zero exit)."""
    if nominal_output is not None and same_file(output, nominal_output):
        raise click.UsageError(f"--output {output} and --nominal-output {nominal_output} are "
                               "the same file; give two file names")
    from fpcost.extras import require_extra

    require_extra("torch", "fpcost calibrate")
    from fpcost.hardware_profiles import write_profile
    from fpcost.pruner.calibrate import calibrate as run_calibration
    from fpcost.pruner.calibrate import calibration_steps
    from fpcost.pruner.timing import resolve_device

    if threads is None and device == "cpu":
        threads = 1
    dev = resolve_device(device, clock=clock, num_threads=threads)
    if not dtypes:
        dtypes = ("float32", "bfloat16", "int8") if device == "cpu" else (
            "float16", "bfloat16", "float32", "int8")
    with progress_bar(calibration_steps(device, dtypes), f"calibrating {dev.name}") as step:
        result = run_calibration(dev, list(dtypes), name or output.stem, warmup, repeats, step,
                                 statistic, max_spread, retries)
    write_profile(result.profile, output)
    if nominal_output is not None:
        if result.nominal is None:
            stderr_console.print("no nominal profile: it needs a Linux CPU (/proc/cpuinfo); on a GPU "
                                 "the built-in datasheet profiles are the baseline")
        else:
            write_profile(result.nominal, nominal_output)
    _render(result, output, output_format)


def _render(result, output: Path, output_format: str) -> None:
    from dataclasses import replace

    from fpcost.costmodel.calibration import peak_sample
    from fpcost.costmodel.kernel_fit import case_launches, case_time_s
    from fpcost.costmodel.quant import QuantPlan
    from fpcost.pruner.calibrate import SUITE_DTYPE
    from fpcost.pruner.timing import DTYPE_BITS

    measured = result.measurements
    profile = result.profile
    ceilings = []
    for sample in measured.matmul:
        peak = peak_sample(measured.matmul, (sample.dtype,))
        ceilings.append({"what": f"matmul {sample.dtype}", "detail": sample.shape,
                         "rate": sample.flops_per_s, "of_peak": sample.flops_per_s / peak.flops_per_s,
                         "time_s": sample.time_s})
    for sample in measured.vector:
        ceilings.append({"what": f"element-wise {sample.dtype}", "detail": str(sample.num_elements),
                         "rate": sample.flops_per_s, "of_peak": None, "time_s": sample.time_s})
    ceilings.append({"what": "copy bandwidth (bytes)", "detail": f"{measured.copy_bytes:.3g} B",
                     "rate": measured.copy_bandwidth_bytes_per_s, "of_peak": None,
                     "time_s": measured.copy_time_s})
    device_kind = "cuda" if profile.device_type == "gpu" else "cpu"
    quant = QuantPlan.uniform(DTYPE_BITS[SUITE_DTYPE[device_kind]])
    bare = replace(profile, efficiency={}, kernel_launch_s=None)
    dispersions = result.dispersions or {}
    kernels = []
    for case, seconds in zip(result.kernel_cases, result.kernel_times_s, strict=True):
        spread = dispersions.get(f"kernel {case.label}")
        kernels.append({"kernel": case.label, "op_class": case.op_class, "measured_s": seconds,
                        "roofline_s": case_time_s(case, bare, quant),
                        "calibrated_s": case_time_s(case, profile, quant),
                        "num_launches": case_launches(case, quant, profile.onchip_buffer_bytes),
                        "spread": None if spread is None else spread.spread})
    if output_format == "json":
        emit_json({"profile_path": str(output), "profile": profile.name,
                   "device": measured.device_name, "efficiency": profile.efficiency,
                   "kernel_launch_s": profile.kernel_launch_s,
                   "cache_bandwidth_bytes_per_s": profile.cache_bandwidth_bytes_per_s,
                   "weight_bandwidth_bytes_per_s": profile.weight_bandwidth_bytes_per_s,
                   "sdpa_call_s": profile.sdpa_call_s,
                   "provenance": profile.provenance, "ceilings": ceilings, "kernels": kernels,
                   "dispersions": {k: d.as_dict() for k, d in dispersions.items()}})
    elif output_format == "csv":
        emit_csv(kernels)
    else:
        render_table(ceilings, CEILING_COLUMNS, title=f"Ceilings measured on {measured.device_name}",
                     caption="Rates in GFLOP/s (GOP/s for int8; GB/s for the copy).")
        launch = profile.kernel_launch_s or 0.0
        weight = profile.weight_bandwidth_bytes_per_s
        weight_note = f", GEMM weights read at {weight / GIGA:.1f} GB/s" if weight else ""
        if profile.sdpa_call_s:
            weight_note += f", {profile.sdpa_call_s / MICRO:.1f} µs per SDPA call"
        render_table(kernels, KERNEL_COLUMNS, title="Decoder-layer modules (transformers' Llama)",
                     caption="Roofline: the runtime's kernels on the measured ceilings, efficiency "
                             "1, no launches; calibrated: fitted per-class efficiencies " + ", ".join(
                                 f"{c} {e:.2f}" for c, e in profile.efficiency.items())
                             + f" and {launch / MICRO:.2f} µs per launch" + weight_note
                             + ". Spread: median call above the fastest.")
        stderr_console.print(f"wrote {output}")

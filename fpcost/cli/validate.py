"""``fpcost validate``: time the real prefill of a Llama decoder at a sweep of token counts
(or at the kept counts of a pruning run) and put the cost model's predictions next to it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from fpcost.cli.bounds import InputPath
from fpcost.costmodel.errors import ConfigError, WorkloadError
from fpcost.costmodel.units import MILLI

from .bounds import INT32_MAX, REPEATS, WARMUP, BoundedInt, shown_value, threads_type
from .calibrate import progress_bar
from .files import output_path_callback, write_atomic
from .options import read_tokens_file
from .render import Column, emit_csv, emit_json, format_option, render_table, stderr_console

DEFAULT_TOKENS = (64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
DEFAULT_DTYPE = {"cpu": "float32", "cuda": "float16"}
DEFAULT_MODEL = {"cpu": "scaled", "cuda": "llava-1.5-7b"}
SCALED_NAMES = ("scaled", "llama-scaled", "llama-scaled-1024x4")
ACCOUNTING = "fpcost"
# SDPA (the attention transformers' Llama runs by default) dispatches to a fused
# FlashAttention-style kernel on CPU and GPU alike: the s×s scores never reach memory.
FLASH_ATTENTION = True
SIDE_BY_SIDE_MODEL = "llava-1.5-7b"
SIDE_BY_SIDE_HARDWARE = "a6000"
# A token count (each of --tokens, and --text-tokens) fits a signed 32-bit integer; the
# memory check (check_fits) then refuses what the device cannot hold, with the figure.
MAX_TOKENS = INT32_MAX
# Each fold holds out at least one count; more folds than counts is refused by the fit.
MAX_FOLDS = 1000
RUNTIME = "transformers-sdpa"  # the runtime execution profile of what validate times

ms = lambda v: "—" if v is None else f"{v / MILLI:.1f}"  # noqa: E731
x2 = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
pct = lambda v: "—" if v is None else f"{100 * v:.1f}%"  # noqa: E731

ROW_COLUMNS = (
    Column("num_tokens", "Tokens"),
    Column("measured_s", "Measured\n(ms)", ms),
    Column("predicted_s", "Predicted\n(ms)", ms),
    Column("ratio", "Ratio", x2),
    Column("held_out_predicted_s", "Held-out\n(ms)", ms),
    Column("uncalibrated_predicted_s", "Uncalib.\n(ms)", ms),
    Column("measured_speedup", "Speedup\nmeasured", x2),
    Column("predicted_speedup", "Speedup\npredicted", x2),
    Column("held_out_predicted_speedup", "Speedup\nheld-out", x2),
)
VARIANT_COLUMNS = (
    Column("variant", "Prediction", justify="left"),
    Column("time_median", "Time median |err|", pct),
    Column("time_max", "Time max |err|", pct),
    Column("speedup_median", "Speedup median |err|", pct),
    Column("speedup_max", "Speedup max |err|", pct),
)
VARIANT_LABELS = {
    "uncalibrated": "uncalibrated (--baseline)",
    "ceilings": "measured ceilings, efficiency 1",
    "profile": "calibrated profile (runtime kernels + launches)",
    "fitted_in_sample": "fitted on all counts (in-sample)",
    "fitted_held_out": "fitted, held-out counts",
}
CLASS_COLUMNS = (
    Column("op_class", "Class", justify="left"),
    Column("measured_share", "Measured share", pct),
    Column("predicted_share", "Predicted share", pct),
    Column("median_abs_rel_error", "Median |err|", pct),
    Column("profile_efficiency", "Profile eff.", x2),
    Column("fitted_efficiency", "Fitted eff.", x2),
)
IMAGE_COLUMNS = (
    Column("image", "Image", justify="left"),
    Column("num_kept", "Kept"),
    Column("num_tokens", "Of"),
    Column("predicted_s", "Pred.\n(ms)", ms),
    Column("measured_s", "Meas.\n(ms)", ms),
    Column("predicted_speedup", "Speedup\npred.", x2),
    Column("measured_speedup", "Speedup\nmeas.", x2),
    Column("a6000_predicted_s", "A6000 7B\n(ms)", ms),
    Column("a6000_predicted_speedup", "A6000 7B\nspeedup", x2),
)


def parse_token_list(text: str) -> list[int]:
    """``"64,128, 256"`` (commas or spaces) as sorted unique positive integers."""
    items = [item for item in re.split(r"[,\s]+", text.strip()) if item]
    if not items:
        raise WorkloadError(f"--tokens {text!r} is empty; give counts such as 64,256,1024")
    counts = []
    for item in items:
        digits = item.lstrip("0")  # ASCII digits only, at most 10 of them, before int()
        if (not re.fullmatch(r"[0-9]+", item) or not digits or len(digits) > len(str(MAX_TOKENS))
                or int(digits) > MAX_TOKENS):
            where = f" (in {shown_value(text)})" if item != text.strip() else ""
            raise WorkloadError(f"--tokens: {shown_value(item)} is not a positive integer up to "
                                f"{MAX_TOKENS}{where}")
        counts.append(int(digits))
    return sorted(set(counts))


def resolve_llm(model_name: str | None, config_path: Path | None, device: str):
    """(LLMSpec, label): the scaled Llama, a preset's LLM, or a config.json's."""
    from fpcost.costmodel.hfconfig import load_config_json
    from fpcost.costmodel.presets import get_preset
    from fpcost.pruner.validate import SCALED_LLAMA

    if model_name and config_path:
        raise click.UsageError("give either --model or --config, not both")
    if config_path is not None:
        spec = load_config_json(config_path)
        return spec.llm, spec.name
    name = model_name or DEFAULT_MODEL[device]
    if name.strip().lower() in SCALED_NAMES:
        return SCALED_LLAMA, SCALED_LLAMA.name
    preset = get_preset(name)
    return preset.llm, preset.name


@click.command()
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to time the model: this CPU, or the current CUDA device (CUDA events).")
@click.option("--profile", "profile_name", required=True,
              help="Hardware profile of this device (`fpcost calibrate --output FILE`).")
@click.option("--baseline", "baseline_name", default=None,
              help="Uncalibrated profile to compare against [default: --profile with every "
                   "efficiency 1]; e.g. a datasheet profile such as a100-80g.")
@click.option("--model", "-m", "model_name", default=None,
              help="scaled (Llama 1024 wide, 4 layers; the CPU default) or a built-in model "
                   "whose LLM is timed (the CUDA default: llava-1.5-7b).")
@click.option("--config", "config_path", type=InputPath(path_type=Path), default=None,
              help="A Hugging Face config.json whose LLM is timed.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="Precision of weights and activations [default: cpu float32, cuda float16].")
@click.option("--tokens", "tokens_text", default=None, metavar="LIST",
              help="Token counts, e.g. 64,256,1024 [default: 64 to 2048, 11 counts].")
@click.option("--tokens-from", type=InputPath(path_type=Path), default=None,
              help="Kept counts per image from `fpcost prune --output FILE`: each image's LLM "
                   "input (kept + --text-tokens) is timed and predicted, against the unpruned one.")
@click.option("--images", "images_dir", type=InputPath(path_type=Path, file_okay=False),
              default=None,
              help="Prune every image in DIR with freePruner (its defaults) on --encoder first; "
                   "their kept counts become the workloads, as with --tokens-from.")
@click.option("--encoder", default="dinov2-s14", show_default=True,
              help="Vision encoder for --images (a name `fpcost prune --encoder` accepts).")
@click.option("--text-tokens", type=BoundedInt(0, MAX_TOKENS), default=40, show_default=True,
              help="Text tokens added to each image's visual tokens (--tokens-from).")
@click.option("--threads", type=threads_type(), default=None,
              help="Intra-op threads; must match the profile's; at most the CPUs available here "
                   "[default: cpu 1 (a shared machine: a multi-threaded GEMM waits on whichever "
                   "worker was descheduled); cuda torch's].")
@click.option("--clock", type=click.Choice(["wall", "thread"]), default="wall", show_default=True,
              help="CPU clock (thread: CPU time of the calling thread, needs --threads 1).")
@click.option("--warmup", type=WARMUP, default=1, show_default=True,
              help="Untimed passes per count before the timed ones (at most 100).")
@click.option("--repeats", type=REPEATS, default=5, show_default=True,
              help="Timed passes per count for the total (and per image request with --images; "
                   "at most 1000).")
@click.option("--hooked-repeats", type=REPEATS, default=3, show_default=True,
              help="Timed passes per count with module hooks, for the split per operator class "
                   "(at most 1000).")
@click.option("--statistic", type=click.Choice(["median", "min"]), default="min",
              show_default=True,
              help="How repeated passes are summarised (min: the least-disturbed pass; noise "
                   "from other jobs only adds time). The JSON also holds the other one's errors.")
@click.option("--max-spread", type=click.FloatRange(min=0, min_open=True), default=0.10,
              show_default=True,
              help="Refuse (\"too noisy\", after re-measuring) when a count's median pass is "
                   "more than this fraction above its fastest.")
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True,
              help="Re-measurements of unstable counts before refusing.")
@click.option("--folds", type=BoundedInt(2, MAX_FOLDS), default=2, show_default=True,
              help="Interleaved folds for the held-out fit.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=output_path_callback,
              help="Also write the full JSON report to this file (atomically).")
@format_option
def validate(device, profile_name, baseline_name, model_name, config_path, dtype, tokens_text,
             tokens_from, images_dir, encoder, text_tokens, threads, clock, warmup, repeats,
             hooked_repeats, statistic, max_spread, retries, folds, output, output_format):
    """Time the real prefill forward pass at each token count and compare it with the cost
    model's prediction (uncalibrated, calibrated profile, fitted in-sample and held-out).
    With --images, also time each image's whole request (encoder, freePruner selection,
    projector on the kept tokens, prefill), pruned and unpruned."""
    from fpcost.extras import require_extra

    require_extra("torch", "fpcost validate")
    from fpcost.costmodel.noise import efficiencies_out_of_range
    from fpcost.costmodel.spec import ModelSpec
    from fpcost.costmodel.validation import check_profile_device
    from fpcost.hardware_profiles import load_profile
    from fpcost.pruner.timing import resolve_device
    from fpcost.pruner.validate import check_fits

    if sum(x is not None for x in (tokens_text, tokens_from, images_dir)) > 1:
        raise click.UsageError("give one of --tokens, --tokens-from and --images")
    llm, model_label = resolve_llm(model_name, config_path, device)
    if threads is None and device == "cpu":
        threads = 1
    images = None
    if images_dir is not None:
        from .validate_pipeline import prune_directory

        images, image_paths, loaded = prune_directory(images_dir, encoder)
        counts = _image_counts(images, text_tokens)
    elif tokens_from is not None:
        images = read_tokens_file(tokens_from)
        counts = _image_counts(images, text_tokens)
    else:
        counts = parse_token_list(tokens_text) if tokens_text is not None else list(DEFAULT_TOKENS)
    dev = resolve_device(device, clock=clock, num_threads=threads)
    profile = load_profile(profile_name)
    check_profile_device(profile, dev.profile_device_type, dev.name, dev.num_threads)
    calibrated_for = profile.provenance.get("runtime")
    if calibrated_for is not None and calibrated_for != RUNTIME:
        raise ConfigError(f"profile {profile.name!r} was calibrated for the {calibrated_for!r} "
                          f"runtime, but validate times {RUNTIME!r}; recalibrate")
    out_of_range = efficiencies_out_of_range(profile.efficiency)
    if out_of_range:
        raise ConfigError(f"profile {profile.name!r}: efficiency of {', '.join(out_of_range)} is "
                          "outside (0, 1]; recalibrate (`fpcost calibrate --output FILE`)")
    baseline = load_profile(baseline_name) if baseline_name else None
    if baseline is not None and baseline.device_type != dev.profile_device_type:
        raise ConfigError(f"--baseline {baseline_name!r} describes a {baseline.device_type}, "
                          f"not a {dev.profile_device_type}")
    dtype = dtype or DEFAULT_DTYPE[device]
    check_fits(llm, max(counts), dtype, dev)
    model = ModelSpec(name=model_label, kind="llm", llm=llm)

    from fpcost.pruner.validate import measure_prefills, measurement_steps

    with progress_bar(measurement_steps(repeats, hooked_repeats),
                      f"timing {llm.name} on {dev.name}") as step:
        measured = measure_prefills(llm, dtype, dev, counts, warmup, repeats, hooked_repeats, step,
                                    statistic=statistic, max_spread=max_spread, retries=retries)
    payload = _report(model, profile, baseline, dev, dtype, counts, measured, folds,
                      dict(warmup=warmup, repeats=repeats, hooked_repeats=hooked_repeats,
                           statistic=statistic, max_spread=max_spread, retries=retries))
    payload["settings"]["text_tokens"] = text_tokens if images is not None else None
    if images_dir is not None:
        payload["settings"]["pruned"] = {"images": str(images_dir), "encoder": encoder,
                                         "method": "freepruner (defaults)"}
    if images is not None:
        from .validate_pipeline import image_rows

        payload["images"] = image_rows(images, text_tokens, payload["rows"])
    if images_dir is not None:
        from .validate_pipeline import pipeline_section

        payload["pipeline"] = pipeline_section(loaded, image_paths, llm, dtype, dev, profile,
                                               text_tokens, warmup, repeats, statistic,
                                               max_spread, retries)
    if output is not None:
        write_atomic(output, json.dumps(payload, indent=2, allow_nan=False) + "\n",
                     what="validation report")
    _render(payload, output_format)


def _image_counts(images: list[dict], text_tokens: int) -> list[int]:
    counts = set()
    for entry in images:
        full = entry.get("num_tokens")
        if isinstance(full, bool) or not isinstance(full, int) or full < entry["num_kept"]:
            raise WorkloadError(f"tokens file: image {entry['image']!r} has num_tokens = {full!r}; "
                                "it must be an integer ≥ num_kept (the unpruned count)")
        counts.update((entry["num_kept"] + text_tokens, full + text_tokens))
    return sorted(counts)


def _quant(dtype: str):
    from fpcost.costmodel.quant import QuantPlan
    from fpcost.pruner.timing import DTYPE_BITS

    return QuantPlan.uniform(DTYPE_BITS[dtype])


def _report(model, profile, baseline, dev, dtype, counts, measured, folds, timing) -> dict:
    from fpcost.costmodel.hardware import OPERATOR_CLASSES
    from fpcost.costmodel.noise import efficiencies_out_of_range
    from fpcost.costmodel.validation import (
        build_report,
        predicted_class_times_s,
        runtime_class_times_s,
        totals,
        without_efficiency,
    )

    quant = _quant(dtype)
    unit, launch = runtime_class_times_s(model.llm, counts, profile, quant, RUNTIME)
    roofline_unit = predicted_class_times_s(model, counts, without_efficiency(profile), quant,
                                            ACCOUNTING, FLASH_ATTENTION)
    baseline_profile = baseline or without_efficiency(profile)
    baseline_totals = totals(predicted_class_times_s(model, counts, baseline_profile, quant,
                                                     ACCOUNTING, FLASH_ATTENTION))

    def report_for(statistic: str) -> dict:
        measured_total = [m.total_s(statistic) for m in measured]
        measured_class = {c: [m.class_s(statistic)[c] for m in measured] for c in OPERATOR_CLASSES}
        extra = {"ceilings": totals(roofline_unit)} if baseline is not None else None
        return build_report(counts, measured_total, measured_class, unit, profile.efficiency,
                            baseline_totals, folds, extra, launch)

    statistic = timing["statistic"]
    report = report_for(statistic)
    other = "min" if statistic == "median" else "median"
    report["summary"]["other_statistic"] = {"statistic": other,
                                            "variants": report_for(other)["summary"]["variants"]}
    for row, m in zip(report["rows"], measured, strict=True):
        row["measured_repeats_s"] = list(m.total_repeats_s)
        row["measured_dispersion"] = m.dispersion.as_dict()
        row["measured_spread"] = m.dispersion.spread
    fitted = report["summary"]["efficiencies"]["fitted_in_sample"]
    report["summary"]["checks"] = {
        "max_spread": max(m.dispersion.spread for m in measured),
        "fitted_efficiencies_outside_0_1": efficiencies_out_of_range(fitted),
        "calibrated_not_worse_than_uncalibrated": {
            key: (report["summary"][key]["median_abs_rel_error"]
                  <= report["summary"]["variants"]["uncalibrated"][key]["median_abs_rel_error"])
            if report["summary"][key]["median_abs_rel_error"] is not None else None
            for key in ("time", "speedup")},
    }
    llm = model.llm
    report["settings"] = {
        "device": dev.name, "device_type": dev.type, "threads": dev.num_threads,
        "clock": dev.timer.name, "model": model.name,
        "llm": {"hidden_size": llm.hidden_size, "num_hidden_layers": llm.num_hidden_layers,
                "num_attention_heads": llm.num_attention_heads,
                "num_key_value_heads": llm.num_key_value_heads,
                "intermediate_size": llm.intermediate_size, "vocab_size": llm.vocab_size},
        "dtype": dtype, "quant": quant.label, "profile": profile.name,
        "baseline": baseline_profile.name if baseline else f"{profile.name} at efficiency 1",
        "baseline_description": baseline_profile.description,
        "accounting": ACCOUNTING, "flash_attention": FLASH_ATTENTION, "runtime": RUNTIME,
        "kernel_launch_s": profile.kernel_launch_s,
        "weight_bandwidth_bytes_per_s": profile.weight_bandwidth_bytes_per_s,
        "sdpa_call_s": profile.sdpa_call_s,
        "accounting_reason": "the calibrated prediction counts the kernels of the "
                             f"{RUNTIME} runtime profile (what is timed: transformers' eager "
                             "Llama, each RMSNorm, SiLU, product, rotary and copy a kernel of its "
                             "own, SDPA as one fused FlashAttention-style kernel, with PyTorch's "
                             "CPU tiles on a CPU) plus a fixed launch time per kernel and, on a "
                             "calibrated CPU, each GEMM's weights read at the calibrated weight "
                             "bandwidth and a fixed time per SDPA call; the uncalibrated one is "
                             "the plain roofline (one record per operator)",
        "summary_statistic": f"{statistic} of {timing['repeats']} passes after {timing['warmup']} "
                             f"warm-up; class split from {timing['hooked_repeats']} hooked passes",
        **timing,
    }
    return report


def _flat_row(row: dict) -> dict:
    flat = {k: v for k, v in row.items() if not isinstance(v, (dict, list))}
    for c, v in row["measured_class_s"].items():
        flat[f"measured_{c}_s"] = v
    for c, v in row["predicted_class_s"].items():
        flat[f"predicted_{c}_s"] = v
    return flat


def _render(payload: dict, output_format: str) -> None:
    if output_format == "json":
        emit_json(payload)
        return
    if output_format == "csv":
        emit_csv([_flat_row(r) for r in payload["rows"]])
        return
    s = payload["settings"]
    summary = payload["summary"]
    render_table(payload["rows"], ROW_COLUMNS,
                 title=f"Prefill of {s['model']} ({s['dtype']}) on {s['device']}, "
                       f"{s['threads']} thread(s)",
                 caption=f"Predicted: profile {s['profile']} ({s['accounting']} accounting, fused "
                         f"attention as SDPA runs). Held-out: efficiencies fitted on the other "
                         f"counts ({summary['num_folds']} interleaved folds). Speedup against "
                         f"{summary['reference_num_tokens']} tokens. {s['summary_statistic']}.")
    variants = [{"variant": VARIANT_LABELS[name],
                 "time_median": figures["time"]["median_abs_rel_error"],
                 "time_max": figures["time"]["max_abs_rel_error"],
                 "speedup_median": figures["speedup"]["median_abs_rel_error"],
                 "speedup_max": figures["speedup"]["max_abs_rel_error"]}
                for name, figures in summary["variants"].items()]
    render_table(variants, VARIANT_COLUMNS, title="Error against the measured prefill")
    classes = [{"op_class": c, **{k: v for k, v in figures.items() if k != "time"},
                "median_abs_rel_error": figures["time"]["median_abs_rel_error"]}
               for c, figures in summary["classes"].items()]
    render_table(classes, CLASS_COLUMNS, title="Per operator class (summed over counts)")
    if "images" in payload:
        render_table(payload["images"], IMAGE_COLUMNS, title="Pruned images: kept tokens → prefill",
                     caption="Speedups against each image's unpruned input; A6000 7B: LLaVA-1.5-7B "
                             "(fp16) on the a6000 profile, predicted.")
    if "pipeline" in payload:
        from .validate_pipeline import render_pipeline

        render_pipeline(payload["pipeline"])
    stderr_console.print(f"validated {len(payload['rows'])} token counts")

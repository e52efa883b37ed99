"""Predicted against measured prefill times: per-class predictions, efficiencies fitted on
some token counts and judged on the others, and the error figures of time and speedup.

Pure arithmetic over lists of floats (seconds); the torch side that measures lives in
``fpcost.pruner.validate``. Relative errors are |predicted − measured| / measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace

from .accounting import Accounting
from .errors import HardwareError, WorkloadError
from .estimate import estimate
from .hardware import OPERATOR_CLASSES, HardwareProfile
from .quant import QuantPlan
from .runtime import DEFAULT_RUNTIME, prefill_kernels, split_class_times_s
from .spec import LLMSpec, ModelSpec
from .workload import Workload

ClassTimes = Mapping[str, Sequence[float]]  # op_class -> seconds per token count


def prompt_workload(num_tokens: int) -> Workload:
    """An LLM input of ``num_tokens`` tokens (text and visual tokens cost the same in the
    LLM; the validator feeds token ids)."""
    return Workload(num_visual_tokens=0, num_text_tokens=num_tokens)


def predicted_class_times_s(
    model: ModelSpec, num_tokens: Sequence[int], hardware: HardwareProfile, quant: QuantPlan,
    accounting: Accounting | str, flash_attention: bool,
) -> dict[str, list[float]]:
    """Prefill seconds per operator class at each token count, on ``hardware`` as given
    (its efficiencies applied)."""
    times: dict[str, list[float]] = {c: [] for c in OPERATOR_CLASSES}
    for n in num_tokens:
        result = estimate(model, prompt_workload(n), hardware, quant, accounting,
                          flash_attention, stages=("prefill",))
        sums = dict.fromkeys(OPERATOR_CLASSES, 0.0)
        for row in result.operators:
            sums[row.op.op_class] += row.op.count * row.time_s
        for op_class, value in sums.items():
            times[op_class].append(value)
    return times


def runtime_class_times_s(
    llm: LLMSpec, num_tokens: Sequence[int], hardware: HardwareProfile, quant: QuantPlan,
    runtime: str = DEFAULT_RUNTIME,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(busy, fixed): per operator class, at each token count, the seconds of the kernels
    ``runtime`` launches for a prefill on ``hardware`` — busy time at efficiency 1 on its
    ceilings (what an efficiency scales), and the part no efficiency scales: launches at its
    ``kernel_launch_s`` and, on a calibrated CPU, the weight stream at its
    ``weight_bandwidth_bytes_per_s`` (zero when it has neither)."""
    bare = without_efficiency(hardware)
    busy: dict[str, list[float]] = {c: [] for c in OPERATOR_CLASSES}
    fixed: dict[str, list[float]] = {c: [] for c in OPERATOR_CLASSES}
    for n in num_tokens:
        kernels = prefill_kernels(llm, quant, n, runtime, hardware.onchip_buffer_bytes,
                                  hardware.device_type)
        scaled, extra = split_class_times_s(kernels, bare)
        for c in OPERATOR_CLASSES:
            busy[c].append(scaled[c])
            fixed[c].append(extra[c])
    return busy, fixed


def totals(class_times: ClassTimes) -> list[float]:
    """Per token count, the sum over classes."""
    columns = list(class_times.values())
    return [sum(values) for values in zip(*columns, strict=True)]


def without_efficiency(profile: HardwareProfile) -> HardwareProfile:
    """The same ceilings at efficiency 1 for every class: the uncalibrated roofline."""
    return replace(profile, efficiency={})


def scale_class_times(unit_times: ClassTimes, efficiencies: Mapping[str, float],
                      launch: ClassTimes | None = None) -> dict[str, list[float]]:
    """Class times predicted at efficiency 1, divided by each class's efficiency, plus the
    class's launch time (``launch``, if given)."""
    out = {}
    for c, values in unit_times.items():
        extra = launch[c] if launch is not None else [0.0] * len(values)
        out[c] = [t / efficiencies.get(c, 1.0) + e for t, e in zip(values, extra, strict=True)]
    return out


def minus(times: ClassTimes, launch: ClassTimes | None) -> dict[str, list[float]]:
    """Measured class times less each class's launch time (``launch`` None: unchanged)."""
    if launch is None:
        return {c: list(v) for c, v in times.items()}
    return {c: [t - e for t, e in zip(v, launch[c], strict=True)] for c, v in times.items()}


def fit_class_efficiencies(
    unit_times: ClassTimes, measured: ClassTimes, measured_total_s: Sequence[float],
    indices: Sequence[int],
) -> dict[str, float]:
    """Per class, the efficiency e minimising Σ_i ((p_i/e − m_i) / T_i)² over ``indices``:
    p = predicted at efficiency 1, m = measured class time, T = measured total of that
    forward pass. Weighting by T (not m) judges each class by its share of the total, so a
    class that is 1% of the time cannot dominate the fit. Closed form with x = 1/e:
    x = Σ p·m/T² / Σ p²/T². A class predicted at zero everywhere keeps efficiency 1.
    """
    if not indices:
        raise WorkloadError("fitting efficiencies needs at least one token count")
    efficiencies = {}
    for op_class, predicted in unit_times.items():
        num = sum(predicted[i] * measured[op_class][i] / measured_total_s[i] ** 2 for i in indices)
        den = sum(predicted[i] ** 2 / measured_total_s[i] ** 2 for i in indices)
        if den > 0 and num > 0:
            efficiencies[op_class] = den / num
    return efficiencies


def interleaved_folds(num_counts: int, num_folds: int = 2) -> list[tuple[list[int], list[int]]]:
    """(train, test) index lists: count i is held out in fold i mod ``num_folds``, so every
    count is predicted once by efficiencies fitted without it, and each fold spans the
    whole range of counts."""
    if num_counts < num_folds:
        raise WorkloadError(
            f"held-out validation needs at least {num_folds} token counts, got {num_counts}")
    folds = []
    for fold in range(num_folds):
        test = [i for i in range(num_counts) if i % num_folds == fold]
        train = [i for i in range(num_counts) if i % num_folds != fold]
        folds.append((train, test))
    return folds


def held_out_predictions(
    unit_times: ClassTimes, measured: ClassTimes, measured_total_s: Sequence[float],
    reference_index: int, num_folds: int = 2, launch: ClassTimes | None = None,
) -> tuple[list[float], list[float], list[dict[str, float]]]:
    """(predicted totals, predicted speedups, efficiencies per fold), each count predicted
    by the fold that held it out. The speedup of count i is that fold's prediction at the
    reference count over its prediction at i."""
    n = len(measured_total_s)
    predicted = [0.0] * n
    speedup = [0.0] * n
    fold_efficiencies = []
    for train, test in interleaved_folds(n, num_folds):
        efficiencies = fit_class_efficiencies(unit_times, minus(measured, launch),
                                              measured_total_s, train)
        fold_efficiencies.append(efficiencies)
        fold_totals = totals(scale_class_times(unit_times, efficiencies, launch))
        for i in test:
            predicted[i] = fold_totals[i]
            speedup[i] = fold_totals[reference_index] / fold_totals[i]
    return predicted, speedup, fold_efficiencies


def speedups(times_s: Sequence[float], reference_index: int) -> list[float]:
    """Speedup of each count against the reference: t[reference] / t[i]."""
    return [times_s[reference_index] / t for t in times_s]


def abs_rel_errors(predicted: Sequence[float], measured: Sequence[float]) -> list[float]:
    return [abs(p - m) / m for p, m in zip(predicted, measured, strict=True)]


def error_figures(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float | None]:
    """Median and maximum absolute relative error (None when there is nothing to judge)."""
    errors = abs_rel_errors(predicted, measured)
    if not errors:
        return {"median_abs_rel_error": None, "max_abs_rel_error": None}
    return {"median_abs_rel_error": statistics.median(errors), "max_abs_rel_error": max(errors)}


def variant_errors(
    predicted_s: Sequence[float], measured_s: Sequence[float], reference_index: int,
    predicted_speedup: Sequence[float] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Error figures of the time and of the speedup against the reference count; the
    reference itself is left out of the speedup figures (its speedup is 1 by definition)."""
    measured_speedup = speedups(measured_s, reference_index)
    if predicted_speedup is None:
        predicted_speedup = speedups(predicted_s, reference_index)
    others = [i for i in range(len(measured_s)) if i != reference_index]
    return {
        "time": error_figures(predicted_s, measured_s),
        "speedup": error_figures([predicted_speedup[i] for i in others],
                                 [measured_speedup[i] for i in others]),
    }


def check_profile_device(profile: HardwareProfile, device_type: str, device_name: str,
                         num_threads: int | None = None) -> None:
    """A one-line ``HardwareError`` unless ``profile`` describes this device: the same
    ``device_type`` ("cpu"/"gpu"), and for a calibrated profile the same device name and
    (CPU) the same intra-op thread count."""
    if profile.device_type != device_type:
        raise HardwareError(
            f"profile {profile.name!r} describes a {profile.device_type} but validation runs "
            f"on a {device_type} ({device_name}); give a profile of this device "
            "(`fpcost calibrate --output FILE`)"
        )
    calibrated_on = profile.provenance.get("device")
    if calibrated_on is not None and calibrated_on != device_name:
        raise HardwareError(
            f"profile {profile.name!r} was calibrated on {calibrated_on!r}, not on this device "
            f"({device_name!r}); run `fpcost calibrate` here"
        )
    calibrated_threads = profile.provenance.get("threads")
    if (device_type == "cpu" and num_threads is not None and calibrated_threads is not None
            and calibrated_threads != str(num_threads)):
        raise HardwareError(
            f"profile {profile.name!r} was calibrated with {calibrated_threads} thread(s) but "
            f"validation runs with --threads {num_threads}; give --threads {calibrated_threads} "
            "or calibrate with the same --threads"
        )


def build_report(
    num_tokens: Sequence[int],
    measured_total_s: Sequence[float],
    measured_class_s: ClassTimes,
    unit_class_s: ClassTimes,
    profile_efficiency: Mapping[str, float],
    baseline_total_s: Sequence[float],
    num_folds: int = 2,
    extra_total_s: Mapping[str, Sequence[float]] | None = None,
    launch_class_s: ClassTimes | None = None,
) -> dict:
    """Rows (one per token count) and summary of a validation run.

    ``unit_class_s`` are the cost model's class times at efficiency 1 on the profile's
    ceilings (busy time, without launches); ``launch_class_s`` each class's launch time
    (added to every prediction, subtracted before fitting); ``profile_efficiency`` the
    profile's own efficiencies (the calibrated prediction, fitted on kernels, never on this
    run); ``baseline_total_s`` the
    uncalibrated prediction; ``extra_total_s`` further named predictions (e.g. the measured
    ceilings at efficiency 1 when the baseline is a datasheet profile). Fitted variants:
    efficiencies fitted on every count (in sample) and on interleaved folds, each count
    judged by the fold that held it out. The reference for speedups is the largest count.
    """
    if not num_tokens:
        raise WorkloadError("validation needs at least one token count")
    reference = max(range(len(num_tokens)), key=lambda i: num_tokens[i])
    profile_class = scale_class_times(unit_class_s, profile_efficiency, launch_class_s)
    predicted = totals(profile_class)
    everything = list(range(len(num_tokens)))
    in_sample_eff = fit_class_efficiencies(unit_class_s, minus(measured_class_s, launch_class_s),
                                           measured_total_s, everything)
    in_sample = totals(scale_class_times(unit_class_s, in_sample_eff, launch_class_s))
    variants = {
        "uncalibrated": variant_errors(baseline_total_s, measured_total_s, reference),
        "profile": variant_errors(predicted, measured_total_s, reference),
        "fitted_in_sample": variant_errors(in_sample, measured_total_s, reference),
    }
    extra_total_s = dict(extra_total_s or {})
    for name, predicted_extra in extra_total_s.items():
        variants[name] = variant_errors(predicted_extra, measured_total_s, reference)
    held_out = held_out_speedup = None
    fold_eff: list[dict[str, float]] = []
    if len(num_tokens) >= num_folds:
        held_out, held_out_speedup, fold_eff = held_out_predictions(
            unit_class_s, measured_class_s, measured_total_s, reference, num_folds, launch_class_s)
        variants["fitted_held_out"] = variant_errors(held_out, measured_total_s, reference,
                                                     held_out_speedup)
    predicted_speedup = speedups(predicted, reference)
    measured_speedup = speedups(measured_total_s, reference)
    rows = []
    for i, n in enumerate(num_tokens):
        rows.append({
            "num_tokens": n,
            "measured_s": measured_total_s[i],
            "predicted_s": predicted[i],
            "ratio": predicted[i] / measured_total_s[i],
            "measured_speedup": measured_speedup[i],
            "predicted_speedup": predicted_speedup[i],
            "uncalibrated_predicted_s": baseline_total_s[i],
            "in_sample_predicted_s": in_sample[i],
            "held_out_predicted_s": None if held_out is None else held_out[i],
            "held_out_predicted_speedup": None if held_out_speedup is None else held_out_speedup[i],
            **{f"{name}_predicted_s": values[i] for name, values in extra_total_s.items()},
            "measured_class_s": {c: measured_class_s[c][i] for c in OPERATOR_CLASSES},
            "predicted_class_s": {c: profile_class[c][i] for c in OPERATOR_CLASSES},
        })
    classes = {}
    # Shares of the summed class times (the split comes from hooked passes, whose total
    # differs slightly from the un-hooked one).
    measured_sum = sum(sum(measured_class_s[c]) for c in OPERATOR_CLASSES)
    predicted_sum = sum(predicted)
    for c in OPERATOR_CLASSES:
        classes[c] = {
            "measured_share": sum(measured_class_s[c]) / measured_sum,
            "predicted_share": sum(profile_class[c]) / predicted_sum,
            "time": error_figures(profile_class[c], measured_class_s[c])
            if all(m > 0 for m in measured_class_s[c]) else error_figures([], []),
            "profile_efficiency": profile_efficiency.get(c, 1.0),
            "fitted_efficiency": in_sample_eff.get(c, 1.0),
        }
    return {
        "rows": rows,
        "summary": {
            "reference_num_tokens": num_tokens[reference],
            **variants["profile"],
            "variants": variants,
            "classes": classes,
            "efficiencies": {
                "profile": dict(profile_efficiency),
                "fitted_in_sample": in_sample_eff,
                "fitted_held_out_folds": fold_eff,
            },
            "num_folds": num_folds,
        },
    }

"""Validation arithmetic (pure, no torch): class predictions, fitted efficiencies, folds,
error figures, the report's shape, and the profile-device check."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fpcost.costmodel.calibration import calibrated
from fpcost.costmodel.errors import HardwareError, WorkloadError
from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.hardware import OPERATOR_CLASSES
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import LLMSpec, ModelSpec
from fpcost.costmodel.validation import (
    build_report,
    check_profile_device,
    error_figures,
    fit_class_efficiencies,
    held_out_predictions,
    interleaved_folds,
    predicted_class_times_s,
    prompt_workload,
    speedups,
    totals,
    variant_errors,
    without_efficiency,
)
from fpcost.hardware_profiles import load_profile

TINY = ModelSpec("tiny", "llm", LLMSpec(hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=4, intermediate_size=704, vocab_size=1000))
COUNTS = [16, 32, 64, 128, 256, 512]
TRUTH = {"matmul": 0.8, "attention": 1.6, "vector": 0.25, "norm": 0.5}


def unit_times(a6000):
    return predicted_class_times_s(TINY, COUNTS, a6000, QuantPlan(), "fpcost", True)


def test_class_times_sum_to_the_estimate(a6000):
    times = unit_times(a6000)
    assert set(times) == set(OPERATOR_CLASSES)
    for i, n in enumerate(COUNTS):
        total = estimate(TINY, prompt_workload(n), a6000, QuantPlan(), "fpcost", True,
                         stages=("prefill",)).stage_totals("prefill").time_s
        assert totals(times)[i] == pytest.approx(total)


def test_efficiencies_scale_class_times(a6000):
    unit = unit_times(a6000)
    scaled = predicted_class_times_s(TINY, COUNTS, calibrated(a6000, TRUTH, "t"), QuantPlan(),
                                     "fpcost", True)
    for c in OPERATOR_CLASSES:
        assert scaled[c] == pytest.approx([t / TRUTH[c] for t in unit[c]])
    assert without_efficiency(calibrated(a6000, TRUTH, "t")).efficiency == {}


def synthetic_measurements(unit):
    measured = {c: [t / TRUTH[c] for t in unit[c]] for c in OPERATOR_CLASSES}
    return measured, totals(measured)


def test_fit_recovers_class_efficiencies(a6000):
    unit = unit_times(a6000)
    measured, total = synthetic_measurements(unit)
    fitted = fit_class_efficiencies(unit, measured, total, range(len(COUNTS)))
    assert fitted == pytest.approx(TRUTH, rel=1e-9)
    with pytest.raises(WorkloadError):
        fit_class_efficiencies(unit, measured, total, [])


def test_fit_weights_errors_by_the_total():
    # One class, p = [1, 1], m = [1, 2], T = [1, 4]: x = (1 + 2/16) / (1 + 1/16) = 18/17.
    fitted = fit_class_efficiencies({"matmul": [1.0, 1.0]}, {"matmul": [1.0, 2.0]}, [1.0, 4.0], [0, 1])
    assert fitted["matmul"] == pytest.approx(17 / 18)


@given(st.integers(2, 40), st.integers(2, 5))
def test_folds_hold_out_every_count_once(num_counts, num_folds):
    if num_counts < num_folds:
        with pytest.raises(WorkloadError):
            interleaved_folds(num_counts, num_folds)
        return
    folds = interleaved_folds(num_counts, num_folds)
    held = sorted(i for _, test in folds for i in test)
    assert held == list(range(num_counts))
    for train, test in folds:
        assert not set(train) & set(test) and sorted(train + test) == list(range(num_counts))


def test_held_out_is_exact_when_the_model_is(a6000):
    unit = unit_times(a6000)
    measured, total = synthetic_measurements(unit)
    predicted, speedup, folds = held_out_predictions(unit, measured, total, len(COUNTS) - 1)
    assert predicted == pytest.approx(total)
    assert speedup == pytest.approx(speedups(total, len(COUNTS) - 1))
    assert len(folds) == 2 and all(f == pytest.approx(TRUTH) for f in folds)


def test_error_figures_by_hand():
    figures = error_figures([1.1, 0.9, 2.0], [1.0, 1.0, 2.0])  # |err| = 0.1, 0.1, 0
    assert figures["median_abs_rel_error"] == pytest.approx(0.1)
    assert figures["max_abs_rel_error"] == pytest.approx(0.1)
    assert error_figures([], []) == {"median_abs_rel_error": None, "max_abs_rel_error": None}


def test_speedup_errors_leave_out_the_reference():
    assert speedups([1.0, 2.0, 4.0], 2) == [4.0, 2.0, 1.0]
    # Predicted twice the measured everywhere: every time is 100% off, every speedup exact.
    figures = variant_errors([2.0, 4.0, 8.0], [1.0, 2.0, 4.0], 2)
    assert figures["time"]["median_abs_rel_error"] == pytest.approx(1.0)
    assert figures["speedup"] == {"median_abs_rel_error": 0.0, "max_abs_rel_error": 0.0}
    # Speedups at 16 vs measured 8 (100% off) and 2 vs 2: the reference's own 1 is not counted.
    figures = variant_errors([1.0, 8.0, 16.0], [1.0, 4.0, 8.0], 2)
    assert figures["speedup"]["max_abs_rel_error"] == pytest.approx(1.0)
    assert figures["speedup"]["median_abs_rel_error"] == pytest.approx(0.5)


def test_report_shape(a6000):
    unit = unit_times(a6000)
    measured, total = synthetic_measurements(unit)
    report = build_report(COUNTS, total, measured, unit, TRUTH, totals(unit))
    assert [row["num_tokens"] for row in report["rows"]] == COUNTS
    for row in report["rows"]:
        assert {"num_tokens", "predicted_s", "measured_s", "ratio", "predicted_speedup",
                "measured_speedup", "held_out_predicted_s", "uncalibrated_predicted_s"} <= set(row)
        assert row["ratio"] == pytest.approx(1.0)
    summary = report["summary"]
    assert summary["reference_num_tokens"] == 512
    assert summary["time"]["median_abs_rel_error"] == pytest.approx(0.0, abs=1e-12)
    assert set(summary["variants"]) == {"uncalibrated", "profile", "fitted_in_sample", "fitted_held_out"}
    for figures in summary["variants"].values():
        for key in ("time", "speedup"):
            assert set(figures[key]) == {"median_abs_rel_error", "max_abs_rel_error"}
    assert summary["variants"]["uncalibrated"]["time"]["median_abs_rel_error"] > 0.1
    shares = sum(summary["classes"][c]["measured_share"] for c in OPERATOR_CLASSES)
    assert shares == pytest.approx(1.0)


def test_report_with_one_count_has_no_held_out(a6000):
    unit = predicted_class_times_s(TINY, [64], a6000, QuantPlan(), "fpcost", True)
    measured = {c: list(v) for c, v in unit.items()}
    report = build_report([64], totals(unit), measured, unit, {}, totals(unit))
    assert "fitted_held_out" not in report["summary"]["variants"]
    assert report["summary"]["speedup"]["median_abs_rel_error"] is None
    with pytest.raises(WorkloadError):
        build_report([], [], {}, {}, {}, [])


def test_profile_from_another_device_is_rejected(a6000, tmp_path):
    with pytest.raises(HardwareError, match="describes a gpu but validation runs on a cpu"):
        check_profile_device(a6000, "cpu", "AMD EPYC")
    check_profile_device(a6000, "gpu", "NVIDIA RTX A6000")  # datasheet profiles carry no device
    cpu = load_profile(_cpu_profile(tmp_path))
    check_profile_device(cpu, "cpu", "Test CPU")
    with pytest.raises(HardwareError, match="was calibrated on 'Test CPU'"):
        check_profile_device(cpu, "cpu", "Other CPU")


def _cpu_profile(tmp_path):
    from fpcost.costmodel.calibration import build_profile
    from fpcost.hardware_profiles import write_profile
    from tests.test_calibration import measurements

    return write_profile(build_profile(measurements(), "test-cpu"), tmp_path / "cpu.toml")

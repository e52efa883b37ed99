"""Calibration arithmetic (pure, no torch): rates from timings, the profile built from
measurements, and the efficiency fits. Numbers are hand-computed."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fpcost.costmodel.calibration import (
    CeilingMeasurements,
    MatmulSample,
    VectorSample,
    build_profile,
    calibrated,
    gemm_ceiling_without_weights,
    shortfall_notes,
)
from fpcost.costmodel.errors import HardwareError
from fpcost.costmodel.hardware import OPERATOR_CLASSES
from fpcost.costmodel.kernel_fit import (
    KERNEL_OP_CLASSES,
    case_launches,
    case_time_s,
    fit_efficiency,
    fit_efficiency_and_rate,
    fit_kernel_efficiencies,
    fit_kernel_profile,
    kernel_suite,
)
from fpcost.costmodel.quant import QuantPlan
from fpcost.hardware_profiles import load_profile, write_profile


def measurements(device_type="cpu", matmul=None, vector=None):
    matmul = matmul if matmul is not None else (
        MatmulSample("float32", 1000, 1000, 1000, 0.1),  # 2e9 FLOP / 0.1 s = 2e10 FLOP/s
        MatmulSample("float32", 10, 1000, 1000, 0.002),  # 2e7 FLOP / 2 ms = 1e10 FLOP/s
        MatmulSample("int8", 100, 100, 100, 1e-3),  # 2e6 / 1e-3 = 2e9 OP/s
    )
    vector = vector if vector is not None else (VectorSample("float32", 1000, 2, 1e-6),)  # 2e9
    return CeilingMeasurements(
        device_type=device_type, device_name="Test CPU", matmul=tuple(matmul),
        vector=tuple(vector), copy_bytes=1e9, copy_time_s=0.1, memory_bytes=16e9,
        onchip_buffer_bytes=1e6, onchip_buffer_source="test: 1 MB",
        provenance={"device": "Test CPU", "threads": "2"},
    )


def this_cpu_profile(directory):
    """``directory``/this-cpu.toml: a profile built from ``measurements()`` but named for
    this machine's CPU at one thread, so commands that check a profile against the device
    they run on (generate, validate) accept it."""
    from fpcost.pruner.timing import cpu_name

    here = {"device": cpu_name(), "threads": "1"}
    measured = replace(measurements(), device_name=cpu_name(), provenance=here)
    return write_profile(build_profile(measured, "this-cpu"), directory / "this-cpu.toml")


def test_rates_from_timings():
    sample = MatmulSample("float32", 1000, 1000, 1000, 0.1)
    assert sample.flops == 2e9  # 2 FLOPs per multiply-add
    assert sample.flops_per_s == pytest.approx(2e10)
    assert sample.shape == "1000x1000x1000"
    assert VectorSample("float32", 1000, 2, 1e-6).flops_per_s == pytest.approx(2e9)
    # A copy reads and writes every byte: 1e9 B in 0.1 s moves 2e10 B/s.
    assert measurements().copy_bandwidth_bytes_per_s == pytest.approx(2e10)


def test_cpu_profile_from_measurements():
    profile = build_profile(measurements(), "test-cpu")
    assert profile.device_type == "cpu"
    assert profile.tensor_fp32_flops_per_s == pytest.approx(2e10)  # the best shape: the peak
    assert profile.tensor_int8_ops_per_s == pytest.approx(2e9)
    assert profile.vector_fp32_flops_per_s == pytest.approx(2e9)
    assert profile.hbm_bandwidth_bytes_per_s == pytest.approx(2e10)
    assert profile.efficiency == {}
    # No half-precision GEMM measured: the FP32 rate stands in, and the source says so.
    assert profile.tensor_fp16_flops_per_s == pytest.approx(2e10)
    assert profile.sources["tensor_fp16_flops_per_s"].startswith("not measured")
    assert profile.sources["vector_fp16_flops_per_s"].startswith("not measured")
    assert profile.sources["tensor_int8_ops_per_s"].startswith("measured")
    assert profile.provenance["device"] == "Test CPU"


def test_gpu_profile_puts_fp32_gemm_on_the_vector_units():
    profile = build_profile(measurements("gpu", matmul=(
        MatmulSample("float16", 1000, 1000, 1000, 0.001),  # 2e12
        MatmulSample("float32", 1000, 1000, 1000, 0.01),  # 2e11
    )), "test-gpu")
    assert profile.tensor_fp32_flops_per_s is None
    assert profile.vector_fp32_flops_per_s == pytest.approx(2e11)
    assert profile.tensor_fp16_flops_per_s == pytest.approx(2e12)
    assert profile.peak_flops_per_s("tensor", "fp32") == pytest.approx(2e11)


def test_profile_needs_a_float_matmul():
    with pytest.raises(HardwareError, match="no float32 or half-precision matmul"):
        build_profile(measurements(matmul=(MatmulSample("int8", 100, 100, 100, 1e-3),)), "x")


def test_calibrated_profile_round_trips_through_toml(tmp_path):
    profile = calibrated(build_profile(measurements(), "test-cpu"),
                         {"matmul": 0.8, "attention": 1.3, "vector": 0.4, "norm": 0.5}, "test fit")
    profile = replace(profile, provenance={**profile.provenance, **shortfall_notes(measurements())})
    path = write_profile(profile, tmp_path / "cpu.toml")
    loaded = load_profile(path)
    assert loaded.efficiency == {"matmul": 0.8, "attention": 1.3, "vector": 0.4, "norm": 0.5}
    assert loaded.tensor_fp32_flops_per_s == pytest.approx(2e10)
    assert loaded.sources["efficiency.norm"] == "test fit"
    assert loaded.provenance["matmul.float32.10x1000x1000"].endswith("= 0.50 of peak")


def test_fit_efficiency_closed_form():
    # p/m = [0.5, 1.0]: x = 1.5 / 1.25 = 1.2, e = 1/1.2.
    assert fit_efficiency([1.0, 2.0], [2.0, 2.0]) == pytest.approx(1 / 1.2)


@given(st.floats(0.05, 20.0), st.lists(st.floats(1e-6, 10.0), min_size=1, max_size=8))
def test_fit_efficiency_recovers_an_exact_factor(efficiency, predicted):
    measured = [p / efficiency for p in predicted]
    assert fit_efficiency(predicted, measured) == pytest.approx(efficiency, rel=1e-9)


@pytest.mark.parametrize("predicted, measured", [([], []), ([1.0], [1.0, 2.0]), ([0.0], [1.0])])
def test_fit_efficiency_rejects_bad_input(predicted, measured):
    with pytest.raises(HardwareError):
        fit_efficiency(predicted, measured)


def test_kernel_suite_covers_every_class():
    for device_type in ("cpu", "gpu"):
        cases = kernel_suite(device_type)
        assert {c.op_class for c in cases} == set(OPERATOR_CLASSES)
        quant = QuantPlan.uniform(32)
        for case in cases:
            op = case.op(quant, 1e6)
            assert op.name == case.op_name and op.op_class == KERNEL_OP_CLASSES[case.op_name]
            assert op.count == 1
    with pytest.raises(HardwareError):
        kernel_suite("tpu")


@pytest.mark.parametrize("launch_s", [0.0, 2e-6])
def test_fit_kernel_efficiencies_recovers_class_factors(launch_s):
    """Synthetic module times = the runtime kernels' busy time / a known efficiency, plus
    the GEMM weights at a known weight bandwidth, plus the launches: the fit recovers the
    efficiencies and the bandwidth once the launches are subtracted."""
    profile = build_profile(measurements(), "test-cpu")
    quant = QuantPlan.uniform(32)
    truth = {"matmul": 0.8, "attention": 0.7, "vector": 0.3, "norm": 0.45}
    truth_profile = calibrated(profile, truth, "truth", weight_rate=12e9, sdpa_call_s=3e-5)
    cases = kernel_suite("cpu")
    measured = [case_time_s(c, truth_profile, quant, with_launch=False)
                + launch_s * case_launches(c, quant, profile.onchip_buffer_bytes, device_type="cpu")
                for c in cases]
    noisy_profile = calibrated(profile, {"matmul": 9.0}, "x", launch_s=1e-3, weight_rate=1.0)
    fitted, weight_rate, sdpa_call_s = fit_kernel_profile(cases, measured, noisy_profile, quant,
                                                          launch_s)
    assert fitted == pytest.approx(truth, rel=1e-9)
    assert weight_rate == pytest.approx(12e9, rel=1e-9)
    assert sdpa_call_s == pytest.approx(3e-5, rel=1e-9)
    assert fit_kernel_efficiencies(cases, measured, noisy_profile, quant, launch_s) == fitted


def test_gemm_ceiling_without_its_weight_read_by_hand():
    """The FP32 peak (1000³ in 0.1 s) read 4e6 B of weights: at 4e8 B/s that is 10 ms, so
    the compute rate is 2e9 FLOP / 90 ms; a weight read of half the call or more, or a GPU
    profile, leaves the ceiling as measured."""
    measured = measurements()
    profile = build_profile(measured, "test-cpu")
    assert profile.tensor_fp32_flops_per_s == pytest.approx(2e10)
    corrected = gemm_ceiling_without_weights(profile, measured, 4e8)
    assert corrected.tensor_fp32_flops_per_s == pytest.approx(2e9 / 0.09)
    assert "less its 1000x1000 fp32 weight read" in corrected.sources["tensor_fp32_flops_per_s"]
    assert gemm_ceiling_without_weights(profile, measured, 4e7) is profile
    gpu = build_profile(measurements("gpu"), "test-gpu")
    assert gemm_ceiling_without_weights(gpu, measurements("gpu"), 4e8) is gpu


def test_fit_efficiency_and_rate_by_hand():
    """t = p / 0.5 + w / 10: (p, w, t) = (1, 10, 3), (2, 10, 5), (1, 30, 5) give back 0.5 and
    10; measurements no combination fits with positive values are refused."""
    efficiency, rate = fit_efficiency_and_rate([1, 2, 1], [10, 10, 30], [3, 5, 5])
    assert (efficiency, rate) == (pytest.approx(0.5), pytest.approx(10))
    # t = p / 1.25 + w / 10 fits best beyond the ceiling: held at efficiency 1, y refitted
    efficiency, rate = fit_efficiency_and_rate([1, 2, 1], [10, 10, 30], [1.8, 2.6, 3.8])
    assert efficiency == 1.0
    rows = [(1 / 1.8, 10 / 1.8), (2 / 2.6, 10 / 2.6), (1 / 3.8, 30 / 3.8)]
    y = sum(w * (1 - p) for p, w in rows) / sum(w * w for _, w in rows)
    assert rate == pytest.approx(1 / y)
    with pytest.raises(HardwareError, match="both must be positive"):
        fit_efficiency_and_rate([1, 2], [10, 10], [3, 1])
    with pytest.raises(HardwareError, match="do not separate"):
        fit_efficiency_and_rate([1, 2], [10, 20], [3, 6])  # w ∝ p: singular


def test_fit_kernel_efficiencies_refuses_a_module_faster_than_its_launches():
    profile = build_profile(measurements(), "test-cpu")
    quant = QuantPlan.uniform(32)
    cases = kernel_suite("cpu")
    measured = [1e-6] * len(cases)
    with pytest.raises(HardwareError, match="less than its launches"):
        fit_kernel_efficiencies(cases, measured, profile, quant, launch_s=1e-3)


def test_cpu_profile_records_cache_bandwidth_and_launch():
    profile = build_profile(replace(measurements(), cache_bytes=32e6, cache_source="test: 32 MB"),
                            "test-cpu")
    # best float32 addcmul: 2e9 FLOP/s at 2 FLOP/element = 1e9 elements/s x 4 operands x 4 B
    assert profile.cache_bandwidth_bytes_per_s == pytest.approx(16e9)
    assert profile.cache_bytes == 32e6
    with_launch = calibrated(profile, {"matmul": 0.5}, "fit", launch_s=3e-6, launch_how="tiny")
    assert with_launch.kernel_launch_s == 3e-6 and with_launch.sources["kernel_launch_s"] == "tiny"

"""Noise detectors on synthetic timings, the re-measure-then-refuse loops with scripted
clocks, and the one-line "too noisy" and thread-mismatch errors. No real timing asserted."""

import math

import pytest

from fpcost.costmodel.errors import HardwareError
from fpcost.costmodel.noise import (
    Dispersion,
    TooNoisyError,
    efficiencies_out_of_range,
    high_spread,
    non_monotonic,
    too_noisy,
)
from fpcost.costmodel.validation import check_profile_device


def test_dispersion_by_hand():
    d = Dispersion.of([1.0, 1.2, 1.1, 3.0, 1.05])
    assert (d.min_s, d.median_s, d.max_s, d.num_passes) == (1.0, 1.1, 3.0, 5)
    assert d.spread == pytest.approx(0.1) and d.range_spread == pytest.approx(2.0)
    with pytest.raises(TooNoisyError, match="too noisy: a timed pass took -1.0 s"):
        Dispersion.of([1.0, -1.0])
    with pytest.raises(TooNoisyError):
        Dispersion.of([1.0, math.nan])


def test_high_spread_on_synthetic_passes():
    quiet = Dispersion.of([1.00, 1.01, 1.02, 1.01, 1.03])
    busy = Dispersion.of([1.0, 1.9, 2.1, 1.5, 1.0])  # a busy process on the other core
    one_outlier = Dispersion.of([1.0, 1.01, 1.02, 5.0, 1.01])  # one bad pass: the median holds
    assert high_spread({"q": quiet, "b": busy, "o": one_outlier}) == ["b"]
    assert high_spread({"b": busy}, max_spread=1.0) == []


def test_descheduled_process_is_caught_even_with_steady_passes():
    """A busy job on every core slows every pass alike: no spread, but the process got only
    half of its core (CPU time / wall time)."""
    steady_but_shared = Dispersion.of([2.0, 2.01, 2.02], occupancies=[0.5, 0.52, 0.49])
    assert steady_but_shared.spread < 0.01
    assert steady_but_shared.problem() == "the process held only 50% of its core(s)"
    assert high_spread({"s": steady_but_shared}) == ["s"]
    assert Dispersion.of([2.0, 2.01], occupancies=[0.97, 0.99]).problem() is None


def test_non_monotonic_on_synthetic_times():
    counts = [64, 128, 256, 512]
    assert non_monotonic(counts, [1.0, 2.0, 4.0, 8.0]) == []
    assert non_monotonic(counts, [1.0, 2.0, 1.5, 8.0]) == [2]
    assert non_monotonic(counts, [1.0, 1.0, 0.99, 8.0]) == []  # within 3%
    # a slow outlier at a small count flags every later count below it
    assert non_monotonic(counts, [5.0, 2.0, 4.0, 8.0]) == [1, 2]
    # given out of order, indices still refer to the inputs
    assert non_monotonic([256, 64, 128], [1.0, 1.0, 2.0]) == [0]


def test_efficiencies_outside_zero_one():
    assert efficiencies_out_of_range({"matmul": 0.9, "vector": 1.0}) == []
    assert efficiencies_out_of_range(
        {"matmul": 1.3, "vector": 0.0, "norm": math.inf, "attention": 0.5}) == ["matmul", "vector", "norm"]


def test_too_noisy_is_one_line():
    error = too_noisy("calibration", [f"problem {i}" for i in range(5)], "rerun")
    message = str(error)
    assert "\n" not in message and message.startswith("too noisy: calibration")
    assert "problem 0; problem 1; problem 2; and 2 more" in message and message.endswith("rerun")


def test_thread_mismatch_is_an_error():
    from fpcost.costmodel.calibration import build_profile
    from tests.test_calibration import measurements

    profile = build_profile(measurements(), "cpu")  # provenance: threads 2 on "Test CPU"
    check_profile_device(profile, "cpu", "Test CPU", 2)
    with pytest.raises(HardwareError, match="calibrated with 2 thread.*--threads 1") as info:
        check_profile_device(profile, "cpu", "Test CPU", 1)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------
# The torch-side loops, driven by scripted clocks

torch = pytest.importorskip("torch")


class ScriptedTimer:
    """Marks come in (start, end) pairs; each pass lasts the next scripted duration."""

    name = "scripted"

    def __init__(self, durations):
        self.durations = list(durations)
        self.now = 0.0
        self.starting = True

    def mark(self):
        if not self.starting:
            self.now += self.durations.pop(0) if self.durations else 1.0
        self.starting = not self.starting
        return self.now

    def elapsed_s(self, start, end):
        return end - start

    def synchronize(self):
        pass


def tiny_device(timer):
    from fpcost.pruner.timing import Device

    return Device("cpu", torch.device("cpu"), timer, "scripted CPU", 1)



def tiny_llm():
    from fpcost.costmodel.spec import LLMSpec

    return LLMSpec(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                   num_key_value_heads=2, intermediate_size=32, vocab_size=64, name="tiny")


def test_prefills_remeasured_then_accepted():
    from fpcost.pruner.validate import measure_prefills

    # counts 4 and 8, 3 rounds interleaved: count 8's passes spread (1, 3, 3) → re-measured
    # (3 passes of 2 s): accepted; then one hooked round
    timer = ScriptedTimer([1, 1, 1, 3, 1, 3] + [2, 2, 2])
    results = measure_prefills(tiny_llm(), "float32", tiny_device(timer), [4, 8], warmup=0,
                               repeats=3, hooked_repeats=1, statistic="min")
    assert results[0].total_repeats_s == (1, 1, 1)
    assert results[1].total_repeats_s == (2, 2, 2)


def test_prefills_refused_when_still_noisy():
    from fpcost.pruner.validate import measure_prefills

    # count 8 is always timed faster than count 4: non-monotonic every time
    timer = ScriptedTimer([4, 1] * 3 + [4, 1] * 20)
    with pytest.raises(TooNoisyError) as info:
        measure_prefills(tiny_llm(), "float32", tiny_device(timer), [4, 8], warmup=0, repeats=3,
                         hooked_repeats=1, statistic="min", retries=1)
    assert "8 tokens timed faster than fewer tokens" in str(info.value)


def test_cli_prints_one_too_noisy_line(capsys, tmp_path, monkeypatch):
    from fpcost.cli.main import main
    from fpcost.costmodel.calibration import build_profile
    from fpcost.hardware_profiles import write_profile
    from fpcost.pruner import validate as validate_module
    from fpcost.pruner.timing import cpu_name
    from tests.test_calibration import measurements

    measured = measurements()
    measured = type(measured)(**{**measured.__dict__, "device_name": cpu_name(),
                                 "provenance": {"device": cpu_name(), "threads": "1"}})
    profile = write_profile(build_profile(measured, "this-cpu"), tmp_path / "cpu.toml")
    monkeypatch.setattr(validate_module, "prefill_problems",
                        lambda *args: (["64 tokens: median pass 80% above the fastest"], [0]))
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 1, '
                      '"num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 64}')
    code = main(["validate", "--profile", str(profile), "--config", str(config), "--tokens", "4,8",
                 "--warmup", "0", "--repeats", "1", "--hooked-repeats", "1", "--retries", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert err[0].startswith("Error: too noisy: the prefill timings stayed unstable")
    # a 2-thread validation of a 1-thread profile is refused before any timing
    code = main(["validate", "--profile", str(profile), "--config", str(config), "--tokens", "4",
                 "--threads", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "calibrated with 1 thread(s)" in err


def test_calibration_dispersion_with_mocked_cuda_events():
    from fpcost.pruner.calibrate import timed_call_s
    from fpcost.pruner.timing import resolve_device
    from tests.test_timing import fake_cuda

    device = resolve_device("cuda", cuda=fake_cuda())
    dispersions = {}
    seconds = timed_call_s(device, lambda: None, 0, 3, None, "median", dispersions, "k")
    assert seconds == pytest.approx(0.01)  # each pass: two event records 10 ms apart
    assert dispersions["k"].num_passes == 3 and dispersions["k"].spread == pytest.approx(0.0)

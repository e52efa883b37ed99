"""Invariants of served runs: every request accounted for, Little's law, and monotonicity
(more bandwidth or fewer visual tokens never lower the throughput at a fixed rate)."""

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpcost.costmodel.pipeline import make_workload
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.serve import poisson_requests
from fpcost.costmodel.serve.capacity import ServerSettings
from fpcost.costmodel.serve.run import Server

from .helpers import settings_for

FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURE_OK)
@given(rate=st.floats(0.5, 200), n=st.integers(1, 80), output=st.integers(1, 300),
       chunked=st.booleans(), budget=st.sampled_from([600, 2048, 8192]),
       seqs=st.integers(1, 64), seed=st.integers(0, 2**32))
def test_every_request_is_accounted_for(a6000, rate, n, output, chunked, budget, seqs, seed):
    spec = get_preset("llava-1.5-7b")
    server = Server(spec, a6000, settings_for(a6000),
                    ServerSettings(seqs, budget, chunked))
    requests = poisson_requests([make_workload(spec, output_tokens=output)], rate, n, seed)
    summary = server.run(requests).summary
    assert summary["num_completed"] + summary["num_rejected"] == summary["num_requests"] == n
    if not chunked and budget < 616:  # the 616-token prompt cannot run unchunked
        assert summary["num_rejected"] == n
    else:
        assert summary["num_completed"] == n
        assert summary["ttft_s"]["p50"] <= summary["latency_s"]["p50"]


def test_littles_law_on_a_long_overloaded_run(a6000):
    """5,000 requests past saturation (queueing, preemptions): the time-averaged requests in
    the system, integrated by the event loop, equals throughput × mean latency."""
    spec = get_preset("llava-1.5-7b")
    server = Server(spec, a6000, settings_for(a6000))
    summary = server.run(poisson_requests([make_workload(spec, output_tokens=256)], 12, 5000, 3)).summary
    assert summary["num_preemptions"] > 0 and summary["mean_requests_in_system"] > 100
    assert summary["littles_law"]["relative_error"] < 1e-9


@settings(max_examples=8, deadline=None, suppress_health_check=FIXTURE_OK)
@given(rate=st.floats(1, 60), factor=st.floats(1.0, 4.0), seed=st.integers(0, 1000))
def test_more_bandwidth_never_lowers_throughput(a6000, rate, factor, seed):
    spec = get_preset("llava-1.5-7b")
    faster = replace(a6000, hbm_bandwidth_bytes_per_s=a6000.hbm_bandwidth_bytes_per_s * factor)
    requests = poisson_requests([make_workload(spec, output_tokens=64)], rate, 300, seed)
    slow = Server(spec, a6000, settings_for(a6000)).run(requests).summary
    fast = Server(spec, faster, settings_for(faster)).run(requests).summary
    assert fast["throughput_requests_per_s"] >= slow["throughput_requests_per_s"] * (1 - 1e-12)


@settings(max_examples=8, deadline=None, suppress_health_check=FIXTURE_OK)
@given(rate=st.floats(1, 60), keep=st.floats(0.05, 1.0), seed=st.integers(0, 1000))
def test_fewer_visual_tokens_never_lower_throughput(a6000, rate, keep, seed):
    spec = get_preset("llava-1.5-7b")
    server = Server(spec, a6000, settings_for(a6000))
    full = make_workload(spec, output_tokens=64)
    kept = make_workload(spec, output_tokens=64, keep_ratio=keep)
    base = server.run(poisson_requests([full], rate, 300, seed)).summary
    pruned = server.run(poisson_requests([kept], rate, 300, seed)).summary
    assert pruned["throughput_requests_per_s"] >= base["throughput_requests_per_s"] * (1 - 1e-12)

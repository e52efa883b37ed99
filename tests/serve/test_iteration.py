"""Iteration costs: the fast path equals the op-by-op path, and with one request at a time
the simulated TTFT and latency equal ``fpcost estimate``'s."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.pipeline import make_workload
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.serve.capacity import ServerSettings
from fpcost.costmodel.serve.iteration import (
    IterationBatch,
    IterationCost,
    PrefillChunk,
    iteration_ops,
    ops_time_s,
)
from fpcost.costmodel.serve.requests import Request
from fpcost.costmodel.serve.run import Server
from fpcost.costmodel.workload import Workload

from .helpers import settings_for

MODELS = ("llava-1.5-7b", "llava-next-7b", "video-llava-7b", "qwen2-vl-7b")
chunks = st.builds(lambda q, cached, emits: PrefillChunk(q, q + cached, emits),
                   st.integers(1, 3000), st.integers(0, 5000), st.booleans())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=st.sampled_from(MODELS[:2]), flash=st.booleans(),
       accounting=st.sampled_from(["fpcost", "llm-viewer"]),
       decodes=st.lists(st.integers(1, 20_000), max_size=40),
       prefills=st.lists(chunks, max_size=3), new=st.integers(0, 3))
def test_fast_path_equals_op_by_op(a6000, model, flash, accounting, decodes, prefills, new):
    """Closed-form decode attention and the caches equal timing every operator."""
    spec = get_preset(model)
    s = settings_for(a6000, flash_attention=flash, accounting=accounting)
    vision = ((make_workload(spec, output_tokens=2), new),) if new else ()
    batch = IterationBatch(tuple(decodes), tuple(prefills), vision)
    if not batch.num_tokens and not vision:
        return
    reference = ops_time_s(iteration_ops(spec, batch, s), a6000)
    assert IterationCost(spec, s, a6000).time_s(batch) == pytest.approx(reference, rel=1e-12)


def test_decode_attention_is_one_batched_kernel(a6000):
    """Two decodes cost one attention kernel over both contexts (sums of each one's FLOPs and
    bytes), not two kernels."""
    spec = get_preset("llava-1.5-7b")
    s = settings_for(a6000)
    ops = iteration_ops(spec, IterationBatch((100, 300)), s)
    single = [iteration_ops(spec, IterationBatch((kv,)), s) for kv in (100, 300)]
    fused = [op for op in ops if op.name == "fused_attention"]
    parts = [[op for op in one if op.name == "fused_attention"][0] for one in single]
    assert len(fused) == 1
    assert fused[0].kv_read_bytes == parts[0].kv_read_bytes + parts[1].kv_read_bytes


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=st.sampled_from(MODELS), flash=st.booleans(), keep=st.sampled_from([None, 0.5, 0.1]),
       output=st.integers(1, 40), bits=st.sampled_from([16, 4]), chunked=st.booleans())
def test_one_request_at_a_time_equals_estimate(a100, model, flash, keep, output, bits, chunked):
    """Requests 1000 s apart never share an iteration: each one's TTFT and latency are the
    estimate's, to float rounding."""
    spec = get_preset(model)
    quant = QuantPlan.uniform(bits)
    s = settings_for(a100, quant=quant, flash_attention=flash)
    workload = make_workload(spec, keep_ratio=keep, output_tokens=output)
    server = Server(spec, a100, s, ServerSettings(chunked_prefill=chunked))
    run = server.run([Request(1000.0 * i, workload) for i in range(3)])
    expected = estimate(spec, workload, a100, quant, flash_attention=flash)
    r = run.result
    for a, first, end in zip(r.arrival_s, r.first_token_s, r.completion_s, strict=True):
        assert first - a == pytest.approx(expected.ttft_s, rel=1e-9)
        assert end - a == pytest.approx(expected.end_to_end().time_s, rel=1e-9)
    assert run.summary["mean_batch_size"] == 1


def test_a_new_request_runs_its_vision_side_once(a6000):
    """The vision stages of a request whose prefill starts; two identical requests admitted
    together run as one batch of two (weights read once: cheaper than twice one)."""
    spec = get_preset("llava-1.5-7b")
    s = settings_for(a6000)
    cost = IterationCost(spec, s, a6000)
    w = Workload(576, 40, 1, 2)
    assert cost.vision_time_s(w, 2) < 2 * cost.vision_time_s(w, 1)
    assert {op.stage for op in iteration_ops(spec, IterationBatch((), (), ((w, 1),)), s)} == {
        "vision", "projector"}


def test_a_transform_applies_to_both_paths(a6000):
    """A parallelism-like rewrite (every part's FLOPs and bytes halved, plus one all-reduce-like
    operator per layer whose bytes grow with the tokens) reaches the fast path and the
    op-by-op path alike."""
    from dataclasses import replace as change

    from fpcost.costmodel.ops import NUMERIC_FIELDS, Op

    def shard(part, ops, **counts):
        halved = [change(op, **{f: getattr(op, f) / 2 for f in NUMERIC_FIELDS}) for op in ops]
        if part == "tokens":
            tokens = ops[0].act_read_bytes / (4096 * 2)  # q_proj reads tokens × hidden × 2 B
            halved.append(Op("decode", "decoder", "all_reduce", "vector", "fp16", "fp16", 32,
                             act_read_bytes=tokens * 4096 * 2, act_write_bytes=tokens * 4096 * 2))
        return halved

    spec = get_preset("llava-1.5-7b")
    s = settings_for(a6000)
    batch = IterationBatch((700, 900, 30), (PrefillChunk(500, 800, True),),
                           ((make_workload(spec), 2),))
    plain = ops_time_s(iteration_ops(spec, batch, s), a6000)
    reference = ops_time_s(iteration_ops(spec, batch, s, shard), a6000)
    fast = IterationCost(spec, s, a6000, shard).time_s(batch)
    assert fast == pytest.approx(reference, rel=1e-12) and reference != pytest.approx(plain)

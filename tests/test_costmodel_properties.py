"""Direction (d): invariants of the cost model over wide, random configurations."""

import math
from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.ops import EXACT_LIMIT
from fpcost.costmodel.pipeline import LLM_STAGES as STAGES
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import ModelSpec
from fpcost.costmodel.workload import Workload

from .strategies import (
    accountings,
    batch_sizes,
    hardware_profiles,
    llm_specs,
    quant_plans,
    token_counts,
)

TOTAL_FIELDS = ("flops", "weight_bytes", "act_read_bytes", "act_write_bytes", "kv_read_bytes",
                "kv_write_bytes", "memory_access_bytes", "compute_time_s", "memory_time_s", "time_s")
REL = 1e-9  # float summation noise


def run(llm, tokens, batch, hw, quant, accounting, flash):
    model = ModelSpec(name="m", kind="llm", llm=llm)
    # workloads whose FLOP or byte counts leave float64's exact range are refused (tested
    # in test_pipeline.py); the properties are about the ones that are costed
    assume(8 * batch * (tokens + 5000) ** 2 * llm.hidden_size <= EXACT_LIMIT)
    return estimate(model, Workload(tokens, 0, batch), hw, quant, accounting, flash)


def totals(result):
    return {s: result.stage_totals(s).as_dict() for s in STAGES}


def leq(a, b):
    return a <= b * (1 + REL) + 1e-300


common = dict(llm=llm_specs(), batch=batch_sizes, hw=hardware_profiles(), quant=quant_plans,
              accounting=accountings, flash=st.booleans())


@settings(max_examples=150, deadline=None)
@given(tokens=token_counts, more=st.integers(1, 5000), **common)
def test_more_tokens_never_cost_less(llm, tokens, more, batch, hw, quant, accounting, flash):
    small = totals(run(llm, tokens, batch, hw, quant, accounting, flash))
    large = totals(run(llm, tokens + more, batch, hw, quant, accounting, flash))
    for stage in STAGES:
        for key in TOTAL_FIELDS:
            assert leq(small[stage][key], large[stage][key]), (stage, key)


@settings(max_examples=150, deadline=None)
@given(tokens=token_counts, which=st.sampled_from(["weight_bits", "act_bits", "kv_bits"]),
       **common)
def test_fewer_bits_never_move_more_bytes_or_take_longer(
        llm, tokens, which, batch, hw, quant, accounting, flash):
    wider = getattr(quant, which)
    narrower = [b for b in (4, 8, 16, 32) if b < wider]
    if not narrower:
        return
    fewer = replace(quant, **{which: narrower[-1]})
    base = totals(run(llm, tokens, batch, hw, quant, accounting, flash))
    less = totals(run(llm, tokens, batch, hw, fewer, accounting, flash))
    for stage in STAGES:
        assert leq(less[stage]["memory_access_bytes"], base[stage]["memory_access_bytes"])
        # With FlashAttention, fewer KV bits give larger query tiles (B_r = buffer / (kv bytes
        # x d), up to d), and a larger tile computes more masked scores on the causal diagonal:
        # a compute-bound fused attention can then take a little longer. Everything else may not.
        if not (flash and which == "kv_bits"):
            assert leq(less[stage]["time_s"], base[stage]["time_s"])


@settings(max_examples=150, deadline=None)
@given(tokens=token_counts, factor=st.floats(1, 100),
       which=st.sampled_from(["hbm_bandwidth_bytes_per_s", "tensor_fp16_flops_per_s",
                              "vector_fp16_flops_per_s", "vector_fp32_flops_per_s"]), **common)
def test_faster_hardware_never_slows_any_operator(
        llm, tokens, factor, which, batch, hw, quant, accounting, flash):
    faster = replace(hw, **{which: getattr(hw, which) * factor})
    slow = run(llm, tokens, batch, hw, quant, accounting, False)
    fast = run(llm, tokens, batch, faster, quant, accounting, False)
    for a, b in zip(slow.operators, fast.operators, strict=True):
        assert leq(b.time_s, a.time_s), a.op.name


@settings(max_examples=100, deadline=None)
@given(tokens=token_counts, **common)
def test_operator_times_and_totals(llm, tokens, batch, hw, quant, accounting, flash):
    result = run(llm, tokens, batch, hw, quant, accounting, flash)
    for row in result.operators:
        assert row.time_s >= row.compute_time_s and row.time_s >= row.memory_time_s
        assert row.bound == ("compute" if row.compute_time_s >= row.memory_time_s else "memory")
    for stage in STAGES:
        t = result.stage_totals(stage).as_dict()
        for key, value in t.items():
            assert math.isfinite(value) and value >= 0, key
        assert t["memory_access_bytes"] == pytest.approx(
            t["weight_bytes"] + t["act_read_bytes"] + t["act_write_bytes"] + t["kv_read_bytes"]
            + t["kv_write_bytes"], rel=REL)


@settings(max_examples=20, deadline=None)
@given(llm=llm_specs(), tokens=st.integers(1, 4096), batch=st.integers(1, 8), quant=quant_plans,
       accounting=accountings, flash=st.booleans())
def test_totals_are_sums_of_per_layer_rows(llm, tokens, batch, quant, accounting, flash, a6000):
    result = run(llm, tokens, batch, a6000, quant, accounting, flash)
    frame = result.to_frame(per_layer=True)
    assert len(frame) == sum(row.op.count for row in result.operators)
    sums = frame.groupby("stage")[list(TOTAL_FIELDS)].sum()
    for stage in STAGES:
        t = result.stage_totals(stage).as_dict()
        for key in TOTAL_FIELDS:
            assert sums.loc[stage, key] == pytest.approx(t[key], rel=REL)


def test_same_quant_object_reused():
    # QuantPlan is hashable and comparable: plans can key sweep results
    assert QuantPlan.parse("w4a16") == QuantPlan(4, 16, 16)
    assert len({QuantPlan(), QuantPlan.uniform(16)}) == 1

"""Direction (d): invariants of the whole request over random LLaVA-style models."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.memory import MAX_BATCH_SEARCH, footprint_bytes, max_batch_size
from fpcost.costmodel.pipeline import PipelineSettings, stage_ops, visual_layout
from fpcost.costmodel.workload import Workload, visual_tokens_for_ratio

from .strategies import (
    accountings,
    hardware_profiles,
    image_sizes,
    keep_ratios,
    multimodal_models,
    output_token_counts,
    quant_plans,
    vision_layer_modes,
)

FIELDS = ("flops", "weight_bytes", "act_read_bytes", "act_write_bytes", "kv_read_bytes",
          "kv_write_bytes", "memory_access_bytes", "compute_time_s", "memory_time_s", "time_s")
REL = 1e-9


def leq(a, b):
    return a <= b * (1 + REL) + 1e-300


@st.composite
def requests(draw):
    """(model, unpruned workload) with an image size for AnyRes models."""
    model = draw(multimodal_models())
    size = draw(image_sizes) if model.kind == "llava-next" else None
    visual = visual_layout(model, size).num_visual_tokens
    workload = Workload(visual, draw(st.integers(0, 64)), draw(st.integers(1, 4)),
                        num_output_tokens=draw(st.integers(0, 40)), image_size=size)
    return model, workload


common = dict(request=requests(), hw=hardware_profiles(), quant=quant_plans, accounting=accountings,
              flash=st.booleans(), layers=vision_layer_modes)


@settings(max_examples=60, deadline=None)
@given(**common)
def test_end_to_end_is_the_sum_of_its_stages(request, hw, quant, accounting, flash, layers):
    model, workload = request
    result = estimate(model, workload, hw, quant, accounting, flash, vision_layers=layers)
    e2e = result.end_to_end().as_dict()
    stages = [t.as_dict() for t in result.totals().values()]
    for key in FIELDS:
        assert abs(e2e[key] - sum(s[key] for s in stages)) <= REL * max(e2e[key], 1e-300), key
    assert abs(result.ttft_s + (result.stage_totals("decode").time_s) - e2e["time_s"]) <= REL * e2e["time_s"]


@settings(max_examples=60, deadline=None)
@given(ratio=keep_ratios, **common)
def test_pruning_never_increases_any_stage(request, ratio, hw, quant, accounting, flash, layers):
    model, workload = request
    pruned = replace(workload, num_visual_tokens=visual_tokens_for_ratio(workload.num_visual_tokens, ratio))
    base = estimate(model, workload, hw, quant, accounting, flash, vision_layers=layers)
    less = estimate(model, pruned, hw, quant, accounting, flash, vision_layers=layers)
    for stage in base.stages:  # selection exists only in the pruned run: its cost is the price
        b, p = base.stage_totals(stage).as_dict(), less.stage_totals(stage).as_dict()
        for key in FIELDS:
            assert leq(p[key], b[key]), (stage, key)
    assert set(less.stages) - set(base.stages) <= {"selection"}


@settings(max_examples=60, deadline=None)
@given(more=st.integers(1, 5000), **common)
def test_decode_cost_grows_with_context(request, more, hw, quant, accounting, flash, layers):
    model, workload = request
    result = estimate(model, workload, hw, quant, accounting, flash, vision_layers=layers)
    s = result.settings
    prompt = workload.num_prompt_tokens
    short = stage_ops("decode", model, workload, s, decode_kv_tokens=prompt)
    long = stage_ops("decode", model, workload, s, decode_kv_tokens=prompt + more)
    for a, b in zip(short, long, strict=True):
        for key in ("flops", "memory_access_bytes", "kv_read_bytes"):
            assert leq(getattr(a, key), getattr(b, key)), (a.name, key)
    assert any(b.kv_read_bytes > a.kv_read_bytes for a, b in zip(short, long, strict=True))
    # one more output token: one more, longer decode step (from one token on: the first is
    # the prefill's)
    longer = estimate(model, replace(workload, num_output_tokens=workload.num_output_tokens + 1), hw,
                      quant, accounting, flash, vision_layers=layers)
    if workload.num_output_tokens >= 1:
        assert longer.stage_totals("decode").time_s > result.stage_totals("decode").time_s
    else:
        assert longer.stage_totals("decode").time_s == result.stage_totals("decode").time_s == 0


@settings(max_examples=30, deadline=None)
@given(request=requests(), hw=hardware_profiles(), quant=quant_plans, accounting=accountings,
       flash=st.booleans(), memory=st.floats(1e6, 1e12), output_tokens=output_token_counts)
def test_the_largest_batch_that_fits_fits_and_one_more_does_not(
        request, hw, quant, accounting, flash, memory, output_tokens):
    model, workload = request
    workload = replace(workload, num_output_tokens=output_tokens)
    result = estimate(model, workload, hw, quant, accounting, flash, stages=("prefill",))
    s: PipelineSettings = result.settings
    b = max_batch_size(model, workload, s, memory)
    if b > 0:
        assert footprint_bytes(model, replace(workload, batch_size=b), s) <= memory
    if b < MAX_BATCH_SEARCH:
        assert footprint_bytes(model, replace(workload, batch_size=b + 1), s) > memory

"""The vectorized sweep: every row equals the scalar estimate(); grid shape, order, limits
and errors."""

import math
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fpcost.costmodel import sweep as sweep_module
from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.pipeline import visual_layout
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.pruning import SelectionSpec
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import ModelSpec
from fpcost.costmodel.sweep import MAX_CONFIGURATIONS, TOTALS, sweep
from fpcost.costmodel.workload import Workload
from fpcost.hardware_profiles import list_profiles, load_profile

from .strategies import (
    accountings,
    hardware_profiles,
    keep_ratio_lists,
    quant_plans,
    sweep_batch_lists,
    sweep_models,
    text_token_counts,
    visual_token_lists,
)

STAGES = ("prefill", "decode")


def scalar(model, visual, text, batch, hardware, quant, accounting, flash, stages=STAGES):
    return estimate(model, Workload(visual, text, batch), hardware, quant, accounting, flash, stages)


def assert_rows_equal_estimates(frame, models, devices, accounting, flash, rel):
    by_name = {m.name: m for m in models}
    by_device = {d.name: d for d in devices}
    for row in frame.itertuples(index=False):
        model, device = by_name[row.model], by_device[row.hardware]
        quant = QuantPlan.parse(row.quant)
        result = scalar(model, row.num_visual_tokens, row.num_text_tokens, row.batch_size,
                        device, quant, accounting, flash).totals()
        for stage in STAGES:
            for total in TOTALS:
                expected = getattr(result[stage], total)
                assert getattr(row, f"{stage}_{total}") == pytest.approx(expected, rel=rel, abs=0)
        base = scalar(model, model.default_num_visual_tokens, row.num_text_tokens, row.batch_size,
                      device, quant, accounting, flash, ("prefill",)).totals()["prefill"].time_s
        assert row.prefill_speedup == pytest.approx(base / result["prefill"].time_s, rel=rel, abs=0)


@settings(max_examples=60, deadline=None)
@given(model=sweep_models, devices=st.lists(hardware_profiles(), min_size=1, max_size=2),
       quants=st.lists(quant_plans, min_size=1, max_size=2), ratios=keep_ratio_lists,
       visual=visual_token_lists, use_ratios=st.booleans(), batches=sweep_batch_lists,
       text=text_token_counts, accounting=accountings, flash=st.booleans())
def test_every_row_equals_the_scalar_estimate(model, devices, quants, ratios, visual, use_ratios,
                                              batches, text, accounting, flash):
    model = get_preset(model) if isinstance(model, str) else model
    devices = [d.__class__(**{**d.__dict__, "name": f"dev{i}"}) for i, d in enumerate(devices)]
    grid = {"keep_ratios": ratios} if use_ratios else {"num_visual_tokens": visual}
    try:
        frame = sweep([model], devices, quants, batch_sizes=batches, num_text_tokens=text,
                      accounting=accounting, flash_attention=flash, **grid)
    except WorkloadError as exc:  # a random LLM too large for exact int64 counts
        assume("64-bit" not in str(exc))
        raise
    assert len(frame) == len(devices) * len(quants) * len(ratios if use_ratios else visual) * len(batches)
    assert_rows_equal_estimates(frame, [model], devices, accounting, flash, rel=1e-12)


def test_presets_on_every_profile_are_bit_for_bit_equal():
    """Not just close: the sweep adds the same floats in the same order as estimate()."""
    models = [get_preset(n) for n in ("llava-1.5-7b", "llava-1.5-13b", "videollava", "llava-next-7b")]
    devices = [load_profile(n) for n in list_profiles()]
    for flash in (False, True):
        frame = sweep(models, devices, [16, 4, "w4a16kv16"], keep_ratios=[0.1, 0.5, 1.0],
                      batch_sizes=[1, 16], flash_attention=flash)
        sample = frame.iloc[:: max(1, len(frame) // 40)]
        assert_rows_equal_estimates(sample, models, devices, "fpcost", flash, rel=0)


def test_rows_are_nested_model_hardware_quant_tokens_batch(a6000, a100):
    frame = sweep(["llava-1.5-7b", "videollava"], [a6000, a100], [16, 4],
                  keep_ratios=[0.25, 1.0], batch_sizes=[1, 8])
    assert len(frame) == 2 * 2 * 2 * 2 * 2
    head = frame.iloc[:4]
    assert list(head.batch_size) == [1, 8, 1, 8]
    assert list(head.num_visual_tokens) == [144, 144, 576, 576]
    assert list(frame.quant.iloc[:8]) == ["w16a16kv16"] * 4 + ["w4a4kv4"] * 4
    assert list(frame.hardware.iloc[::8][:2]) == ["a6000", "a100-40g"]
    assert list(frame.model.iloc[::16]) == ["llava-1.5-7b", "videollava"]
    assert set(frame.num_visual_tokens[frame.model == "videollava"]) == {512, 2048}
    full = frame[frame.keep_ratio == 1.0]
    assert (full.prefill_speedup == 1.0).all()
    assert (frame[frame.keep_ratio == 0.25].prefill_speedup > 1).all()
    assert (frame.num_prompt_tokens == frame.num_visual_tokens + 40).all()
    assert frame.accounting.unique().tolist() == ["fpcost"]


def test_columns_follow_the_stages(a6000):
    frame = sweep(["llava-1.5-7b"], [a6000], [16], stages=("decode",))
    assert "prefill_speedup" not in frame and "prefill_time_s" not in frame
    assert [c for c in frame.columns if c.startswith("decode_")] == [f"decode_{t}" for t in TOTALS]
    assert frame.keep_ratio.tolist() == [1.0]  # neither ratios nor counts: all tokens kept


def test_visual_token_counts_and_text_only_models(a6000):
    frame = sweep(["llava-1.5-7b"], [a6000], [16], num_visual_tokens=[0, 288, 576])
    assert frame.keep_ratio.tolist() == [0.0, 0.5, 1.0]
    llm = ModelSpec(name="llm", kind="llm", llm=get_preset("llava-1.5-7b").llm)
    text_only = sweep([llm], [a6000], [16], num_visual_tokens=[100])
    assert math.isnan(text_only.prefill_speedup[0]) and math.isnan(text_only.keep_ratio[0])
    with pytest.raises(WorkloadError, match="has no visual tokens"):
        sweep([llm], [a6000], [16], keep_ratios=[0.5])


def test_size_limit_and_force(a6000, monkeypatch):
    assert MAX_CONFIGURATIONS == 5_000_000
    with pytest.raises(WorkloadError, match=r"5,400,000 configurations, more than the limit of 5,000,000"):
        sweep(["llava-1.5-7b"], [a6000] * 9, [16], num_visual_tokens=range(600_000))
    monkeypatch.setattr(sweep_module, "MAX_CONFIGURATIONS", 10)
    with pytest.raises(WorkloadError, match="force=True"):
        sweep(["llava-1.5-7b"], [a6000], [16, 4], keep_ratios=[0.2, 0.4, 0.6, 0.8, 1.0], batch_sizes=[1, 2])
    frame = sweep(["llava-1.5-7b"], [a6000], [16, 4], keep_ratios=[0.2, 0.4, 0.6, 0.8, 1.0],
                  batch_sizes=[1, 2], force=True)
    assert len(frame) == 20


def test_int64_overflow_is_refused(a6000):
    with pytest.raises(WorkloadError, match=r"too large to count exactly.*above 2\*\*53"):
        sweep(["llava-1.5-13b"], [a6000], [16], num_visual_tokens=[10_000_000], batch_sizes=[4096])


@pytest.mark.parametrize("kwargs, message", [
    ({"keep_ratios": [0.0]}, r"keep ratio 0\.0 must be in \(0, 1\]"),
    ({"keep_ratios": [1.5]}, r"keep ratio 1\.5 must be in \(0, 1\]"),
    ({"keep_ratios": []}, "keep_ratios is empty"),
    ({"keep_ratios": [0.5], "num_visual_tokens": [3]}, "either keep_ratios or num_visual_tokens"),
    ({"num_visual_tokens": [-1]}, r"num_visual_tokens = -1 must be an integer in 0\.\.2,147,483,647"),
    ({"batch_sizes": [0]}, r"batch size = 0 must be an integer in 1\.\.2,147,483,647"),
    ({"batch_sizes": [2.5]}, r"batch size = 2\.5 must be an integer"),
    ({"stages": ("prefill", "vision2")}, "stage 'vision2' is unknown"),
    ({"quants": ["w3a16"]}, "weight_bits = 3 is not supported"),
    ({"accounting": "nope"}, "accounting mode 'nope' is unknown"),
])
def test_errors_name_the_value(a6000, kwargs, message):
    args = {"quants": [16], **kwargs}
    with pytest.raises(WorkloadError, match=message):
        sweep(["llava-1.5-7b"], [a6000], **args)


def test_hardware_must_be_a_profile():
    with pytest.raises(WorkloadError, match="is not a HardwareProfile"):
        sweep(["llava-1.5-7b"], ["a6000"], [16])


@pytest.mark.parametrize("model", ["llava-1.5-7b", "videollava", "llava-next-7b"])
def test_vision_stages_and_ttft_equal_the_scalar_estimate(model, a6000):
    """Every stage of the whole request, selection included where pruned (zero elsewhere),
    and the time to first token, as the scalar ``estimate()`` gives them."""
    spec = get_preset(model)
    frame = sweep([spec], [a6000], [16, 4], keep_ratios=[0.2, 0.5, 1.0], batch_sizes=[1, 3])
    for row in frame.itertuples(index=False):
        result = estimate(spec, Workload(row.num_visual_tokens, row.num_text_tokens, row.batch_size),
                          a6000, QuantPlan.parse(row.quant))
        totals = result.totals()
        assert ("selection" in totals) == (row.keep_ratio < 1)
        for stage in ("vision", "selection", "projector", "prefill", "decode"):
            for total in TOTALS:
                expected = getattr(totals[stage], total) if stage in totals else 0.0
                assert getattr(row, f"{stage}_{total}") == pytest.approx(expected, rel=1e-12, abs=0)
        assert row.ttft_s == pytest.approx(result.ttft_s, rel=1e-12)


# --- issue 8 -----------------------------------------------------------------------------

def test_ttft_is_the_whole_requests_whatever_stages_are_listed(a6000):
    """sweep --stage selection gave ttft_speedup 0.0 (TTFT summed over the listed stages
    only); now every stage list gives the request's TTFT, equal to the scalar estimate's."""
    full = sweep(["llava-1.5-7b"], [a6000], [16], keep_ratios=[0.25, 0.5, 1.0])
    expected = [estimate(get_preset("llava-1.5-7b"), Workload(v, 40), a6000).ttft_s
                for v in full["num_visual_tokens"]]
    assert list(full["ttft_s"]) == pytest.approx(expected, rel=1e-12)
    for stages in [("selection",), ("vision",), ("decode",), ("prefill",), ("projector", "decode")]:
        part = sweep(["llava-1.5-7b"], [a6000], [16], keep_ratios=[0.25, 0.5, 1.0], stages=stages)
        assert list(part["ttft_s"]) == list(full["ttft_s"])
        assert list(part["ttft_speedup"]) == list(full["ttft_speedup"])
        assert all(part["ttft_speedup"] >= 1)


@pytest.mark.parametrize("batch", [2**63, 10**300, 2**31])
def test_batches_beyond_the_bound_are_refused_before_numpy(a6000, batch):
    with pytest.raises(WorkloadError, match=r"batch size = .* must be an integer in 1\.\.2,147,483,647"):
        sweep(["llava-1.5-7b"], [a6000], [16], batch_sizes=[batch])


def test_memory_is_estimated_before_allocating():
    """50 million configurations need tens of GB: refused with the figure, --force or not."""
    with pytest.raises(WorkloadError, match=r"50,000,000 configurations x 36 columns: about "
                                            r"67\.1 GiB .* 24\.0 GiB of memory available"):
        sweep_module.check_memory(50_000_000, 36, available=24 * 2**30)
    sweep_module.check_memory(5_000_000, 36, available=24 * 2**30)  # 6.7 GiB: fine


def test_a_non_finite_time_is_refused_not_returned(a6000):
    from dataclasses import replace

    from fpcost.costmodel.errors import HardwareError

    with pytest.raises(HardwareError, match="hbm_bandwidth_bytes_per_s"):
        replace(a6000, hbm_bandwidth_bytes_per_s=1e-320)  # the profile refuses it first
    # the last line of defence, for a profile that got past its own checks
    slow = replace(a6000)
    object.__setattr__(slow, "hbm_bandwidth_bytes_per_s", 1e-320)
    with pytest.raises(WorkloadError, match="not a finite non-negative number"):
        sweep(["llava-1.5-7b"], [slow], [16])


# --- issue 11: the sweep builds its operators through estimate()'s stage assembly ----------

ESTIMATE_OPTIONS = [
    # (sweep keyword arguments, the same as estimate() keyword arguments / Workload fields)
    ({"num_output_tokens": 1}, {}, {"num_output_tokens": 1}),
    ({"num_output_tokens": 5}, {}, {"num_output_tokens": 5}),
    ({"num_output_tokens": 64}, {}, {"num_output_tokens": 64}),
    ({"vision_quant": QuantPlan.parse("w8a8kv16")}, {"vision_quant": QuantPlan.parse("w8a8kv16")}, {}),
    ({"vision_layers": "feature"}, {"vision_layers": "feature"}, {}),
    ({"selection": None}, {"selection": None}, {}),
    ({"selection": SelectionSpec((-6, -5, -4, -2))}, {"selection": SelectionSpec((-6, -5, -4, -2))}, {}),
]


def assert_every_stage_equals_estimate(frame, spec, device, estimate_kwargs, workload_kwargs,
                                       flash=False, rel=1e-12):
    """Every row's every stage column and TTFT equal ``estimate()`` of the same request, and
    the speedups equal the ratios to ``estimate()`` of the unpruned request."""
    limits = (workload_kwargs.get("min_pixels"), workload_kwargs.get("max_pixels"))
    unpruned = visual_layout(spec, workload_kwargs.get("image_size"), limits).num_visual_tokens
    for row in frame.itertuples(index=False):
        def run(visual, row=row):
            workload = Workload(visual, row.num_text_tokens, row.batch_size, **workload_kwargs)
            return estimate(spec, workload, device, QuantPlan.parse(row.quant), "fpcost", flash,
                            **estimate_kwargs)
        result, base = run(row.num_visual_tokens), run(unpruned)
        totals = {stage: result.stage_totals(stage) for stage in result.stages}
        for stage in ("vision", "selection", "projector", "prefill", "decode"):
            for total in TOTALS:
                expected = getattr(totals[stage], total) if stage in totals else 0.0
                assert getattr(row, f"{stage}_{total}") == pytest.approx(expected, rel=rel, abs=0), \
                    (stage, total, row)
        assert row.ttft_s == pytest.approx(result.ttft_s, rel=rel)
        assert row.ttft_speedup == pytest.approx(base.ttft_s / result.ttft_s, rel=rel)
        prefill = base.stage_totals("prefill").time_s / totals["prefill"].time_s
        assert row.prefill_speedup == pytest.approx(prefill, rel=rel)


@pytest.mark.parametrize("model", ["llava-1.5-7b", "videollava", "llava-next-7b"])
@pytest.mark.parametrize("options", ESTIMATE_OPTIONS, ids=lambda o: str(o[0]))
@pytest.mark.parametrize("flash", [False, True])
def test_every_estimate_option_works_in_the_sweep(model, options, flash, a6000, a100):
    sweep_kwargs, estimate_kwargs, workload_kwargs = options
    spec = get_preset(model)
    frame = sweep([spec], [a6000, a100], [16, 4], keep_ratios=[0.2, 0.5, 1.0], batch_sizes=[1, 3],
                  flash_attention=flash, **sweep_kwargs)
    for device in (a6000, a100):
        assert_every_stage_equals_estimate(frame[frame.hardware == device.name], spec, device,
                                           estimate_kwargs, workload_kwargs, flash)


@pytest.mark.parametrize("size", [(1344, 336), (500, 400), (336, 1008), (672, 672), (33, 2000)])
def test_the_image_size_sets_llava_next_rows_as_in_estimate(size, a6000):
    """AnyRes: the crops, the unpruned count (keep ratios are of it) and the baseline follow
    the image size, as estimate(image_size=...) does."""
    spec = get_preset("llava-next-7b")
    frame = sweep([spec], [a6000], [16], keep_ratios=[0.3, 1.0], batch_sizes=[1, 2],
                  image_size=size, num_output_tokens=3)
    exact = visual_layout(spec, size).num_visual_tokens
    assert set(frame.num_visual_tokens) == {round(0.3 * exact), exact}
    assert_every_stage_equals_estimate(frame, spec, a6000, {},
                                       {"image_size": size, "num_output_tokens": 3})


def test_the_image_size_changes_nothing_for_models_that_resize(a6000):
    plain = sweep(["llava-1.5-7b", "videollava"], [a6000], [16], keep_ratios=[0.5, 1.0])
    sized = sweep(["llava-1.5-7b", "videollava"], [a6000], [16], keep_ratios=[0.5, 1.0],
                  image_size=(1280, 720))
    assert plain.equals(sized)


def test_text_only_models_take_output_tokens(a6000):
    llm = ModelSpec(name="llm", kind="llm", llm=get_preset("llava-1.5-7b").llm)
    frame = sweep([llm], [a6000], [16], num_visual_tokens=[0], num_text_tokens=100,
                  batch_sizes=[1, 4], num_output_tokens=9)
    for row in frame.itertuples(index=False):
        result = estimate(llm, Workload(0, 100, row.batch_size, num_output_tokens=9), a6000)
        assert row.decode_time_s == pytest.approx(result.stage_totals("decode").time_s, rel=1e-12)
        assert row.decode_flops == pytest.approx(result.stage_totals("decode").flops, rel=1e-12)
        assert row.vision_time_s == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"num_output_tokens": -1}, "num_output_tokens = -1 must be an integer"),
    ({"num_output_tokens": 10**8}, "num_output_tokens = 100000000 must be an integer"),
    ({"image_size": (0, 10)}, "image width = 0 must be a positive integer"),
    ({"vision_layers": "some"}, "vision layers 'some' is unknown; valid: all, feature"),
    ({"num_output_tokens": 4_000_000}, "time 35,999,991 decode steps at once, more than 20,000,000"),
])
def test_shared_settings_are_checked(kwargs, message, a6000):
    with pytest.raises(WorkloadError, match=re.escape(message)):
        sweep(["llava-1.5-7b"], [a6000], [16], keep_ratios=[0.5, 1.0], batch_sizes=[1, 2, 3],
              **{**kwargs})

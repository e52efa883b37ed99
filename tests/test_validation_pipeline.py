"""The whole-request prediction and report (pure): stages, the selection only when pruned,
the break-even keep ratio, and the speedup errors by hand."""

import pytest

from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import LLMSpec, ModelSpec, ProjectorSpec, VisionSpec
from fpcost.costmodel.validation_pipeline import (
    break_even_keep_ratio,
    pipeline_report,
    predicted_request_s,
)
from tests.test_runtime import gpu

LLM = LLMSpec(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
              intermediate_size=704, vocab_size=1000, name="small")
VISION = VisionSpec(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                    num_attention_heads=2, image_size=112, patch_size=14, family="dinov2",
                    name="vit")
MODEL = ModelSpec(name="m", kind="llava", llm=LLM, vision=VISION,
                  projector=ProjectorSpec(128, 256), default_num_visual_tokens=64)
Q = QuantPlan.uniform(32)


def test_stages_and_selection_only_when_pruned():
    hw = gpu(kernel_launch_s=1e-6)
    full = predicted_request_s(MODEL, 64, 8, hw, Q, Q)
    pruned = predicted_request_s(MODEL, 20, 8, hw, Q, Q)
    assert set(full) == {"vision", "projector", "prefill"}
    assert set(pruned) == {"vision", "selection", "projector", "prefill"}
    assert pruned["vision"] == full["vision"]  # the encoder runs on every patch either way
    assert pruned["prefill"] < full["prefill"] and pruned["projector"] < full["projector"]
    assert all(v > 0 for v in pruned.values())
    with pytest.raises(WorkloadError, match="kept tokens \\(65\\) must be in 1..64"):
        predicted_request_s(MODEL, 65, 8, hw, Q, Q)


def test_break_even_keep_ratio_is_where_pruning_starts_to_pay():
    hw = gpu(kernel_launch_s=1e-6)
    ratio = break_even_keep_ratio(MODEL, 8, hw, Q, Q)
    assert ratio is not None and 0 < ratio < 1
    kept = round(ratio * 64)
    full = sum(predicted_request_s(MODEL, 64, 8, hw, Q, Q).values())
    assert sum(predicted_request_s(MODEL, kept, 8, hw, Q, Q).values()) < full


def test_pipeline_report_by_hand():
    rows = [
        {"image": "a", "measured_pruned_s": 1.0, "measured_unpruned_s": 2.0,
         "predicted_pruned_s": 1.0, "predicted_unpruned_s": 2.2},  # 2.0 vs 2.2: 10%
        {"image": "b", "measured_pruned_s": 2.0, "measured_unpruned_s": 2.0,
         "predicted_pruned_s": 1.0, "predicted_unpruned_s": 1.0},  # 1.0 vs 1.0: 0%
        {"image": "c", "measured_pruned_s": 1.0, "measured_unpruned_s": 4.0,
         "predicted_pruned_s": 1.0, "predicted_unpruned_s": 3.0},  # 4.0 vs 3.0: 25%
    ]
    report = pipeline_report(rows, 0.9)
    speedup = report["summary"]["speedup"]
    assert speedup["median_abs_rel_error"] == pytest.approx(0.10)
    assert speedup["max_abs_rel_error"] == pytest.approx(0.25)
    assert [i["measured_speedup"] for i in report["images"]] == [2.0, 1.0, 4.0]
    assert report["summary"]["time"]["max_abs_rel_error"] == pytest.approx(0.5)
    assert report["summary"]["break_even_keep_ratio"] == 0.9

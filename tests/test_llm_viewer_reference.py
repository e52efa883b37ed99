"""Direction (c): ``--accounting llm-viewer`` equals LLM-Viewer (2024) to 1e-6 relative.

The reference outputs in data/llm_viewer_reference.json were produced by running
LLM-Viewer's own ``ModelAnalyzer.analyze`` (see the file's "source" field) over Table 3's
configurations and 50 random Llama-family ones: GQA, batch 1-32, every bit width,
FlashAttention on and off, A6000 and A100, prefill and decode.
"""

import json
from pathlib import Path

import pytest

from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import LLMSpec, ModelSpec
from fpcost.costmodel.workload import Workload
from fpcost.hardware_profiles import load_profile

REFERENCE = json.loads((Path(__file__).parent / "data" / "llm_viewer_reference.json").read_text())
# LLM-Viewer's total_results keys -> fpcost's StageTotals fields
KEYS = {
    "OPs": "flops",
    "inference_time": "time_s",
    "memory_access": "memory_access_bytes",
    "load_weight": "weight_bytes",
    "load_act": "act_read_bytes",
    "store_act": "activation_store_bytes",
    "load_kv_cache": "kv_read_bytes",
    "store_kv_cache": "kv_write_bytes",
}
TOLERANCE = 1e-6


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda c: (
    f"{c['hardware']}-h{c['config']['hidden_size']}-s{c['seqlen']}-b{c['batch_size']}-"
    f"w{c['w_bit']}a{c['a_bit']}kv{c['kv_bit']}-fa{int(c['use_flashattention'])}"))
def test_matches_llm_viewer(case):
    model = ModelSpec(name="ref", kind="llm", llm=LLMSpec(**case["config"]))
    result = estimate(
        model,
        Workload(num_visual_tokens=case["seqlen"], num_text_tokens=0, batch_size=case["batch_size"]),
        load_profile(case["hardware"]),
        QuantPlan(case["w_bit"], case["a_bit"], case["kv_bit"]),
        accounting="llm-viewer",
        flash_attention=case["use_flashattention"],
    )
    for stage in ("prefill", "decode"):
        ours = result.stage_totals(stage).as_dict()
        for theirs_key, our_key in KEYS.items():
            theirs = case[stage][theirs_key]
            assert ours[our_key] == pytest.approx(theirs, rel=TOLERANCE, abs=0), (stage, our_key)

"""``fpcost serve --tensor-parallel N --pipeline-parallel P``: one GPU gives the numbers of
before; one request at a time equals ``fpcost estimate`` at the same split; KV blocks per GPU
and one iteration's traffic by hand; a 72B model refused on one GPU and served on four; more
GPUs never lower throughput where the KV cache is the limit."""

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpcost.costmodel.errors import HardwareError, WorkloadError
from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.memory import kv_bytes_per_token, stage_weight_bytes, weight_bytes_by_part
from fpcost.costmodel.parallel import Parallelism, Transfer, shard_model
from fpcost.costmodel.pipeline import make_workload
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.serve.capacity import ServerSettings, kv_capacity
from fpcost.costmodel.serve.iteration import (
    IterationBatch,
    IterationCost,
    PrefillChunk,
    iteration_ops,
    ops_time_s,
)
from fpcost.costmodel.serve.parallel import parallel_transform
from fpcost.costmodel.serve.requests import Request, poisson_requests
from fpcost.costmodel.serve.run import Server
from fpcost.hardware_profiles import load_profile

from ..cli_helpers import one_line_error, run_cli
from .helpers import settings_for

BASELINE = Path(__file__).parent.parent / "data" / "serve_baseline"
# `fpcost serve ARGS --format json` as run on de9a61d, the commit before serve's parallelism;
# one GPU must give the same JSON, plus only the ``server`` object. llava7b's pruned server was
# rewritten when the selection's q·kᵀ moved to the tower's dtype (its unpruned server is
# unchanged).
BASELINE_RUNS = {
    "llava7b": ["--model", "llava-1.5-7b", "--hardware", "a6000", "--rate", "3",
                "--num-requests", "300", "--keep-ratio", "0.25"],
    "qwen2vl7b": ["--model", "qwen2-vl-7b", "--hardware", "a100-80g", "--rate", "1.5",
                  "--num-requests", "200", "--chunked-prefill", "--output-tokens", "64",
                  "--bits", "4"],
}
# (model, tensor-parallel degrees its heads, KV heads and FFN allow)
SPLITS = {"llava-1.5-7b": (1, 2, 4, 8), "qwen2-vl-7b": (1, 2, 4), "llava-next-7b": (1, 2, 4, 8)}


@pytest.mark.parametrize("name", sorted(BASELINE_RUNS))
@pytest.mark.parametrize("split", [[], ["--tensor-parallel", "1", "--pipeline-parallel", "1"]])
def test_one_gpu_output_is_identical_to_before(capsys, name, split):
    code, out, _ = run_cli(capsys, "serve", *BASELINE_RUNS[name], *split, "--format", "json")
    assert code == 0
    payload = json.loads(out)
    assert payload.pop("server") == {"tensor_parallel": 1, "pipeline_parallel": 1, "num_gpus": 1,
                                     "layers_per_stage": [payload_layers(payload)]}
    assert json.dumps(payload, indent=2) + "\n" == (BASELINE / f"{name}.json").read_text()


def payload_layers(payload) -> int:
    return get_preset(payload["model"]).llm.num_hidden_layers


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), model=st.sampled_from(sorted(SPLITS)), flash=st.booleans(),
       keep=st.sampled_from([None, 0.25]), output=st.integers(1, 24), bits=st.sampled_from([16, 4]),
       chunked=st.booleans())
def test_one_request_at_a_time_equals_estimate(a100, data, model, flash, keep, output, bits,
                                               chunked):
    """Requests 1000 s apart never share an iteration: at every split each one's TTFT, TPOT
    and latency are ``estimate``'s at that split (its traffic included), to float rounding."""
    tensor = data.draw(st.sampled_from(SPLITS[model]), label="tensor")
    pipeline = data.draw(st.integers(1, 6), label="pipeline")
    split = Parallelism(tensor, pipeline)
    spec = get_preset(model)
    quant = QuantPlan.uniform(bits)
    s = settings_for(a100, quant=quant, flash_attention=flash)
    workload = make_workload(spec, keep_ratio=keep, output_tokens=output)
    server = Server(spec, a100, s, ServerSettings(chunked_prefill=chunked), split)
    run = server.run([Request(1000.0 * i, workload) for i in range(2)])
    expected = estimate(spec, workload, a100, quant, flash_attention=flash, parallelism=split)
    if not split.is_single:
        assert sum(c.time_s for c in expected.communication) > 0
    r = run.result
    for a, first, end in zip(r.arrival_s, r.first_token_s, r.completion_s, strict=True):
        assert first - a == pytest.approx(expected.ttft_s, rel=1e-9)
        assert end - a == pytest.approx(expected.end_to_end().time_s, rel=1e-9)
        if output > 1:
            assert (end - first) / (output - 1) == pytest.approx(expected.tpot_s, rel=1e-9)
    assert run.summary["mean_batch_size"] == 1


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensor=st.sampled_from([1, 2, 4, 8]), pipeline=st.integers(1, 5),
       decodes=st.lists(st.integers(1, 20_000), max_size=30),
       prefills=st.lists(st.builds(lambda q, c, e: PrefillChunk(q, q + c, e), st.integers(1, 3000),
                                   st.integers(0, 5000), st.booleans()), max_size=3),
       new=st.integers(0, 2))
def test_fast_path_equals_op_by_op_on_a_split(a6000, tensor, pipeline, decodes, prefills, new):
    """The split's transform (traffic included) reaches both paths alike."""
    spec = get_preset("llava-1.5-7b")
    split = Parallelism(tensor, pipeline)
    s = settings_for(a6000)
    rank = shard_model(spec, split)
    transform = parallel_transform(spec, split, s.quant.act_bytes_per_element)
    vision = ((make_workload(spec), new),) if new else ()
    batch = IterationBatch(tuple(decodes), tuple(prefills), vision)
    if not batch.num_tokens and not vision:
        return
    reference = ops_time_s(iteration_ops(rank, batch, s, transform), a6000)
    fast = IterationCost(rank, s, a6000, transform).time_s(batch)
    assert fast == pytest.approx(reference, rel=1e-12)


def test_one_iterations_traffic_by_hand(a6000):
    """LLaVA-1.5-7B (hidden 4096, vocabulary 32,064, 32 layers) at TP 2 × PP 2, FP16: an
    iteration of 3 decodes and a 100-token prefill chunk that ends its prompt runs T = 103
    tokens and 4 emitting requests. Per GPU: 1 + 2 × 32 ring all-reduces of 103 × 4096 × 2 B,
    each 2 (N − 1)/N = 1 × the message in 2 steps; one gather of 4 × 2 × 16,032 × 2 B logits,
    (N − 1)/N = 1/2 of it in 1 step; 1 send of 2 × 103 × 4096 × 2 B."""
    spec = get_preset("llava-1.5-7b")
    split = Parallelism(2, 2)
    s = settings_for(a6000)
    batch = IterationBatch((10, 20, 30), (PrefillChunk(100, 100, True),))
    sent = [t for t in iteration_ops(shard_model(spec, split), batch, s,
                                     parallel_transform(spec, split, 2)) if isinstance(t, Transfer)]
    hidden = 103 * 4096 * 2
    by_name = {t.name: t for t in sent}
    assert sorted(by_name) == ["attn_all_reduce", "embed_all_reduce", "logits_gather",
                               "mlp_all_reduce", "stage_send"]
    assert [(by_name[n].count, by_name[n].message_bytes, by_name[n].bytes_per_gpu)
            for n in ("embed_all_reduce", "attn_all_reduce", "mlp_all_reduce")] == [
        (1, hidden, hidden), (32, hidden, hidden), (32, hidden, hidden)]
    assert by_name["logits_gather"].message_bytes == 4 * 32_064 * 2
    assert by_name["logits_gather"].bytes_per_gpu == 4 * 32_064 * 2 / 2
    assert (by_name["stage_send"].count, by_name["stage_send"].message_bytes) == (1, 2 * hidden)
    bandwidth, latency = 56.25e9, 3e-6  # the a6000 profile's NVLink bridge
    by_hand = (65 * (hidden / bandwidth + 2 * latency) + (4 * 32_064 * 2 / 2 / bandwidth + latency)
               + (2 * hidden / bandwidth + latency))
    assert sum(t.time_s(a6000) for t in sent) == pytest.approx(by_hand, rel=1e-12)


def test_kv_blocks_per_gpu_by_hand(a6000):
    """LLaVA-1.5-7B on A6000s (48 GiB, 90 % usable) at TP 2 × PP 3: layers (11, 11, 10); a
    rank holds 16 of 32 KV heads of 128, so a token's K and V take 11 × 2 × 2048 × 2 =
    90,112 B on stages 1 and 2 and 81,920 B on stage 3. Weights per layer per GPU: q, k, v, o
    4 × 4096 × 2048 + gate, up, down 3 × 4096 × 5504 + 2 norms × 4096 = 101,195,776
    parameters; the embedding shard 16,032 × 4096 (vocabulary 32,064) on stage 1 with the vision tower and
    projector (whole), the LM head shard 16,032 × 4096 and the final norm 4096 on stage 3."""
    spec = get_preset("llava-1.5-7b")
    split = Parallelism(2, 3)
    s = settings_for(a6000)
    cap = kv_capacity(spec, a6000, s, ServerSettings(), split)
    per_layer, shard = 101_195_776, 16_032 * 4096
    vision = sum(v for k, v in weight_bytes_by_part(spec, s.quant, s.vision_quant).items()
                 if k != "llm")
    weights = [(11 * per_layer + shard) * 2 + vision, 11 * per_layer * 2,
               (10 * per_layer + shard + 4096) * 2]
    per_token = [90_112, 90_112, 81_920]
    usable = 48 * 2**30 * 0.9
    blocks = [math.floor((usable - w - cap.activation_reserve_bytes) / (16 * t))
              for w, t in zip(weights, per_token, strict=True)]
    assert cap.num_blocks == min(blocks) == blocks[0]
    assert (cap.pipeline_stage, cap.weight_bytes, cap.kv_bytes_per_token) == (0, weights[0], 90_112)
    assert [sum(w.values()) for w in stage_weight_bytes(spec, split, s.quant, s.vision_quant)] == weights
    assert kv_bytes_per_token(spec, split, s.quant) == 90_112  # the stage with the most layers
    one = kv_capacity(spec, a6000, s, ServerSettings())
    assert cap.activation_reserve_bytes < one.activation_reserve_bytes
    assert cap.num_blocks > 2 * one.num_blocks


def test_a_72b_model_needs_four_a100s(capsys):
    args = ["serve", "--model", "qwen2.5-vl-72b", "--hardware", "a100-80g", "--rate", "2",
            "--num-requests", "100", "--format", "json"]
    code, _, err = run_cli(capsys, *args)
    one_line_error(code, err, "leaves no KV cache on a100-80g")
    code, out, _ = run_cli(capsys, *args, "--tensor-parallel", "4")
    assert code == 0
    payload = json.loads(out)
    assert payload["server"]["num_gpus"] == 4 and payload["server"]["tensor_parallel"] == 4
    assert payload["summary"]["num_completed"] == 100
    assert payload["kv_cache"]["num_blocks"] > 0


def test_more_gpus_never_lower_throughput_where_the_kv_cache_is_the_limit():
    """The case: LLaVA-1.5-7B on A100-40GB GPUs, 300 Poisson requests at 4 per second, each
    generating 2048 tokens: KV-bound on one GPU (preemptions, a cache over 80 % full on
    average). Adding GPUs (TP 1 → 2 → 4 → 8; PP 2 and 4 at TP 2) gives more blocks per GPU
    and fewer FLOPs and bytes per GPU; throughput never falls."""
    a100 = load_profile("a100-40g")
    spec = get_preset("llava-1.5-7b")
    s = settings_for(a100)
    workload = make_workload(spec, output_tokens=2048)
    requests = poisson_requests([workload], 4.0, 300, 0)
    one = Server(spec, a100, s).run(requests).summary
    assert one["num_preemptions"] > 0 and one["kv_cache_utilization"] > 0.8  # memory-bound
    previous = one["throughput_requests_per_s"]
    for tensor in (2, 4, 8):
        now = Server(spec, a100, s, parallelism=Parallelism(tensor, 1)).run(requests).summary
        assert now["throughput_requests_per_s"] >= previous
        previous = now["throughput_requests_per_s"]
    base = Server(spec, a100, s, parallelism=Parallelism(2, 1)).run(requests).summary
    for pipeline in (2, 4):
        now = Server(spec, a100, s, parallelism=Parallelism(2, pipeline)).run(requests).summary
        assert now["throughput_requests_per_s"] >= one["throughput_requests_per_s"]
        assert now["num_completed"] == base["num_completed"] == 300


@pytest.mark.parametrize("args, fragment", [
    (["--tensor-parallel", "3"], "--tensor-parallel 3 must divide"),
    (["--pipeline-parallel", "33"], "--pipeline-parallel 33 is more than the 32"),
    (["--tensor-parallel", "0"], "--tensor-parallel"),
    (["--tensor-parallel", "2", "--accounting", "llm-viewer"], "needs the fpcost accounting"),
])
def test_bad_splits_are_one_line(capsys, args, fragment):
    code, _, err = run_cli(capsys, "serve", "--model", "llava-1.5-7b", "--rate", "1", *args)
    one_line_error(code, err, fragment)


def test_a_profile_without_a_link_is_refused(a6000):
    from dataclasses import replace

    lonely = replace(a6000, interconnect_bandwidth_bytes_per_s=None, interconnect_latency_s=None)
    with pytest.raises(HardwareError, match="interconnect"):
        Server(get_preset("llava-1.5-7b"), lonely, settings_for(a6000),
               parallelism=Parallelism(2, 1))
    Server(get_preset("llava-1.5-7b"), lonely, settings_for(a6000))  # one GPU needs no link
    with pytest.raises(WorkloadError, match="--tensor-parallel 3"):
        Server(get_preset("llava-1.5-7b"), a6000, settings_for(a6000),
               parallelism=Parallelism(3, 1))

"""Tensor and pipeline parallelism (fpcost/costmodel/parallel.py) and ``--frames``: one GPU
equals the unsplit numbers exactly; per-GPU weights, KV cache and traffic by hand."""

import json
import math
from pathlib import Path

import pytest

from fpcost.api import estimate, sweep
from fpcost.costmodel.errors import HardwareError, WorkloadError
from fpcost.costmodel.families.qwen_vl_layout import video_grid
from fpcost.costmodel.memory import memory_footprint, stage_weight_bytes, weight_bytes_by_part
from fpcost.costmodel.parallel import (
    ALL_REDUCE,
    Parallelism,
    shard_model,
    stage_layers,
    transfers,
)
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.quant import QuantPlan
from fpcost.hardware_profiles import load_profile
from fpcost.hardware_profiles.loader import DATA_DIR

from .cli_helpers import one_line_error, run_cli

BASELINE = Path(__file__).parent / "data" / "parallel_baseline"
# Each file is `fpcost estimate ARGS --format json` as run on the commit before parallelism
# (455018f); one GPU must give the same bytes, plus only the keys parallelism adds.
# qwen25vl7b and ov72b were rewritten when the cost model was aligned with the Qwen and
# OneVision pruners (branch cost-align): only the Qwen selection stage, the merger on every
# merged token, the notes, and OneVision's anchored selection layers changed. qwen25vl7b and
# videollava were rewritten when the selection's q·kᵀ moved to the tower's dtype (fp16
# logits, tensor cores): only their selection stages and the totals and peak activation
# built on them changed.
BASELINE_RUNS = {
    "llava7b": ["--model", "llava-1.5-7b", "--hardware", "a6000"],
    "qwen25vl7b": ["--model", "qwen2.5-vl-7b", "--hardware", "a100-80g", "--keep-ratio", "0.5",
                   "--output-tokens", "8"],
    "videollava": ["--model", "videollava", "--hardware", "h100-sxm", "--frame-tokens",
                   "64,64,64,64,64,64,64,64", "--flash-attention"],
    "next7b": ["--model", "llava-next-7b", "--hardware", "l40s", "--batch", "4", "--quant",
               "w4a16kv8"],
    "ov72b": ["--model", "llava-onevision-72b", "--hardware", "h200", "--output-tokens", "3",
              "--stage", "prefill"],
}
FP16 = 2  # bytes per element


def _without_parallel_keys(payload: dict) -> dict:
    assert payload["memory"].pop("num_gpus") == 1
    for totals in [*payload["stages"].values(), payload["end_to_end"]]:
        assert totals.pop("communication_time_s") == 0.0
    return payload


@pytest.mark.parametrize("name", sorted(BASELINE_RUNS))
@pytest.mark.parametrize("split", [[], ["--tensor-parallel", "1", "--pipeline-parallel", "1"]])
def test_one_gpu_output_is_byte_identical_to_before(capsys, name, split):
    code, out, _ = run_cli(capsys, "estimate", *BASELINE_RUNS[name], *split, "--format", "json")
    assert code == 0
    payload = _without_parallel_keys(json.loads(out))
    assert json.dumps(payload, indent=2) + "\n" == (BASELINE / f"{name}.json").read_text()


# --- sharding: per-GPU weights by hand ---------------------------------------------------

def _llama7b_layer_params(n: int) -> int:
    """One Vicuna-7B layer on one of n ranks: q/k/v/gate/up columns, o/down rows split n
    ways; the two RMSNorms (4096 each) replicated."""
    h, ffn = 4096, 11008
    return 4 * h * h // n + 3 * h * ffn // n + 2 * h


def test_llama7b_layer_params_by_hand_unsplit():
    assert _llama7b_layer_params(1) == 202_383_360  # 4·4096² + 3·4096·11008 + 2·4096


@pytest.mark.parametrize("n", [2, 4, 8, 32])
def test_llava7b_llm_weights_per_gpu_by_hand(n):
    model, plan = get_preset("llava-1.5-7b"), QuantPlan()
    h, vocab = 4096, 32064  # llava-hf's vocabulary: Vicuna's 32000 + image and pad tokens
    assert model.llm.vocab_size == vocab
    by_hand = 32 * _llama7b_layer_params(n) + 2 * h * math.ceil(vocab / n) + h  # + embed, head, norm
    (stage,) = stage_weight_bytes(model, Parallelism(n), plan, plan)
    assert stage["llm"] == by_hand * FP16
    whole = weight_bytes_by_part(model, plan, plan)  # the vision side is replicated
    assert stage["vision"] == whole["vision"] and stage["projector"] == whole["projector"]


def _qwen72b_layer_params(n: int) -> int:
    """One Qwen2-72B layer (8192 wide, 64 heads of 128, 8 KV heads, FFN 29568, q/k/v biases)
    on one of n ranks: 64/n query heads; 8/n KV heads, or one (replicated) past 8 ranks."""
    h, d, ffn = 8192, 128, 29568
    q, kv = 64 // n * d, max(8 // n, 1) * d
    attention = (h * q + q) + 2 * (h * kv + kv) + q * h
    return attention + 3 * h * (ffn // n) + 2 * h


@pytest.mark.parametrize("n", [1, 2, 8, 16, 64])
def test_qwen72b_llm_weights_per_gpu_by_hand(n):
    model, plan = get_preset("qwen2.5-vl-72b"), QuantPlan()
    h, vocab = 8192, 152064
    by_hand = 80 * _qwen72b_layer_params(n) + 2 * h * math.ceil(vocab / n) + h
    (stage,) = stage_weight_bytes(model, Parallelism(n), plan, plan)
    assert stage["llm"] == by_hand * FP16
    if n == 1:
        assert stage == weight_bytes_by_part(model, plan, plan)


def test_kv_heads_split_then_replicated():
    llm = get_preset("qwen2.5-vl-72b").llm
    assert [shard_model(get_preset("qwen2.5-vl-72b"), Parallelism(n)).llm.num_key_value_heads
            for n in (1, 2, 4, 8, 16, 32, 64)] == [8, 4, 2, 1, 1, 1, 1]
    rank = shard_model(get_preset("qwen2.5-vl-72b"), Parallelism(16)).llm
    assert rank.num_attention_heads == 4 and rank.resolved_head_dim == llm.resolved_head_dim


def test_kv_cache_per_gpu_follows_kv_heads():
    one = estimate("qwen2.5-vl-72b", "h200", output_tokens=9)
    for n, kv_share in ((2, 1 / 2), (8, 1 / 8), (16, 1 / 8)):  # past 8 ranks: one head each
        split = estimate("qwen2.5-vl-72b", "h200", output_tokens=9, tensor_parallel=n)
        assert memory_footprint(split).kv_cache_bytes == memory_footprint(one).kv_cache_bytes * kv_share


def test_one_rank_runs_a_share_of_the_llm_flops():
    one = estimate("llava-1.5-7b", "a100-80g")
    four = estimate("llava-1.5-7b", "a100-80g", tensor_parallel=4)
    # the projections, attention and LM head split 4 ways; norms and adds do not
    ratio = four.stage_totals("prefill").flops / one.stage_totals("prefill").flops
    assert 0.25 < ratio < 0.26
    assert four.stage_totals("vision").flops == one.stage_totals("vision").flops  # replicated


# --- traffic by hand ---------------------------------------------------------------------

def test_all_reduce_bytes_of_one_layer_by_hand():
    model, n, b, s, h = get_preset("llava-1.5-13b"), 4, 2, 616, 5120
    rows = {t.name: t for t in transfers(model, Parallelism(n), "prefill", s, b, FP16)}
    for name in ("attn_all_reduce", "mlp_all_reduce"):  # after o_proj, after down_proj
        t = rows[name]
        assert (t.collective, t.count, t.message_bytes) == (ALL_REDUCE, 40, b * s * h * FP16)
        assert t.bytes_per_gpu == 2 * 3 / 4 * b * s * h * FP16  # 2(N−1)/N·B
        assert t.num_steps == 2 * 3
    hardware = load_profile("a100-80g")  # 300 GB/s per direction, 3 µs a step
    one_layer_s = 2 * (2 * 3 / 4 * b * s * h * FP16 / 300e9 + 6 * 3e-6)
    by_hand = 40 * one_layer_s + rows["embed_all_reduce"].time_s(hardware) \
        + rows["logits_gather"].time_s(hardware)
    result = estimate("llava-1.5-13b", "a100-80g", tensor_parallel=n, batch=b, visual_tokens=576)
    assert result.stage_totals("prefill").communication_time_s == pytest.approx(by_hand, rel=1e-12)


def test_communication_is_in_every_time():
    one = estimate("llava-1.5-7b", "h100-sxm", output_tokens=5)
    two = estimate("llava-1.5-7b", "h100-sxm", output_tokens=5, pipeline_parallel=2)
    send_s = 2 * 616 * 4096 * FP16 / 450e9 + 3e-6  # hidden state + residual, one step
    prefill = two.stage_totals("prefill")
    assert prefill.communication_time_s == pytest.approx(send_s, rel=1e-12)
    assert prefill.time_s == pytest.approx(one.stage_totals("prefill").time_s + send_s, rel=1e-12)
    decode = two.stage_totals("decode")  # 4 steps, one token each
    assert decode.communication_time_s == pytest.approx(4 * (2 * 4096 * FP16 / 450e9 + 3e-6))
    assert two.ttft_s == pytest.approx(one.ttft_s + send_s, rel=1e-12)
    assert two.end_to_end().time_s == pytest.approx(
        one.end_to_end().time_s + prefill.communication_time_s + decode.communication_time_s)
    assert two.stage_totals("vision").communication_time_s == 0.0


# --- pipeline stages ---------------------------------------------------------------------

def test_stage_layers_follow_vllm():
    assert stage_layers(32, 1) == (32,)
    assert stage_layers(32, 2) == (16, 16)
    assert stage_layers(80, 3) == (27, 27, 26)  # the remainder before the last stage
    assert stage_layers(32, 5) == (6, 6, 7, 7, 6)


def test_pipeline_memory_split():
    model, plan = get_preset("llava-1.5-7b"), QuantPlan()
    h, vocab = 4096, 32064
    first, last = stage_weight_bytes(model, Parallelism(1, 2), plan, plan)
    layer = _llama7b_layer_params(1)
    assert first["llm"] == (16 * layer + vocab * h) * FP16  # + the embedding
    assert last["llm"] == (16 * layer + h + vocab * h) * FP16  # + final norm and LM head
    assert last["vision"] == last["projector"] == 0.0  # the tower sits on the first stage
    one = memory_footprint(estimate("llava-1.5-7b", "a6000"))
    two = memory_footprint(estimate("llava-1.5-7b", "a6000", pipeline_parallel=2))
    assert two.kv_cache_bytes == one.kv_cache_bytes / 2
    assert (two.pipeline_stage, two.layers_per_stage, two.num_gpus) == (0, (16, 16), 2)
    assert two.weight_bytes == first


def test_tied_embeddings_copy_on_the_last_stage():
    model, plan = get_preset("qwen2-vl-2b"), QuantPlan()  # tie_word_embeddings
    (whole,) = stage_weight_bytes(model, Parallelism(), plan, plan)
    first, last = stage_weight_bytes(model, Parallelism(1, 2), plan, plan)
    embed = model.llm.vocab_size * model.llm.hidden_size * FP16
    assert first["llm"] + last["llm"] == whole["llm"] + embed


def test_more_gpus_fit_a_72b_model():
    one = memory_footprint(estimate("qwen2.5-vl-72b", "a100-80g"))
    four = memory_footprint(estimate("qwen2.5-vl-72b", "a100-80g", tensor_parallel=4))
    assert not one.fits and one.max_batch_size == 0
    assert four.fits and four.max_batch_size >= 1 and four.num_gpus == 4


def test_sweep_rows_equal_estimate_under_parallelism():
    frame = sweep("qwen2.5-vl-72b", ["a100-80g", "h100-sxm"], keep_ratio=[0.5, 1.0],
                  batch=[1, 3], output_tokens=4, tensor_parallel=4, pipeline_parallel=2)
    for row in frame.to_dict("records"):
        result = estimate("qwen2.5-vl-72b", row["hardware"], keep_ratio=row["keep_ratio"],
                          batch=row["batch_size"], output_tokens=4, tensor_parallel=4,
                          pipeline_parallel=2)
        assert row["num_gpus"] == 8
        for stage in ("prefill", "decode"):
            totals = result.stage_totals(stage)
            assert row[f"{stage}_time_s"] == pytest.approx(totals.time_s, rel=1e-12)
            assert row[f"{stage}_communication_time_s"] == pytest.approx(
                totals.communication_time_s, rel=1e-12)
        assert row["ttft_s"] == pytest.approx(result.ttft_s, rel=1e-12)


def test_sweep_over_several_splits_is_each_split_in_turn():
    """Lists of degrees: split-major blocks, each the one-split sweep's rows (the one-GPU
    block with zero traffic and 1 x 1 GPUs), every row equal to estimate's."""
    frame = sweep("qwen2.5-vl-72b", "a100-80g", keep_ratio=[0.25, 1.0], tensor_parallel=[1, 4],
                  pipeline_parallel=[1, 2])
    assert list(zip(frame["tensor_parallel"], frame["pipeline_parallel"], frame["num_gpus"],
                    strict=True)) == [(1, 1, 1)] * 2 + [(1, 2, 2)] * 2 + [(4, 1, 4)] * 2 + [(4, 2, 8)] * 2
    single = frame[frame["num_gpus"] == 1]
    assert (single["prefill_communication_time_s"] == 0).all()
    alone = sweep("qwen2.5-vl-72b", "a100-80g", keep_ratio=[0.25, 1.0])
    assert single["ttft_s"].tolist() == alone["ttft_s"].tolist()
    for row in frame.to_dict("records"):
        result = estimate("qwen2.5-vl-72b", "a100-80g", keep_ratio=row["keep_ratio"],
                          tensor_parallel=row["tensor_parallel"],
                          pipeline_parallel=row["pipeline_parallel"])
        assert row["ttft_s"] == pytest.approx(result.ttft_s, rel=1e-12)
        assert row["prefill_communication_time_s"] == pytest.approx(
            result.stage_totals("prefill").communication_time_s, rel=1e-12, abs=0.0)


def test_sweep_cli_takes_lists_of_degrees(capsys):
    code, out, err = run_cli(capsys, "sweep", "--model", "llava-1.5-7b", "--tensor-parallel",
                             "1,2", "--pipeline-parallel", "1:2:1", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["tensor_parallel"], r["pipeline_parallel"]) for r in rows] == [
        (1, 1), (1, 2), (2, 1), (2, 2)]
    code, _, err = run_cli(capsys, "sweep", "--tensor-parallel", "1,0")
    one_line_error(code, err, "--tensor-parallel")


def test_sweep_on_one_gpu_has_no_parallel_columns():
    frame = sweep("llava-1.5-7b", "a6000", tensor_parallel=1)
    assert "num_gpus" not in frame.columns and "prefill_communication_time_s" not in frame.columns


# --- bad values: one line, exit 2 --------------------------------------------------------

@pytest.mark.parametrize(("args", "fragment"), [
    (["--tensor-parallel", "3"], "--tensor-parallel 3 must divide the llava-1.5-7b LLM's 32"),
    # estimate's scalar degrees: "0 is out of range; valid: 1..2147483647"; sweep's lists:
    # "0 is not in 1..2,147,483,647"
    (["--tensor-parallel", "0"], "--tensor-parallel"),
    (["--tensor-parallel", str(2**31)], "1..2"),
    (["--pipeline-parallel", "0"], "--pipeline-parallel"),
    (["--pipeline-parallel", "33"], "--pipeline-parallel 33 is more than the 32 decoder layers"),
    (["--tensor-parallel", "2", "--accounting", "llm-viewer"], "needs the fpcost accounting"),
    (["--frames", "4"], "runs 1 frame(s) per sample, not 4"),
    (["--frames", "0"], "0 is out of range"),
])
@pytest.mark.parametrize("command", ["estimate", "sweep"])
def test_bad_values_one_line(capsys, command, args, fragment):
    code, _, err = run_cli(capsys, command, "--model", "llava-1.5-7b", *args)
    one_line_error(code, err, fragment)
    if args[0] != "--frames" and args[1] in ("0", str(2**31)):
        assert ("out of range; valid: 1..2147483647" if command == "estimate"
                else "is not in 1..2,147,483,647") in err


def test_kv_heads_neither_dividing_nor_multiple(capsys):
    # qwen2-vl-7b: 28 heads, 4 KV heads; 7 ranks divide the heads, but 4 % 7 and 7 % 4 ≠ 0
    code, _, err = run_cli(capsys, "estimate", "--model", "qwen2-vl-7b", "--tensor-parallel", "7")
    one_line_error(code, err, "must divide the 4 KV heads of qwen2-vl-7b, or be a multiple")


def test_profile_without_interconnect_refused(capsys, tmp_path):
    text = (DATA_DIR / "a6000.toml").read_text()
    start = text.index("\n[interconnect]")
    end = text.index("\n[sources]")
    kept = [line for line in text[end:].splitlines() if not line.startswith('"interconnect.')]
    path = tmp_path / "bare.toml"
    path.write_text(text[:start] + "\n".join(kept) + "\n")
    code, _, _ = run_cli(capsys, "estimate", "--hardware", path)  # one GPU: fine without
    assert code == 0
    code, _, err = run_cli(capsys, "estimate", "--hardware", path, "--tensor-parallel", "2")
    one_line_error(code, err, "gives no [interconnect]")
    with pytest.raises(HardwareError):
        estimate(hardware=load_profile(path), pipeline_parallel=2)


def test_parallelism_values_checked_in_the_library():
    for bad in (0, -1, 2**31, 1.5, True, "2"):
        with pytest.raises(WorkloadError):
            Parallelism(bad)


# --- --frames ------------------------------------------------------------------------------

@pytest.mark.parametrize("frames", [1, 2, 7, 16])
def test_qwen_frames_follow_video_grid(capsys, frames):
    code, out, _ = run_cli(capsys, "estimate", "--model", "qwen2-vl-7b", "--frames", frames,
                           "--format", "json")
    assert code == 0
    workload = json.loads(out)["workload"]
    grid = video_grid(frames, 720, 1280)  # the default 1280x720 frame
    assert workload["num_unpruned_visual_tokens"] == grid.num_merged_tokens(2)
    assert workload["num_visual_tokens"] == grid.num_merged_tokens(2)
    assert workload["num_vision_images_per_sample"] == math.ceil(frames / 2) == grid.t
    assert workload["num_frames"] == frames


def test_onevision_frames_pooled(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--model", "llava-onevision-7b", "--frames", "16",
                           "--keep-ratio", "0.5", "--format", "json")
    assert code == 0
    workload = json.loads(out)["workload"]
    assert workload["num_unpruned_visual_tokens"] == 16 * 196 + 1  # 27x27 pooled to 14x14
    assert workload["num_visual_tokens"] == round((16 * 196 + 1) * 0.5)


def test_video_llava_takes_only_its_eight_frames(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--model", "videollava", "--frames", "8",
                           "--format", "json")
    assert code == 0 and json.loads(out)["workload"]["num_unpruned_visual_tokens"] == 8 * 256
    code, _, err = run_cli(capsys, "estimate", "--model", "videollava", "--frames", "16")
    one_line_error(code, err, "--frames 16: videollava runs 8 frame(s) per sample, not 16")


def test_sweep_frames_equal_estimate():
    frame = sweep("qwen2.5-vl-7b", "h100-sxm", keep_ratio=[0.25, 1.0], frames=6)
    for row in frame.to_dict("records"):
        result = estimate("qwen2.5-vl-7b", "h100-sxm", keep_ratio=row["keep_ratio"], frames=6)
        assert row["num_visual_tokens"] == result.workload.num_visual_tokens
        assert row["ttft_s"] == pytest.approx(result.ttft_s, rel=1e-12)


# --- the [interconnect] table of a profile ---------------------------------------------------

def _profile_dict(**interconnect):
    from fpcost.hardware_profiles._toml import tomllib

    data = tomllib.loads((DATA_DIR / "h100-sxm.toml").read_text())
    data["interconnect"] = interconnect
    data["sources"] = {k: v for k, v in data["sources"].items() if "interconnect" not in k}
    return data


@pytest.mark.parametrize(("table", "fragment"), [
    ({"bandwidth_gb_per_s": 450, "latency_us": 3}, "[interconnect] kind is missing; valid: nvlink3"),
    ({"kind": "nvlink5", "bandwidth_gb_per_s": 900, "latency_us": 3}, "kind = 'nvlink5' is unknown"),
    ({"kind": "nvlink4", "latency_us": 3}, "bandwidth_gb_per_s missing for kind 'nvlink4'"),
    ({"kind": "none", "bandwidth_gb_per_s": 32}, 'kind = "none" (no link) takes no bandwidth'),
    ({"kind": "pcie4", "bandwidth_gb_per_s": -32, "latency_us": 10},
     "[interconnect] bandwidth_gb_per_s = -32 is out of range; valid: 0.001 to 1e+06 GB/s"),
    ({"kind": "pcie4", "bandwidth_gb_per_s": 32, "latency_us": 0},
     "[interconnect] latency_us = 0 is out of range"),
    ({"kind": "pcie4", "bandwidth_gb_per_s": 32, "latency_us": 10, "lanes": 16},
     "unknown key [interconnect] 'lanes'; valid: kind, bandwidth_gb_per_s, latency_us"),
])
def test_interconnect_table_checked(table, fragment):
    from fpcost.hardware_profiles.schema import profile_from_toml_dict

    with pytest.raises(HardwareError) as error:
        profile_from_toml_dict(_profile_dict(**table), "x.toml")
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_interconnect_round_trips_through_the_writer():
    from fpcost.hardware_profiles.schema import profile_from_toml_dict, profile_to_toml_dict

    for name in ("h100-sxm", "l40s", "a6000"):
        profile = load_profile(name)
        again = profile_from_toml_dict(profile_to_toml_dict(profile), "again.toml")
        assert again == profile and again.interconnect_kind == profile.interconnect_kind
    none = profile_from_toml_dict(_profile_dict(kind="none"), "x.toml")
    assert none.interconnect_kind == "none" and none.interconnect_bandwidth_bytes_per_s is None
    with pytest.raises(HardwareError, match="is not linked to other GPUs"):
        estimate(hardware=none, tensor_parallel=2)


def test_kv_bytes_per_token_by_hand():
    from fpcost.costmodel.memory import kv_bytes_per_token

    model, plan = get_preset("qwen2.5-vl-72b"), QuantPlan()
    assert kv_bytes_per_token(model, Parallelism(), plan) == 80 * 2 * 8 * 128 * FP16
    assert kv_bytes_per_token(model, Parallelism(4, 3), plan) == 27 * 2 * 2 * 128 * FP16
    assert kv_bytes_per_token(model, Parallelism(16), plan) == 80 * 2 * 1 * 128 * FP16
    one = memory_footprint(estimate("qwen2.5-vl-72b", "h200", tensor_parallel=4,
                                    pipeline_parallel=3, batch=2))
    context = one.kv_cache_bytes / (2 * kv_bytes_per_token(model, Parallelism(4, 3), plan))
    assert context == 1196 + 40 + 1  # prompt + one decode step, on the 27-layer stage


def test_tokens_from_with_parallelism(tmp_path, capsys):
    path = tmp_path / "kept.json"
    path.write_text(json.dumps({"fpcost_prune_version": 1, "images": [
        {"image": "a.png", "num_tokens": 576, "num_kept": 288}]}))
    code, out, _ = run_cli(capsys, "estimate", "--tokens-from", path, "--format", "json")
    one = json.loads(out)["images"][0]
    code, out, _ = run_cli(capsys, "estimate", "--tokens-from", path, "--tensor-parallel", "2",
                           "--format", "json")
    two = json.loads(out)["images"][0]
    assert code == 0 and two["num_visual_tokens"] == 288 and two["time_s"] < one["time_s"]
    code, _, err = run_cli(capsys, "estimate", "--tokens-from", path, "--frames", "1")
    one_line_error(code, err, "do not combine it with --frames")

"""The whole request: stages, pruning and its selection cost, N-step decode, FlashAttention's
causal tiles, memory footprint (hand counts and exact cross-checks)."""

import json

import pytest

from fpcost.costmodel.accounting import FPCOST, LLM_VIEWER
from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.flash import flash_work
from fpcost.costmodel.llm import DecoderPass, decoder_ops
from fpcost.costmodel.memory import footprint_bytes, max_batch_size, memory_footprint
from fpcost.costmodel.pipeline import stage_ops
from fpcost.costmodel.presets import CLIP_VIT_L14_336, PRESETS
from fpcost.costmodel.pruning import SelectionSpec
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.roofline import time_op
from fpcost.costmodel.selection_cost import selection_ops
from fpcost.costmodel.workload import Workload
from tests.cli_helpers import run_cli

LLAVA = PRESETS["llava-1.5-7b"]


def test_stages_and_end_to_end(a6000):
    full = estimate(LLAVA, Workload(576, 40, num_output_tokens=8), a6000)
    assert full.stages == ("vision", "projector", "prefill", "decode")
    pruned = estimate(LLAVA, Workload(288, 40, num_output_tokens=8), a6000)
    assert pruned.stages == ("vision", "selection", "projector", "prefill", "decode")
    totals = pruned.totals()
    e2e = pruned.end_to_end()
    assert e2e.time_s == pytest.approx(sum(t.time_s for t in totals.values()), rel=1e-12)
    assert pruned.ttft_s == pytest.approx(sum(totals[s].time_s for s in
                                              ("vision", "selection", "projector", "prefill")))
    assert pruned.tpot_s == pytest.approx(totals["decode"].time_s / 7)  # 8 tokens, 7 decode steps
    # no selection cost asked for: the stage disappears, the LLM still sees 288 tokens
    free = estimate(LLAVA, Workload(288, 40), a6000, selection=None)
    assert "selection" not in free.stages
    assert free.stage_totals("projector").flops == pruned.stage_totals("projector").flops


def test_default_decode_is_llm_viewers_single_step(a6000):
    """Without --output-tokens the decode stage is one step over the prompt's cache, so the
    LLM stages stay LLM-Viewer's exactly; the vision stages ride along."""
    mm = estimate(LLAVA, Workload(576, 40), a6000, accounting="llm-viewer")
    llm_only = estimate(LLAVA.__class__(name="x", kind="llm", llm=LLAVA.llm), Workload(576, 40), a6000,
                        accounting="llm-viewer")
    for stage in ("prefill", "decode"):
        assert mm.stage_totals(stage) == llm_only.stage_totals(stage)
    assert "vision" in mm.stages


def test_decode_steps_are_timed_one_by_one(a6000):
    """N steps: operator sums over steps, time = sum over steps of each step's roofline time.
    51 generated tokens = the prefill's and 50 decode steps."""
    workload = Workload(576, 40, num_output_tokens=51)
    result = estimate(LLAVA, workload, a6000, stages=("decode",))
    expected_time = expected_flops = 0.0
    for i in range(50):
        for op in decoder_ops(LLAVA.llm, QuantPlan(), DecoderPass("decode", 1, 616 + i, 1), FPCOST,
                              False, a6000.onchip_buffer_bytes):
            t = time_op(op, a6000)
            expected_time += op.count * max(t.compute_time_s, t.memory_time_s)
            expected_flops += op.count * op.flops
    totals = result.stage_totals("decode")
    assert totals.time_s == pytest.approx(expected_time, rel=1e-12)
    assert totals.flops == pytest.approx(expected_flops, rel=1e-12)
    for row in result.operators:
        assert row.time_s >= row.compute_time_s * (1 - 1e-12)
        assert row.time_s >= row.memory_time_s * (1 - 1e-12)
    one = estimate(LLAVA, Workload(576, 40, num_output_tokens=2), a6000, stages=("decode",))
    assert one.stage_totals("decode").time_s < totals.time_s / 49


def test_decode_bound_can_flip_between_steps(a6000):
    """A fused decode attention step costs, per sample and head, 5 vector + 4·128 tensor
    FLOPs and 2·128·2 K/V bytes per cached token, plus 2·128·2 fixed bytes (q in, output
    out). With a vector rate chosen so compute overtakes memory at a 1,616-token cache,
    2,000 steps from 616 to 2,615 are memory- then compute-bound: the row is "mixed" and its
    time (sum of per-step maxima) exceeds both summed times."""
    from dataclasses import replace

    per_token_memory_s = 512 / a6000.hbm_bandwidth_bytes_per_s
    fixed_memory_s = 512 / a6000.hbm_bandwidth_bytes_per_s
    per_token_tensor_s = 512 / a6000.tensor_fp16_flops_per_s
    vector_rate = 5 / (per_token_memory_s + fixed_memory_s / 1616 - per_token_tensor_s)
    hw = replace(a6000, vector_fp16_flops_per_s=vector_rate)
    result = estimate(LLAVA, Workload(576, 40, num_output_tokens=2001), hw, stages=("decode",),
                      flash_attention=True)
    row = next(r for r in result.operators
               if r.op.stage == "decode" and r.op.name == "fused_attention")
    assert row.bound == "mixed"
    assert row.time_s > max(row.compute_time_s, row.memory_time_s)
    assert {r.bound for r in result.operators} <= {"compute", "memory", "mixed"}


@pytest.mark.parametrize("n", [0, 1])
def test_one_output_token_is_the_prefill_alone(a6000, n):
    """generate(max_new_tokens=1): the prefill yields the token, no decode step runs (0 is
    accepted as the same); the cache holds the prompt."""
    result = estimate(LLAVA, Workload(576, 40, num_output_tokens=n), a6000)
    assert result.workload.num_decode_steps == 0
    assert result.stage_totals("decode").time_s == 0 and result.tpot_s is None
    assert result.end_to_end().time_s == pytest.approx(result.ttft_s)
    assert memory_footprint(result).kv_cache_bytes == 616 * 32 * 2 * 4096 * 2
    # --stage decode with no decode step: zero rows, no division by zero
    shown = estimate(LLAVA, Workload(576, 40, num_output_tokens=n), a6000, stages=("decode",))
    assert shown.totals()["decode"].time_s == 0 and shown.ttft_s == result.ttft_s


def test_output_tokens_follow_generate(a6000):
    """N generated tokens = the prefill's + N − 1 decode steps over caches of prompt + i;
    TPOT = decode time / (N − 1); the KV cache at the end holds prompt + N − 1 tokens."""
    result = estimate(LLAVA, Workload(576, 40, num_output_tokens=5), a6000)
    assert result.workload.num_decode_steps == 4
    assert result.workload.num_final_context_tokens == 616 + 4
    steps = sum(estimate(LLAVA, Workload(576 + i, 40 - 0, num_output_tokens=2), a6000)
                .stage_totals("decode").time_s for i in range(4))
    assert result.stage_totals("decode").time_s == pytest.approx(steps, rel=1e-12)
    assert result.tpot_s == pytest.approx(steps / 4, rel=1e-12)
    assert result.end_to_end().time_s == pytest.approx(result.ttft_s + steps, rel=1e-12)


@pytest.mark.parametrize("stage", ["vision", "projector", "prefill", "decode", "selection"])
def test_latencies_describe_the_whole_request_whatever_is_shown(a6000, stage):
    """--stage only chooses the rows listed: TTFT, TPOT and end-to-end stay the request's."""
    whole = estimate(LLAVA, Workload(288, 40, num_output_tokens=16), a6000)
    shown = estimate(LLAVA, Workload(288, 40, num_output_tokens=16), a6000, stages=(stage,))
    assert tuple(shown.totals()) == (stage,)
    assert shown.ttft_s == whole.ttft_s and shown.tpot_s == whole.tpot_s
    assert shown.end_to_end() == whole.end_to_end()


def test_selection_hand_counts():
    """CLIP ViT-L/14-336, one image, a one-layer selection: pivotal layer 21 (range(24)[-3:-2])
    recomputed in full, 16 heads × 577² scores (fp16 logits, fp32 softmax); the penultimate
    layer 22 only for the pivotal rows, at most k = 192 of them. (The default is now a two-layer union with
    k = 144, the pruner's default; hand counts stay on the one-layer case.)"""
    spec = SelectionSpec((-3, -2), k=192)
    ops = {op.name: op for op in selection_ops(CLIP_VIT_L14_336, spec, 1, 24)}
    scores = 16 * 577 * 577
    assert spec.resolved_layers(24) == (21, 22)
    assert SelectionSpec().resolved_layers(24) == (20, 21, 22)
    assert SelectionSpec().pivotal_layers(24) == (20, 21)
    # k follows the pruner's k = round(0.25 N): 144 of LLaVA-1.5's 576, 64 of a 256-token frame
    assert SelectionSpec().resolved_k(576) == 144 and SelectionSpec().resolved_k(256) == 64
    assert SelectionSpec(k=192).resolved_k(256) == 192
    assert ops["map_qk"].count == 1 and ops["column_sum"].count == 1 and ops["top_k"].count == 1
    assert ops["map_qk"].tensor_flops == 2 * 16 * 577 * 64 * 577
    # q·kᵀ in the tower's 16-bit dtype (tensor cores), fp16 logits; softmax on in fp32
    assert ops["map_qk"].precision == "fp16"
    assert ops["map_qk"].act_read_bytes == 2 * 577 * 1024 * 2  # captured q and k, 16-bit
    assert ops["map_qk"].act_write_bytes == scores * 2
    assert ops["map_softmax"].act_read_bytes == scores * 2
    assert ops["map_softmax"].act_write_bytes == scores * 4
    # a float32 tower: fp32 matmul and logits
    fp32 = {op.name: op for op in selection_ops(CLIP_VIT_L14_336, spec, 1, 24, act_bits=32)}
    assert fp32["map_qk"].precision == "fp32" and fp32["map_qk"].act_write_bytes == scores * 4
    assert ops["map_head_mean"].act_write_bytes == 577 * 577 * 4
    # the complementary layer: 192 query rows against all 577 keys
    assert ops["complementary_rows_qk"].tensor_flops == 2 * 16 * 192 * 64 * 577
    assert ops["complementary_rows_qk"].act_read_bytes == (192 + 577) * 1024 * 2
    assert ops["complementary_rows_softmax"].act_write_bytes == 16 * 192 * 577 * 4
    # IQR thresholds over those rows, quartiles by sorting
    assert ops["iqr_threshold"].act_read_bytes == 192 * 577 * 4


def test_selection_errors():
    with pytest.raises(Exception, match="only 23 layers run"):
        selection_ops(CLIP_VIT_L14_336, SelectionSpec((-1,)), 1, 23)
    with pytest.raises(Exception, match="out of range"):
        SelectionSpec((-30,)).resolved_layers(24)


def test_vision_layers_feature(a6000):
    all_layers = estimate(LLAVA, Workload(576, 40), a6000, stages=("vision",))
    feature = estimate(LLAVA, Workload(576, 40), a6000, stages=("vision",), vision_layers="feature")
    assert feature.stage_totals("vision").flops < all_layers.stage_totals("vision").flops
    assert {r.op.count for r in feature.operators if r.op.block == "encoder"} == {23}


def test_video_llava_runs_eight_frames(a6000):
    video = PRESETS["videollava"]
    ops = {op.name: op for op in stage_ops("vision", video, Workload(2048, 40, batch_size=2),
                                           estimate(video, Workload(2048, 40), a6000).settings)}
    assert ops["q_proj"].act_read_bytes == 2 * 8 * 257 * 1024 * 2


def test_flash_causal_tiles_hand_count():
    # 256 queries over 256 keys in tiles of 128: 3 of the 4 tiles; K/V rows 128 + 256
    work = flash_work(256, 256, 128, causal=True)
    assert (work.score_elements, work.kv_rows_read) == (128 * 128 + 128 * 256, 384)
    assert flash_work(256, 256, 128, causal=False).kv_rows_read == 512
    # decode: one query sees every key
    assert flash_work(1, 1000, 128, causal=True) == flash_work(1, 1000, 128, causal=False)


def test_flash_causal_tiles_brute_force():
    def brute(s_q, s_kv, b):
        score = rows = 0
        for i in range(-(-s_q // b)):
            last_row = min((i + 1) * b, s_q) - 1 + (s_kv - s_q)  # its position among the keys
            kv_rows = min(-(-(last_row + 1) // b) * b, s_kv)  # whole K blocks, clipped
            rows += kv_rows
            score += (min((i + 1) * b, s_q) - i * b) * kv_rows
        return score, rows

    for b in (1, 3, 4, 64):
        for s_q in range(1, 40):
            for s_kv in range(s_q, s_q + 20):
                work = flash_work(s_q, s_kv, b, causal=True)
                assert (work.score_elements, work.kv_rows_read) == brute(s_q, s_kv, b)


def test_flash_causal_only_in_fpcost_accounting(a6000):
    step = DecoderPass("prefill", 2088, 2088, 1)
    fp = next(op for op in decoder_ops(LLAVA.llm, QuantPlan(), step, FPCOST, True, 21504e3)
              if op.name == "fused_attention")
    lv = next(op for op in decoder_ops(LLAVA.llm, QuantPlan(), step, LLM_VIEWER, True, 21504e3)
              if op.name == "fused_attention")
    assert fp.tensor_flops < 0.55 * lv.tensor_flops  # about half: the diagonal tiles stay whole
    assert fp.kv_read_bytes < 0.55 * lv.kv_read_bytes
    # without FlashAttention the scores are materialized whole in both modes
    unfused = {op.name: op for op in decoder_ops(LLAVA.llm, QuantPlan(), step, FPCOST, False, 21504e3)}
    assert unfused["qk_matmul"].act_write_bytes == 32 * 2088 * 2088 * 2


def test_memory_footprint(a6000):
    result = estimate(LLAVA, Workload(576, 40, num_output_tokens=100), a6000)
    memory = memory_footprint(result)
    assert memory.total_weight_bytes == 2 * 7_063_427_072
    # K and V, 32 layers, 4096 wide, 16-bit, for 616 + 99 positions (100 tokens, 99 steps)
    assert memory.kv_cache_bytes == 715 * 32 * 2 * 4096 * 2
    # unfused prefill softmax reads and writes the 32 × 616² scores; the residual stream too
    assert memory.peak_activation_bytes == 2 * 32 * 616 * 616 * 2 + 616 * 4096 * 2
    assert memory.peak_activation_operator == "prefill/decoder/softmax"
    assert memory.fits and memory.total_bytes <= a6000.memory_bytes
    b = memory.max_batch_size
    settings = result.settings
    assert footprint_bytes(LLAVA, Workload(576, 40, b, 100), settings) <= a6000.memory_bytes
    assert footprint_bytes(LLAVA, Workload(576, 40, b + 1, 100), settings) > a6000.memory_bytes


def test_nothing_fits_a_small_device(a6000):
    from dataclasses import replace

    small = replace(a6000, memory_bytes=10e9)  # 14 GB of weights do not fit 10 GB
    result = estimate(LLAVA, Workload(576, 40), small)
    assert not memory_footprint(result).fits
    assert max_batch_size(LLAVA, Workload(576, 40), result.settings, small.memory_bytes) == 0



def test_cli_json_shape(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--model", "videollava", "--keep-ratio", "0.25",
                           "--output-tokens", "16", "--format", "json")
    data = json.loads(out)
    assert code == 0
    assert list(data["stages"]) == ["vision", "selection", "projector", "prefill", "decode"]
    for totals in [*data["stages"].values(), data["end_to_end"]]:
        assert {"flops", "time_s", "memory_access_bytes", "activation_store_bytes"} <= set(totals)
    assert data["end_to_end"]["time_s"] == pytest.approx(sum(t["time_s"] for t in data["stages"].values()))
    # 16 generated tokens: the prefill's and 15 decode steps
    assert data["workload"]["num_decode_steps"] == 15
    assert data["ttft_s"] + 15 * data["tpot_s"] == pytest.approx(data["end_to_end_latency_s"])
    assert data["workload"]["num_visual_tokens"] == 512 and data["workload"]["pruned"]
    assert data["settings"]["selection"]["selection_layers"] == [20, 21, 22]  # the default
    assert {"weight_bytes", "kv_cache_bytes", "peak_activation_bytes", "fits", "max_batch_size"} \
        <= set(data["memory"])


def test_cli_frame_tokens(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--model", "videollava", "--frame-tokens",
                           "64,64,64,64,64,64,64,64", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["workload"]["num_visual_tokens"] == 512
    assert data["workload"]["frame_tokens"] == [64] * 8 and "selection" in data["stages"]


def test_cli_llm_viewer_notes_and_csv(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--accounting", "llm-viewer", "--format", "json")
    notes = " ".join(json.loads(out)["settings"]["notes"])
    assert "fpcost additions" in notes and "LLM-Viewer (2024) exactly" in notes
    code, out, _ = run_cli(capsys, "estimate", "--format", "csv")
    stages = [line.split(",")[0] for line in out.strip().splitlines()[1:]]
    assert stages == ["vision", "projector", "prefill", "decode", "end_to_end"]


def test_cli_table_shows_memory(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--model", "llava-1.5-13b", "--keep-ratio", "0.5",
                           "--output-tokens", "32", "--flash-attention")
    for fragment in ("selection", "end_to_end", "Time to first token", "Largest batch", "Fits?"):
        assert fragment in out


NON_VIT = {"model_type": "llava", "text_config": {"model_type": "llama"},
           "vision_config": {"model_type": "convnext", "hidden_sizes": [96, 192]}}


@pytest.mark.parametrize("args, fragment", [
    (["--model", "llava-next-7b", "--image-size", "0x336"], "width = 0 must be a positive integer"),
    (["--model", "llava-next-7b", "--image-size", "-3x336"], "is not WIDTHxHEIGHT"),
    (["--model", "llava-next-7b", "--image-size", "336.5x336"], "is not WIDTHxHEIGHT"),
    (["--model", "llava-next-7b", "--image-size", "big"], "is not WIDTHxHEIGHT"),
    (["--output-tokens", "-1"], "-1 is not in the range 1<=x<=10000000"),
    (["--output-tokens", "0"], "0 is not in the range 1<=x<=10000000"),
    (["--output-tokens", "two"], "'two' is not a valid integer"),
    (["--model", "videollava", "--frame-tokens", "64,64"], "must be 8 counts"),
    (["--model", "videollava", "--frame-tokens", "300,0,0,0,0,0,0,0"], "each in 0..256"),
    (["--model", "videollava", "--frame-tokens", "a,b"], "comma-separated non-negative integers"),
    (["--frame-tokens", "64"], "--frame-tokens needs a video model"),
    (["--stage", "selection"], "stage 'selection' does not run here"),
    (["--vision-layers", "some"], "'some' is not one of"),
    (["--selection-layers", "-40"], "out of range"),
    (["--selection-layers", "-1", "--vision-layers", "feature", "--keep-ratio", "0.5"],
     "only 23 layers run"),
])
def test_bad_input_one_line(capsys, args, fragment):
    code, out, err = run_cli(capsys, "estimate", *args)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def test_non_vit_config_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(NON_VIT))
    code, out, err = run_cli(capsys, "estimate", "--config", str(path))
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "vision tower model_type 'convnext' is not a supported ViT" in err

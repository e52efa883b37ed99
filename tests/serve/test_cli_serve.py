"""``fpcost serve``: the JSON contract of issue 12, side-by-side runs, traces, results
files, the rate search, and bad input as one line with exit code 2."""

import json

import pytest

from tests.cli_helpers import one_line_error, run_cli

SUMMARY_KEYS = {"num_requests", "num_completed", "duration_s", "throughput_requests_per_s",
                "throughput_output_tokens_per_s", "mean_latency_s", "mean_requests_in_system",
                "ttft_s", "tpot_s", "latency_s"}


def serve_json(capsys, *args):
    code, out, err = run_cli(capsys, "serve", *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_summary_contract(capsys):
    data = serve_json(capsys, "--model", "llava-1.5-7b", "--hardware", "a6000", "--rate", "2",
                      "--num-requests", "50", "--seed", "1", "--output-tokens", "16")
    summary = data["summary"]
    assert SUMMARY_KEYS <= summary.keys()
    for key in ("ttft_s", "tpot_s", "latency_s"):
        assert set(summary[key]) == {"p50", "p90", "p99"}
        assert 0 < summary[key]["p50"] <= summary[key]["p90"] <= summary[key]["p99"]
    assert summary["num_requests"] == summary["num_completed"] == 50
    assert data["settings"]["rate"] == 2 and data["kv_cache"]["num_blocks"] > 0


def test_keep_ratio_serves_both_side_by_side(capsys):
    data = serve_json(capsys, "--rate", "40", "--num-requests", "300", "--keep-ratio", "0.25",
                      "--output-tokens", "64")
    assert data["settings"]["summary_of"] == "pruned" and data["summary"] == data["pruned"]["summary"]
    unpruned, pruned = data["unpruned"], data["pruned"]
    assert unpruned["mean_visual_tokens"] == 576 and pruned["mean_visual_tokens"] == 144
    assert (pruned["summary"]["throughput_requests_per_s"]
            > unpruned["summary"]["throughput_requests_per_s"])
    assert pruned["summary"]["ttft_s"]["p50"] < unpruned["summary"]["ttft_s"]["p50"]


def test_csv_has_one_row_per_server(capsys):
    code, out, _ = run_cli(capsys, "serve", "--rate", "1", "--num-requests", "20",
                           "--keep-ratio", "0.5", "--format", "csv")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and lines[0].startswith("server,num_requests")
    assert [line.split(",")[0] for line in lines[1:]] == ["unpruned", "pruned"]


def test_csv_carries_the_split_on_more_than_one_gpu(capsys):
    code, out, err = run_cli(capsys, "serve", "--model", "llava-1.5-7b", "--tensor-parallel", "2",
                             "--pipeline-parallel", "2", "--rate", "1", "--num-requests", "10",
                             "--format", "csv")
    assert code == 0, err
    header, row = out.strip().splitlines()
    assert header.endswith("mean_visual_tokens,tensor_parallel,pipeline_parallel,num_gpus")
    assert row.endswith(",2,2,4")
    code, out, _ = run_cli(capsys, "serve", "--rate", "1", "--num-requests", "10", "--format", "csv")
    assert out.splitlines()[0].endswith("mean_visual_tokens")  # one GPU: the header as before


def test_table_renders(capsys):
    code, out, _ = run_cli(capsys, "serve", "--rate", "1", "--num-requests", "20",
                           "--slo-ttft", "0.5", "--slo-tpot", "0.05")
    assert code == 0 and "Throughput (requests/s)" in out and "SLO attainment" in out


def test_trace_jsonl_and_csv_agree(tmp_path, capsys):
    rows = [(0.0, 576, 40, 8), (0.01, 288, 10, 4), (0.5, None, 40, 2)]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps({"arrival_time_s": a, "visual_tokens": v,
                                           "text_tokens": t, "output_tokens": o})
                               for a, v, t, o in rows) + "\n")
    csv = tmp_path / "t.csv"
    csv.write_text("arrival_time_s,visual_tokens,text_tokens,output_tokens\n"
                   + "".join(f"{a},{'' if v is None else v},{t},{o}\n" for a, v, t, o in rows))
    first = serve_json(capsys, "--trace", jsonl)["summary"]
    second = serve_json(capsys, "--trace", csv)["summary"]
    assert first == second and first["num_completed"] == 3


def test_tokens_from_samples_kept_counts(tmp_path, capsys):
    path = tmp_path / "kept.json"
    path.write_text(json.dumps({"fpcost_prune_version": 1, "images": [
        {"image": "a.png", "num_tokens": 576, "num_kept": 288},
        {"image": "b.png", "num_tokens": 576, "num_kept": 144}]}))
    data = serve_json(capsys, "--tokens-from", path, "--rate", "5", "--num-requests", "100")
    assert 144 < data["pruned"]["mean_visual_tokens"] < 288
    assert data["unpruned"]["mean_visual_tokens"] == 576


def test_max_rate_search_meets_the_target(capsys):
    data = serve_json(capsys, "--max-rate", "--slo-ttft", "0.5", "--slo-tpot", "0.05",
                      "--num-requests", "200", "--output-tokens", "32", "--keep-ratio", "0.5")
    found = data["max_rate"]
    assert found["pruned"]["max_rate_requests_per_s"] >= found["unpruned"]["max_rate_requests_per_s"] > 0
    assert data["summary"]["slo"]["attainment"] >= 0.9
    failing = [t for t in found["pruned"]["trials"] if t["attainment"] < 0.9]
    assert failing and min(t["rate"] for t in failing) > found["pruned"]["max_rate_requests_per_s"]


def test_output_file_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "run.json", tmp_path / "lat.png"
    code, stdout, _ = run_cli(capsys, "serve", "--rate", "2", "--num-requests", "30",
                              "--keep-ratio", "0.5", "--output", out, "--plot", png,
                              "--plot-rates", "1,4")
    assert code == 0 and stdout == ""
    assert "summary" in json.loads(out.read_text())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, fragment", [
    (["--rate", "0"], "--rate 0.0 must be a finite number of requests per second > 0"),
    (["--rate", "-1"], "must be a finite number"),
    (["--rate", "nan"], "must be a finite number"),
    ([], "give --rate R"),
    (["--rate", "1", "--keep-ratio", "1.5"], "is not a fraction in (0, 1]"),
    (["--rate", "1", "--num-requests", "0"], "--num-requests"),
    (["--max-rate"], "--max-rate needs an SLO"),
    (["--rate", "1", "--slo-ttft", "0"], "must be a finite number of seconds > 0"),
    (["--rate", "1", "--image-size", "640x480"], "changes nothing for llava-1.5-7b"),
    (["--rate", "1", "--hardware", "rtx4090", "--model", "llava-1.5-13b"], "leaves no KV cache"),
    (["--rate", "1", "--gpu-memory-utilization", "0"], "--gpu-memory-utilization 0.0 must be in"),
    (["--max-rate", "--slo-ttft", "1", "--slo-target", "1.5"], "1.5 is not a fraction in (0, 1]"),
])
def test_bad_input_is_one_line(capsys, args, fragment):
    code, _, err = run_cli(capsys, "serve", *args)
    one_line_error(code, err, fragment)


@pytest.mark.parametrize("text, fragment", [
    ("", "the file is empty"),
    ("arrival_time_s,text_tokens\n", "no requests"),
    ('{"arrival_time_s": -1}\n', "line 1 column arrival_time_s: '-1' must be finite and >= 0"),
    ('{"arrival_time_s": 0}\n{"arrival_time_s": 1, "output_tokens": 0}\n',
     "line 2 column output_tokens: '0' must be an integer in 1..10,000,000"),
    ('{"arrival_time_s": 0, "visual_tokens": 900}\n', "line 1 column visual_tokens: '900'"),
    ('{"arrival_time_s": 0, "image_size": "640x480"}\n', "line 1 column image_size"),
    ('{"arrival_time_s": 0, "tokens": 5}\n', "column 'tokens' is unknown"),
    ('{"arrival_time_s": 0}\nnot json\n', "line 2 is not JSON"),
    ("arrival_time_s,text_tokens\n0,4\nx,4\n", "line 3 column arrival_time_s: 'x' must be a number"),
    ("arrival_time_s,text_tokens\n0,4,5\n", "line 2 has 3 cells, the header 2"),
])
def test_bad_trace_is_one_line_naming_line_and_column(tmp_path, capsys, text, fragment):
    path = tmp_path / ("t.jsonl" if text.startswith("{") else "t.csv")
    path.write_text(text)
    code, _, err = run_cli(capsys, "serve", "--trace", path)
    one_line_error(code, err, fragment)


def test_trace_excludes_rate(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("arrival_time_s\n0\n")
    code, _, err = run_cli(capsys, "serve", "--trace", path, "--rate", "1")
    one_line_error(code, err, "do not combine it with --rate")


def test_trace_image_sizes_set_visual_tokens(tmp_path, capsys):
    """LLaVA-NeXT: a row's image size sets its AnyRes layout's tokens, as estimate's would."""
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"arrival_time_s": 0, "image_size": "1344x336"}) + "\n"
                    + json.dumps({"arrival_time_s": 100, "image_size": "336x336"}) + "\n")
    data = serve_json(capsys, "--model", "llava-next-7b", "--trace", path, "--output-tokens", "2")
    expected = []
    for size in ("1344x336", "336x336"):
        code, out, _ = run_cli(capsys, "estimate", "--model", "llava-next-7b", "--image-size", size,
                               "--flash-attention", "--format", "json")
        expected.append(json.loads(out)["workload"]["num_visual_tokens"])
    assert data["mean_visual_tokens"] == sum(expected) / 2 and expected[0] != expected[1]


def test_tokens_from_video_samples_whole_videos(tmp_path, capsys):
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"fpcost_prune_version": 1, "images": [
        {"image": f"f{i}.png", "num_tokens": 256, "num_kept": 100} for i in range(8)]}))
    data = serve_json(capsys, "--model", "video-llava-7b", "--tokens-from", path, "--rate", "1",
                      "--num-requests", "10", "--output-tokens", "4")
    assert data["pruned"]["mean_visual_tokens"] == 800 and data["unpruned"]["mean_visual_tokens"] == 2048


def test_no_rate_meeting_the_slos_is_said(capsys):
    code, out, _ = run_cli(capsys, "serve", "--max-rate", "--slo-ttft", "0.001",
                           "--num-requests", "5", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["summary"] is None
    assert data["max_rate"]["server"]["max_rate_requests_per_s"] is None
    code, _, err = run_cli(capsys, "serve", "--max-rate", "--slo-ttft", "0.001",
                           "--num-requests", "5", "--plot", "x.png")
    one_line_error(code, err, "give --plot-rates")


def test_method_without_a_selection_cost_is_no_slower(capsys):
    """random reads no attention map: its pruned server skips freePruner's selection stage."""
    common = ("--rate", "30", "--num-requests", "200", "--keep-ratio", "0.5")
    free = serve_json(capsys, *common)["pruned"]["summary"]
    rand = serve_json(capsys, *common, "--method", "random")
    assert "random: reads no attention map" in rand["settings"]["notes"][0]
    assert rand["pruned"]["summary"]["mean_latency_s"] < free["mean_latency_s"]
    code, _, err = run_cli(capsys, "serve", "--rate", "1", "--method", "random")
    one_line_error(code, err, "give --keep-ratio")


LLAMA_7B = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
            "vocab_size": 32000}


def test_a_text_only_llm_is_served_and_cannot_be_pruned(tmp_path, capsys):
    """A bare LLM config: a text server (no visual tokens), one request at a time equal to
    estimate's; pruning options are refused in one line naming the flag (the prompt used to
    be refused with a pointer to --tokens, which serve does not have)."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(LLAMA_7B))
    code, out, err = run_cli(capsys, "serve", "--config", config, "--rate", "0.01",
                             "--num-requests", "3", "--output-tokens", "16", "--format", "json")
    assert code == 0, err
    summary = json.loads(out)["summary"]
    assert summary["num_completed"] == 3
    code, out, err = run_cli(capsys, "estimate", "--config", config, "--visual-tokens", "0",
                             "--output-tokens", "16", "--flash-attention", "--format", "json")
    assert code == 0, err
    assert summary["latency_s"]["p50"] == pytest.approx(json.loads(out)["end_to_end_latency_s"],
                                                        rel=1e-9)
    for flag, value in (("--keep-ratio", "0.5"), ("--image-size", "640x480")):
        code, _, err = run_cli(capsys, "serve", "--config", config, "--rate", "1", flag, value)
        one_line_error(code, err, flag)


def test_frames_make_every_poisson_request_a_video(capsys):
    """--frames as estimate's: one request at a time, serve's latency is estimate's for the
    same video; a trace or a fixed-frame model refuses it naming the flag."""
    video = ["--model", "qwen2-vl-7b", "--hardware", "a100-80g", "--frames", "16",
             "--image-size", "640x360"]
    code, out, err = run_cli(capsys, "serve", *video, "--rate", "0.01", "--num-requests", "3",
                             "--format", "json")
    assert code == 0, err
    served = json.loads(out)
    code, out, err = run_cli(capsys, "estimate", *video, "--output-tokens", "128",
                             "--flash-attention", "--format", "json")
    assert code == 0, err
    estimated = json.loads(out)
    assert served["mean_visual_tokens"] == estimated["workload"]["num_visual_tokens"] == 2392
    assert served["summary"]["latency_s"]["p50"] == pytest.approx(
        estimated["end_to_end_latency_s"], rel=1e-9)
    code, _, err = run_cli(capsys, "serve", "--model", "llava-1.5-7b", "--frames", "8",
                           "--rate", "1")
    one_line_error(code, err, "--frames 8")

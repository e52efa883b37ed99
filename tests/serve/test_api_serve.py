"""``fpcost.serve``: the same numbers as ``fpcost serve --format json`` (one server, any
split, Poisson or a trace), the per-request frame consistent with the summary, errors as
``FpcostError``."""

import json
import subprocess
import sys

import numpy as np
import pytest

import fpcost
from fpcost.costmodel.errors import FpcostError, WorkloadError

from ..cli_helpers import run_cli


def _cli(capsys, *args) -> dict:
    code, out, err = run_cli(capsys, "serve", *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def _json(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("split", [(1, 1), (2, 1), (2, 3)])
def test_api_equals_the_cli(capsys, split):
    tensor, pipeline = split
    args = ["--model", "llava-1.5-7b", "--hardware", "a6000", "--rate", "4", "--num-requests",
            "150", "--seed", "3", "--output-tokens", "64", "--keep-ratio", "0.25",
            "--slo-ttft", "0.5", "--tensor-parallel", str(tensor), "--pipeline-parallel",
            str(pipeline)]
    payload = _cli(capsys, *args)
    common = dict(rate=4, num_requests=150, seed=3, output_tokens=64, slo_ttft=0.5,
                  tensor_parallel=tensor, pipeline_parallel=pipeline)
    for name, keep in (("unpruned", None), ("pruned", 0.25)):
        result = fpcost.serve("llava-1.5-7b", "a6000", keep_ratio=keep, **common)
        assert _json(result.summary) == payload[name]["summary"]
        assert _json(result.kv_cache) == payload[name]["kv_cache"]
    assert _json(result.server) == payload["server"]
    assert result.server["num_gpus"] == tensor * pipeline


def test_api_trace_equals_the_cli(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"arrival_time_s": 0.3 * i, "output_tokens": 5 + i})
                             + "\n" for i in range(12)))
    payload = _cli(capsys, "--model", "qwen2-vl-7b", "--hardware", "a100-80g", "--trace",
                   str(trace), "--tensor-parallel", "2", "--chunked-prefill")
    result = fpcost.serve("qwen2-vl-7b", "a100-80g", trace=trace, tensor_parallel=2,
                          chunked_prefill=True)
    assert _json(result.summary) == payload["summary"]


def test_the_frame_agrees_with_the_summary():
    result = fpcost.serve("llava-1.5-7b", "a6000", rate=6, num_requests=200, output_tokens=32,
                          tensor_parallel=2)
    frame = result.to_frame()
    assert len(frame) == result.summary["num_requests"] == 200
    assert list(frame["request"]) == list(range(200))
    assert (frame["arrival_s"].diff().dropna() >= 0).all()
    s = result.summary
    assert frame["ttft_s"].mean() == pytest.approx(s["mean_ttft_s"], rel=1e-12)
    assert frame["latency_s"].mean() == pytest.approx(s["mean_latency_s"], rel=1e-12)
    for key in ("ttft_s", "tpot_s", "latency_s"):
        assert np.percentile(frame[key], 90) == pytest.approx(s[key]["p90"], rel=1e-12)
    assert frame["num_preemptions"].sum() == s["num_preemptions"]
    assert result.requests.equals(frame)


@pytest.mark.parametrize("kwargs, fragment", [
    ({}, "give either rate"),
    ({"rate": 1, "trace": "x.jsonl"}, "give either rate"),
    ({"rate": -1}, "rate -1"),
    ({"rate": 1, "tensor_parallel": 3}, "--tensor-parallel 3 must divide"),
    ({"rate": 1, "pipeline_parallel": 0}, "--pipeline-parallel 0"),
    ({"rate": 1, "slo_ttft": 0}, "slo_ttft 0"),
    ({"rate": 1, "seed": -2}, "seed -2"),
    ({"rate": 1, "hardware": "rtx4090", "model": "llava-onevision-72b"}, "leaves no KV cache"),
])
def test_bad_arguments_are_fpcost_errors(kwargs, fragment):
    kwargs = {"model": "llava-1.5-7b", **kwargs}
    with pytest.raises(FpcostError, match=fragment):
        fpcost.serve(**kwargs)


def test_a_missing_trace_is_one_error(tmp_path):
    with pytest.raises(WorkloadError, match="cannot read it"):
        fpcost.serve(trace=tmp_path / "none.jsonl")


def test_serve_loads_no_pandas_until_a_frame_is_asked_for():
    code = ("import sys, fpcost; r = fpcost.serve(rate=1, num_requests=20); r.summary; "
            "print('pandas' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_api_frames_and_a_text_only_llm_equal_the_cli(tmp_path, capsys):
    args = ["--model", "llava-onevision-7b", "--frames", "8", "--rate", "2",
            "--num-requests", "40", "--format", "json"]
    code, out, err = run_cli(capsys, "serve", *args)
    assert code == 0, err
    result = fpcost.serve("llava-onevision-7b", frames=8, rate=2, num_requests=40)
    assert result.summary == json.loads(out)["summary"]
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 2048,
                                  "num_hidden_layers": 4, "num_attention_heads": 16,
                                  "num_key_value_heads": 16, "intermediate_size": 5504,
                                  "vocab_size": 32000}))
    code, out, err = run_cli(capsys, "serve", "--config", config, "--rate", "2",
                             "--num-requests", "40", "--format", "json")
    assert code == 0, err
    assert fpcost.serve(str(config), rate=2, num_requests=40).summary == json.loads(out)["summary"]
    with pytest.raises(WorkloadError, match="keep_ratio needs a model with a vision tower"):
        fpcost.serve(str(config), rate=2, keep_ratio=0.5)

"""The estimate and table3 commands: output shapes, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpcost.cli.main import main
from tests.cli_helpers import run_cli


def test_estimate_json_has_the_documented_keys(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--model", "videollava", "--bits", "4",
                           "--stage", "all", "--format", "json")
    assert code == 0
    data = json.loads(out)
    # --stage all: every stage the request runs (no selection stage: nothing is pruned)
    assert list(data["stages"]) == ["vision", "projector", "prefill", "decode"]
    for totals in [*data["stages"].values(), data["end_to_end"]]:
        assert {"flops", "time_s", "memory_access_bytes", "activation_store_bytes"} <= set(totals)
    assert data["workload"]["num_prompt_tokens"] == 2088
    assert data["quant"] == {"weight_bits": 4, "act_bits": 4, "kv_bits": 4}


def test_estimate_llm_viewer_reproduces_table3_row(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--model", "video-llava-7b", "--tokens", "2088",
                           "--bits", "16", "--accounting", "llm-viewer", "--format", "json")
    prefill = json.loads(out)["stages"]["prefill"]
    # Table 3 row 1 uses vocabulary 32,000; the llava-hf preset has 32,064: the LM head of
    # one token differs by 64 × 4096 multiply-adds, far below the printed precision.
    assert round(prefill["flops"] / 1e12, 1) == 29.4
    assert round(prefill["time_s"] * 1e3, 1) == 232.2


def test_estimate_breakdown_and_csv(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--breakdown", "--stage", "prefill", "--format", "csv")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("stage,block,name")
    assert len(lines) == 1 + 16  # 15 per-layer operators + lm_head
    code, out, _ = run_cli(capsys, "estimate", "--keep-ratio", "0.5", "--format", "json")
    assert json.loads(out)["workload"]["num_visual_tokens"] == 288


def test_estimate_table_renders(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--model", "llava-1.5-13b", "--flash-attention",
                           "--stage", "all", "--breakdown")
    assert code == 0 and "prefill" in out and "fused_attention" in out


def test_tokens_from_prune_results(tmp_path, capsys):
    path = tmp_path / "kept.json"
    path.write_text(json.dumps({"fpcost_prune_version": 1, "images": [
        {"image": "a.png", "num_tokens": 576, "num_kept": 288},
        {"image": "b.png", "num_tokens": 576, "num_kept": 144}]}))
    code, out, _ = run_cli(capsys, "estimate", "--tokens-from", str(path), "--format", "json")
    data = json.loads(out)
    assert code == 0 and [i["num_visual_tokens"] for i in data["images"]] == [288, 144]
    assert data["images"][1]["speedup_key_stage"] > data["images"][0]["speedup_key_stage"] > 1
    assert data["key_stage"] == "prefill"


def test_table3_json(capsys):
    code, out, _ = run_cli(capsys, "table3", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["num_cells_matching"] == 32 and len(data["rows"]) == 8


@pytest.mark.parametrize("args, fragment", [
    (["estimate", "--model", "gpt5"], "unknown model 'gpt5'; valid: llava-1.5-13b"),
    (["estimate", "--hardware", "tpu"], "unknown hardware profile 'tpu'"),
    (["estimate", "--bits", "3"], "'3' is not one of"),
    (["estimate", "--quant", "w16a2"], "act_bits = 2 is not supported"),
    (["estimate", "--tokens", "-5"], "-5 is not in the range"),
    (["estimate", "--tokens", "1.5"], "'1.5' is not a valid integer"),
    (["estimate", "--keep-ratio", "0"], "Invalid value for --keep-ratio: 0.0 is not a fraction in (0, 1]"),
    (["estimate", "--keep-ratio", "nan"], "Invalid value for --keep-ratio: nan is not a fraction"),
    (["estimate", "--batch", "0"], "0 is not in the range"),
    (["estimate", "--tokens", "10", "--keep-ratio", "0.5"],
     "give only one of --tokens, --visual-tokens, --keep-ratio, --frame-tokens (got --tokens and "
     "--keep-ratio)"),
    (["estimate", "--config", "/no/such/config.json"], "does not exist"),
    (["estimate", "--tokens-from", "/no/such.json"], "does not exist"),
    (["estimate", "--output-tokens", "10000001"], "10000001 is not in the range 1<=x<=10000000"),
])
def test_bad_input_gives_one_line_error(capsys, args, fragment):
    code, out, err = run_cli(capsys, *args)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


OPTION_VALUES = st.one_of(st.integers(-10, 10**6).map(str), st.floats(allow_nan=True).map(str),
                          st.sampled_from(["", "abc", "4", "16", "w4a16kv16", "a6000", "nan",
                                           "-1", "0", "1e9", "llava-1.5-7b", "none", "1344x336",
                                           "0x5", "64,64", "all", "feature", "videollava",
                                           "llava-next-7b", "selection", "-6,-2"]))
OPTIONS = ["--model", "--hardware", "--bits", "--quant", "--tokens", "--visual-tokens",
           "--text-tokens", "--keep-ratio", "--batch", "--accounting", "--stage", "--format",
           "--image-size", "--output-tokens", "--frame-tokens", "--vision-layers", "--vision-quant",
           "--selection-layers"]


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from(OPTIONS), OPTION_VALUES), max_size=6),
       flags=st.lists(st.sampled_from(["--breakdown", "--flash-attention"]), max_size=2))
def test_random_arguments_never_raise(pairs, flags):
    args = ["estimate"] + [x for pair in pairs for x in pair] + flags
    try:
        code = main(args)
    except SystemExit as exc:  # click may exit on --help-like paths
        code = exc.code
    assert isinstance(code, int)


def test_estimate_imports_neither_torch_nor_transformers():
    code = ("import sys; from fpcost.cli.main import main; "
            "rc = main(['estimate', '--model', 'videollava', '--format', 'json']); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_costmodel_imports_no_cli_or_torch():
    code = ("import sys, fpcost.costmodel.estimate, fpcost.costmodel.table3; "
            "print([m for m in ('torch', 'transformers', 'click', 'rich', 'pandas') "
            "if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


# --- issue 8: every number right or refused ---------------------------------------------

def results_file(tmp_path, images, name="r.json", **top):
    document = {"fpcost_prune_version": 1, "encoder": "dinov2-s14", "method": "freepruner",
                "params": {}, "image_size": 336, "patch_size": 14, "images": images, **top}
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def image(n_tokens=576, kept=288, name="a.png", **extra):
    return {"image": name, "num_tokens": n_tokens, "num_kept": kept, **extra}


def one_line_error(capsys, *args, fragment):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == "", (out, err)
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
    return err


@pytest.mark.parametrize("model, tokens, fragment", [
    ("videollava", 576, "has 576 patch tokens (336 px / 14 px patches), but videollava receives "
                        "256 visual tokens per frame"),
    ("llava-next-7b", 576, "but llava-next-7b receives 2880 visual tokens per image (AnyRes"),
    ("llava-1.5-7b", 256, "has 256 patch tokens (336 px / 14 px patches), but llava-1.5-7b "
                          "receives 576 visual tokens per image"),
])
def test_tokens_from_refuses_another_token_grid(tmp_path, capsys, model, tokens, fragment):
    path = results_file(tmp_path, [image(tokens, 195)])
    one_line_error(capsys, "estimate", "--tokens-from", path, "--model", model, fragment=fragment)


def test_tokens_from_video_groups_frames(tmp_path, capsys):
    """Video-LLaVA: each run of 8 images of 256 tokens is one video's frames."""
    frames = [image(256, 100 + i, f"f{i}.png") for i in range(16)]
    path = results_file(tmp_path, frames)
    code, out, _ = run_cli(capsys, "estimate", "--tokens-from", path, "--model", "videollava",
                           "--format", "json")
    data = json.loads(out)
    assert code == 0 and len(data["images"]) == 2
    assert data["images"][0]["frame_tokens"] == list(range(100, 108))
    assert data["images"][1]["num_visual_tokens"] == sum(range(108, 116))
    assert data["baseline"]["num_visual_tokens"] == 2048
    path = results_file(tmp_path, frames[:12], "twelve.json")
    one_line_error(capsys, "estimate", "--tokens-from", path, "--model", "videollava",
                   fragment="12 images, but videollava costs 8 frames per video")


@pytest.mark.parametrize("entry, fragment", [
    (image(576, 900), "images[0].num_kept = 900 must be an integer 1..576"),
    (image(-5, 1), "images[0].num_tokens = -5 must be an integer ≥ 1"),
    (image(576, True), "images[0].num_kept = True must be an integer"),
    (image(576, 288.0), "images[0].num_kept = 288.0 must be an integer"),
    (image(576, 0), "images[0].num_kept = 0 must be an integer 1..576"),
    (image("576", 3), "images[0].num_tokens = '576' must be an integer"),
    ("a.png", "images[0] = 'a.png' must be an object"),
])
def test_tokens_from_refuses_bad_counts(tmp_path, capsys, entry, fragment):
    path = results_file(tmp_path, [entry])
    one_line_error(capsys, "estimate", "--tokens-from", path, fragment=fragment)


@pytest.mark.parametrize("text, fragment", [
    ('{"fpcost_prune_version": 1, "images": [{"image": "a", "num_tokens": 576, "num_kept": NaN}]}',
     "num_kept = nan must be an integer"),
    ('{"fpcost_prune_version": 1, "images": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "nested too deeply"),
    ('{"fpcost_prune_version": 1, "images": [{"num_tokens": ' + "9" * 5000 + ', "num_kept": 1}]}',
     "cannot read pruning results"),
    ('{"fpcost_prune_version": true, "images": []}', "is not an fpcost prune results file"),
    ("[" * 100_000, "cannot read pruning results"),
])
def test_tokens_from_unreadable_files_are_one_line(tmp_path, capsys, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    one_line_error(capsys, "estimate", "--tokens-from", str(path), fragment=fragment)


def test_tokens_from_a_device_or_directory_is_refused(tmp_path, capsys, monkeypatch):
    from fpcost.pruner import results

    monkeypatch.setattr(results, "MAX_RESULTS_BYTES", 1000)
    one_line_error(capsys, "estimate", "--tokens-from", "/dev/zero",
                   fragment="'/dev/zero' is larger than 0 MiB; not a results file")
    one_line_error(capsys, "estimate", "--tokens-from", str(tmp_path),
                   fragment="cannot read pruning results")


def test_the_count_check_is_shared_with_validate(tmp_path):
    """validate and estimate read results through the same check (read_results)."""
    from fpcost.costmodel.errors import FpcostError
    from fpcost.pruner.results import read_results

    with pytest.raises(FpcostError, match="num_kept = 900 must be an integer 1..576"):
        read_results(results_file(tmp_path, [image(576, 900)]))


def _selection_flops(capsys, path, *extra):
    code, out, err = run_cli(capsys, "estimate", "--tokens-from", path, "--format", "json", *extra)
    assert code == 0, err
    data = json.loads(out)
    row = data["images"][0]
    return row["stages"].get("selection", {}).get("flops", 0.0), row["selection"], data


def test_tokens_from_costs_the_files_own_selection(tmp_path, capsys):
    """k and the pivotal layers come from the file: settings first, then params, then the
    defaults fpcost prune used before it recorded settings (k = 192, one pivotal layer)."""
    default, text, _ = _selection_flops(capsys, results_file(tmp_path, [image()]))
    assert "k = 192" in text and "pivotal layers 21," in text
    k96, text, _ = _selection_flops(capsys, results_file(tmp_path, [image()], "p.json",
                                                         params={"k": 96}))
    assert "k = 96" in text and "params" in text and 0 < k96 < default
    union = {"pivotal_layers": [8, 9, 10, 11], "k": 96, "complementary_layer": 22}
    wide, text, _ = _selection_flops(capsys, results_file(tmp_path, [image()], "s.json",
                                                          params={"k": 192}, settings=union))
    assert "settings" in text and "pivotal layers 8,9,10,11" in text and "k = 96" in text
    assert wide > 3 * k96  # four full maps instead of one
    per_row, text, _ = _selection_flops(capsys, results_file(
        tmp_path, [image(settings={"pivotal_layers": [21], "k": 96, "complementary_layer": 22})],
        "row.json", settings=union))
    assert per_row == k96 and "pivotal layers 21," in text


def test_tokens_from_column_direction_costs_the_whole_complementary_map(tmp_path, capsys):
    rows = {"pivotal_layers": [21], "k": 96, "complementary_layer": 22}
    row, text, _ = _selection_flops(capsys, results_file(tmp_path, [image()], settings=rows))
    column, text, _ = _selection_flops(capsys, results_file(
        tmp_path, [image()], "c.json", settings={**rows, "direction": "column"}))
    assert "(columns)" in text and column > row
    path = results_file(tmp_path, [image()], "x.json", settings={**rows, "direction": "diagonal"})
    one_line_error(capsys, "estimate", "--tokens-from", path,
                   fragment="settings.direction = 'diagonal' is unknown; valid: row, column")


@pytest.mark.parametrize("method, fragment", [
    ("random", "random: reads no attention map, no selection cost"),
    ("keep-all", "keep-all: reads no attention map"),
    ("prumerge+", "prumerge+: selection cost not modelled (left out)"),
])
def test_tokens_from_other_methods_cost_no_freepruner_selection(tmp_path, capsys, method, fragment):
    flops, text, _ = _selection_flops(capsys, results_file(tmp_path, [image()], method=method))
    assert flops == 0.0 and fragment in text


def test_tokens_from_table_has_a_mean_row_and_a_settings_footer(tmp_path, capsys):
    path = results_file(tmp_path, [image(576, 288), image(576, 144, "b.png")], params={"k": 96})
    code, out, _ = run_cli(capsys, "estimate", "--tokens-from", path, "--hardware", "h100-sxm",
                           "--bits", "4")
    assert code == 0
    lines = out.splitlines()
    mean = next(line for line in lines if line.startswith("│ mean"))
    assert "216.0" in mean
    for fragment in ("llava-1.5-7b on h100-sxm", "LLM w4a4kv4", "file ", "freepruner",
                     "encoder dinov2-s14", "k = 96", "2 output tokens (1 decode step)"):
        assert fragment in out, fragment
    code, out, _ = run_cli(capsys, "estimate", "--tokens-from", path, "--format", "csv")
    rows = out.strip().splitlines()
    assert rows[-1].startswith("mean,216.0,") and len(rows) == 4


def test_tokens_from_breakdown_is_refused_not_ignored(tmp_path, capsys):
    one_line_error(capsys, "estimate", "--tokens-from", results_file(tmp_path, [image()]),
                   "--breakdown", fragment="--breakdown lists one request's operators")


def test_tokens_from_decode_without_decode_steps(tmp_path, capsys):
    """One output token: no decode step, so no decode speedup (was a ZeroDivisionError)."""
    path = results_file(tmp_path, [image()])
    code, out, _ = run_cli(capsys, "estimate", "--tokens-from", path, "--stage", "decode",
                           "--output-tokens", "1", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["key_stage"] == "decode"
    assert data["images"][0]["speedup_key_stage"] is None and data["images"][0]["tpot_s"] is None
    assert data["images"][0]["ttft_s"] > 0
    one_line_error(capsys, "estimate", "--tokens-from", path, "--stage", "decode",
                   "--output-tokens", "0", fragment="0 is not in the range 1<=x<=10000000")


@pytest.mark.parametrize("extra", [[], ["--hardware", "h100-sxm", "--bits", "4"],
                                   ["--model", "videollava", "--keep-ratio", "0.25"]])
def test_ttft_is_the_same_whatever_stage_is_shown(capsys, extra):
    """--stage only chooses the rows: TTFT, TPOT and end-to-end describe the whole request
    (h100-sxm at 4 bits: 5.43 ms, not the prefill's 4.55 ms)."""
    values = set()
    stages = ["all", "vision", "projector", "prefill", "decode"]
    if "--keep-ratio" in extra:
        stages.append("selection")
    for stage in stages:
        code, out, _ = run_cli(capsys, "estimate", "--stage", stage, "--output-tokens", "8",
                               "--format", "json", *extra)
        data = json.loads(out)
        assert code == 0 and (stage == "all" or list(data["stages"]) == [stage])
        values.add((data["ttft_s"], data["tpot_s"], data["end_to_end_latency_s"]))
    assert len(values) == 1
    if "h100-sxm" in extra:
        assert round(values.pop()[0] * 1e3, 2) == 5.43


def test_default_output_tokens_is_llm_viewers_single_decode_step(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--format", "json")
    data = json.loads(out)
    w = data["workload"]
    assert w["num_output_tokens"] == 2 and w["num_decode_steps"] == 1
    assert w["num_final_context_tokens"] == 617
    assert data["tpot_s"] == data["stages"]["decode"]["time_s"]
    code, out, _ = run_cli(capsys, "estimate", "--output-tokens", "1", "--format", "json")
    data = json.loads(out)
    assert data["tpot_s"] is None and data["stages"]["decode"]["time_s"] == 0
    assert data["end_to_end_latency_s"] == pytest.approx(data["ttft_s"])


@pytest.mark.parametrize("args, fragment", [
    (["--tokens", "1000000000000000", "--output-tokens", "2"],
     "1000000000000000 is not in the range 1<=x<=2147483647"),
    (["--tokens", "2" + "0" * 151], "is not in the range 1<=x<=2147483647"),
    (["--visual-tokens", "1" + "0" * 153], "is not in the range 0<=x<=2147483647"),
    (["--batch", "1" + "0" * 298], "is not in the range 1<=x<=2147483647"),
    (["--batch", "9" * 4400], "is not a valid integer"),
    (["--tokens", "2147483647"], "above 2**53"),
    (["--batch", "100000000"], "above 2**53"),
    (["--model", "videollava", "--frame-tokens", "²,1,1,1,1,1,1,1"],
     "must be comma-separated non-negative integers"),
    (["--model", "videollava", "--frame-tokens", "9" * 5000 + ",1,1,1,1,1,1,1"],
     "must be comma-separated non-negative integers"),
    (["--quant", ""], "an empty plan is not a quantization"),
    (["--model", ""], "an empty name is not a model"),
    (["--image-size", "500x400"], "only the llava-next, qwen2-vl, qwen2.5-vl, llava-onevision "
                                  "families use the image size; llava-1.5-7b resizes every image "
                                  "to 336x336 px"),
    (["--model", "llava-next-7b", "--image-size", "9" * 400 + "x5"], "is not WIDTHxHEIGHT"),
    (["--model", "llava-next-7b", "--image-size", "2147483648x5"], "at most 2,147,483,647"),
    (["--tokens", "10", "--visual-tokens", "3"],
     "give only one of --tokens, --visual-tokens, --keep-ratio, --frame-tokens"),
])
def test_out_of_range_and_empty_values_are_refused(capsys, args, fragment):
    one_line_error(capsys, "estimate", *args, fragment=fragment)


def test_large_but_exact_workloads_stay_finite(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--tokens", "900000", "--batch", "1",
                           "--output-tokens", "2", "--format", "json")
    data = json.loads(out)
    assert code == 0
    for totals in [*data["stages"].values(), data["end_to_end"]]:
        assert all(value >= 0 and value < float("inf") for value in totals.values())


def test_video_llava_projects_every_frames_cls(capsys):
    """transformers keeps each frame's CLS: 8 x 257 = 2056 tokens reach the projector."""
    code, out, _ = run_cli(capsys, "estimate", "--model", "videollava", "--visual-tokens", "2056",
                           "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["workload"]["num_projected_tokens_per_sample"] == 2056
    # unpruned, the paper's 2048 visual tokens reach the LLM but the projector still runs on
    # all 2056, as transformers does; pruned to 1024 kept tokens, it runs on those
    code, out, _ = run_cli(capsys, "estimate", "--model", "videollava", "--format", "json")
    base = json.loads(out)
    assert base["workload"]["num_projected_tokens_per_sample"] == 2056
    assert data["stages"]["projector"]["flops"] == base["stages"]["projector"]["flops"]
    code, out, _ = run_cli(capsys, "estimate", "--model", "videollava", "--visual-tokens", "1024",
                           "--format", "json")
    pruned = json.loads(out)
    assert pruned["workload"]["num_projected_tokens_per_sample"] == 1024
    assert pruned["stages"]["projector"]["flops"] == pytest.approx(
        base["stages"]["projector"]["flops"] * 1024 / 2056)


def test_llava_next_projects_every_crop_before_unpadding(capsys):
    """1344x336: transformers projects 4 crops x 576 = 2304 tokens; 1890 reach the LLM."""
    code, out, _ = run_cli(capsys, "estimate", "--model", "llava-next-7b", "--image-size",
                           "1344x336", "--format", "json")
    workload = json.loads(out)["workload"]
    assert code == 0 and workload["num_visual_tokens"] == 1890
    assert workload["num_projected_tokens_per_sample"] == 2304


def test_a_denormal_bandwidth_is_refused_not_printed_as_inf(a6000):
    from dataclasses import replace

    from fpcost.costmodel.errors import HardwareError, WorkloadError
    from fpcost.costmodel.estimate import estimate as run_estimate
    from fpcost.costmodel.presets import PRESETS
    from fpcost.costmodel.workload import Workload

    with pytest.raises(HardwareError, match="hbm_bandwidth_bytes_per_s"):
        replace(a6000, hbm_bandwidth_bytes_per_s=1e-320)  # the profile refuses it first
    # the last line of defence, for a profile that got past its own checks
    slow = replace(a6000)
    object.__setattr__(slow, "hbm_bandwidth_bytes_per_s", 1e-320)
    with pytest.raises(WorkloadError, match="not a finite non-negative number"):
        run_estimate(PRESETS["llava-1.5-7b"], Workload(576, 40), slow)


@pytest.mark.parametrize("command", [["estimate"], ["sweep"], ["plot", "roofline"],
                                     ["plot", "sweep"]])
def test_help_describes_every_option(command):
    """Every option has help text; every option with a default shows it."""
    import click

    from fpcost.cli.main import cli

    group = cli
    for name in command:
        group = group.get_command(click.Context(group), name)
    for param in group.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        assert param.help, param.opts
        has_default = not (param.multiple or param.is_flag or param.required
                           or param.default is None or "UNSET" in repr(param.default))
        if has_default or param.name in ("bits",):
            assert param.show_default or "[default:" in param.help, param.opts


def test_tokens_from_imports_neither_torch_nor_pandas(tmp_path):
    path = results_file(tmp_path, [image()])
    code = ("import sys; from fpcost.cli.main import main; "
            f"rc = main(['estimate', '--tokens-from', {path!r}, '--format', 'csv']); "
            "print([m for m in ('torch', 'transformers', 'pandas') if m in sys.modules]); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"

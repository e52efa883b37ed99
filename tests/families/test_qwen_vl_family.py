"""Qwen2-VL and Qwen2.5-VL as families (issue 11, item 2): the presets through ``fpcost
estimate`` and ``fpcost sweep``, token counts and parameter totals equal to the groundwork
modules' (themselves checked against transformers in this folder), the stages assembled
from the groundwork's operators, a config.json read through ``--config``, one-line errors."""

import json
import math

import pytest

from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.families import family_of
from fpcost.costmodel.families.qwen_vl import DEFAULT_IMAGE_SIZE
from fpcost.costmodel.families.qwen_vl_layout import image_grid
from fpcost.costmodel.families.qwen_vl_ops import merger_ops, qwen_vision_tower_ops
from fpcost.costmodel.families.qwen_vl_presets import PRESET_CONFIGS
from fpcost.costmodel.params import parameter_counts
from fpcost.costmodel.pipeline import make_workload, visual_layout
from fpcost.costmodel.presets import get_preset, model_names
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.sweep import sweep
from fpcost.costmodel.vision import _Builder
from fpcost.costmodel.workload import Workload
from tests.cli_helpers import run_cli
from tests.test_sweep import assert_every_stage_equals_estimate

# transformers' models built on the meta device (test_qwen_vl_params.py checks these sums)
TOTAL_PARAMETERS = {
    "qwen2-vl-2b": 2_208_985_600,
    "qwen2-vl-7b": 8_291_375_616,
    "qwen2.5-vl-3b": 3_754_622_976,
    "qwen2.5-vl-7b": 8_292_166_656,
    "qwen2.5-vl-72b": 73_406_351_360,
}
PRESETS = tuple(TOTAL_PARAMETERS)



def estimate_json(capsys, *args) -> dict:
    code, out, err = run_cli(capsys, "estimate", *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def finite_numbers(value):
    """Every number in a JSON document."""
    if isinstance(value, dict):
        for item in value.values():
            yield from finite_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from finite_numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_estimates_with_the_groundworks_numbers(name, capsys):
    assert name in model_names()
    data = estimate_json(capsys, "--model", name)
    spec = get_preset(name)
    assert family_of(spec).name == spec.kind == PRESET_CONFIGS[name]["model_type"].replace(
        "_", "-").replace("2-5", "2.5")
    assert data["workload"]["num_visual_tokens"] == 1196  # the default 1280x720 image
    assert data["workload"]["num_vision_tokens_per_image"] == 4784  # 52 x 92 patches
    assert list(data["stages"]) == ["vision", "projector", "prefill", "decode"]
    assert all(math.isfinite(v) for v in finite_numbers(data))
    # every count, time and byte is non-negative (settings hold layer indices, -2 = from the end)
    assert all(v >= 0 for v in finite_numbers({k: v for k, v in data.items() if k != "settings"}))
    assert all(t["flops"] > 0 and t["time_s"] > 0 for t in data["stages"].values())
    assert parameter_counts(spec)["total"] == TOTAL_PARAMETERS[name]
    assert data["memory"]["weight_bytes"]["total"] == 2 * TOTAL_PARAMETERS[name]  # 16-bit


@pytest.mark.parametrize("size", ["1280x720", "448x448", "10x10", "4000x3000", "333x1999"])
@pytest.mark.parametrize("name", ["qwen2-vl-7b", "qwen2.5-vl-3b"])
def test_the_image_size_gives_the_groundworks_token_count(name, size, capsys):
    width, height = map(int, size.split("x"))
    data = estimate_json(capsys, "--model", name, "--image-size", size)
    grid = image_grid(height, width)
    assert data["workload"]["num_visual_tokens"] == grid.num_merged_tokens()
    assert data["workload"]["num_vision_tokens_per_image"] == grid.num_patches
    assert data["workload"]["image_size"] == [width, height]


def test_1280x720_gives_1196_tokens_in_the_json(capsys):
    """The interface scripts read (issue 11)."""
    data = estimate_json(capsys, "--model", "qwen2-vl-7b", "--image-size", "1280x720")
    assert data["workload"]["num_visual_tokens"] == 1196


@pytest.mark.parametrize("limits, expected", [
    # (--min-pixels, --max-pixels) on a 1280x720 image: tokens from smart_resize's limits
    ((None, 256 * 28 * 28), image_grid(720, 1280, 3136, 256 * 28 * 28).num_merged_tokens()),
    ((2048 * 28 * 28, None), image_grid(720, 1280, 2048 * 28 * 28).num_merged_tokens()),
    ((784, 784), 1),
])
def test_pixel_limits_set_the_count(limits, expected, capsys):
    args = ["--model", "qwen2.5-vl-7b", "--image-size", "1280x720"]
    for flag, value in zip(("--min-pixels", "--max-pixels"), limits, strict=True):
        if value is not None:
            args += [flag, str(value)]
    data = estimate_json(capsys, *args)
    assert data["workload"]["num_visual_tokens"] == expected
    assert expected != 1196 or limits == (None, None)
    assert [data["workload"]["min_pixels"], data["workload"]["max_pixels"]] == list(limits)


def test_stages_are_the_groundworks_operators_and_the_batch_scales_all_but_weights(a6000):
    spec = get_preset("qwen2.5-vl-7b")
    grid = image_grid(DEFAULT_IMAGE_SIZE[1], DEFAULT_IMAGE_SIZE[0])
    tower = qwen_vision_tower_ops(spec.vision, QuantPlan(), [grid], False, a6000.onchip_buffer_bytes)
    one = estimate(spec, Workload(1196, 40, 1), a6000, QuantPlan())
    three = estimate(spec, Workload(1196, 40, 3), a6000, QuantPlan())
    vision_ops = [op for op in tower if op.block != "merger"]
    merger = [op for op in tower if op.block == "merger"]
    for stage, ops in (("vision", vision_ops), ("projector", merger)):
        flops = sum(op.count * op.flops for op in ops)
        weights = sum(op.count * op.weight_bytes for op in ops)
        activations = sum(op.count * (op.memory_access_bytes - op.weight_bytes) for op in ops)
        assert one.stage_totals(stage).flops == pytest.approx(flops, rel=1e-12)
        assert three.stage_totals(stage).flops == pytest.approx(3 * flops, rel=1e-12)
        assert three.stage_totals(stage).memory_access_bytes == pytest.approx(
            weights + 3 * activations, rel=1e-12)
    # three images packed by the groundwork = one image's operators times three (weights once)
    packed = [op for op in qwen_vision_tower_ops(spec.vision, QuantPlan(), [grid] * 3, False,
                                                 a6000.onchip_buffer_bytes) if op.block != "merger"]
    assert three.stage_totals("vision").flops == pytest.approx(
        sum(op.count * op.flops for op in packed), rel=1e-12)


def test_pruning_runs_the_merger_on_every_token_and_a_selection_stage(capsys, a6000):
    """select_merged: the merger runs on all merged tokens in the tower's own pass, freePruner
    then picks among them; its selection (paper defaults: blocks 28, 29 / 30) is costed."""
    data = estimate_json(capsys, "--model", "qwen2-vl-7b", "--keep-ratio", "0.5")
    assert data["workload"]["num_visual_tokens"] == 598 and data["workload"]["pruned"]
    assert list(data["stages"]) == ["vision", "selection", "projector", "prefill", "decode"]
    assert data["settings"]["selection"] == {"selection_layers": [28, 29, 30],
                                             "complementary_layer": -2, "k": 299}
    assert not any("not modelled" in n for n in data["settings"]["notes"])
    assert data["workload"]["num_projected_tokens_per_sample"] == 1196
    spec = get_preset("qwen2-vl-7b")
    merger = merger_ops(spec.vision, _Builder("projector", QuantPlan()), 1196 * 4)
    assert data["stages"]["projector"]["flops"] == pytest.approx(
        sum(op.count * op.flops for op in merger), rel=1e-12)
    full = estimate_json(capsys, "--model", "qwen2-vl-7b")
    assert data["stages"]["vision"] == full["stages"]["vision"]  # the tower runs every patch
    assert data["stages"]["projector"] == full["stages"]["projector"]  # and the merger
    assert data["stages"]["prefill"]["flops"] < full["stages"]["prefill"]["flops"]
    # 2 pivotal maps of 4784² patch pairs and 598 pivotal rows x 4 patches, 16 heads of 80
    assert data["stages"]["selection"]["tensor_flops"] == (
        2 * (2 * 16 * 80 * 4784 * 4784) + 2 * 16 * 80 * 598 * 4 * 4784)
    layers = estimate_json(capsys, "--model", "qwen2-vl-7b", "--keep-ratio", "0.5",
                           "--selection-layers", "-3,-2")
    assert layers["settings"]["selection"]["selection_layers"] == [29, 30]
    assert layers["stages"]["selection"]["tensor_flops"] == (
        2 * 16 * 80 * 4784 * 4784 + 2 * 16 * 80 * 299 * 4 * 4784)


def test_memory_fits_and_max_batch(capsys):
    small = estimate_json(capsys, "--model", "qwen2-vl-2b", "--hardware", "a100-80g")["memory"]
    assert small["fits"] and small["max_batch_size"] > 1
    large = estimate_json(capsys, "--model", "qwen2.5-vl-72b", "--hardware", "a100-80g")["memory"]
    # 73.4 B parameters at 16 bits = 146.8 GB of weights > 80 GB
    assert not large["fits"] and large["max_batch_size"] == 0


def test_a_video_is_ceil_frames_over_two_temporal_patches():
    spec = get_preset("qwen2-vl-7b")
    layout = family_of(spec).visual_layout(spec, (1280, 720), num_frames=7)
    assert (layout.num_images, layout.tokens_per_image) == (4, 4784)
    assert layout.num_visual_tokens == 4 * 1196


@pytest.mark.parametrize("name", ["qwen2-vl-2b", "qwen2.5-vl-3b"])
@pytest.mark.parametrize("flash", [False, True])
def test_sweep_rows_equal_estimate(name, flash, a6000, a100):
    spec = get_preset(name)
    frame = sweep([spec], [a6000, a100], [16, 4], keep_ratios=[0.2, 0.5, 1.0], batch_sizes=[1, 3],
                  flash_attention=flash, num_output_tokens=3)
    assert set(frame.num_visual_tokens) == {239, 598, 1196}
    for device in (a6000, a100):
        assert_every_stage_equals_estimate(frame[frame.hardware == device.name], spec, device, {},
                                           {"num_output_tokens": 3}, flash)


def test_sweep_takes_the_image_size_and_pixel_limits_as_estimate_does(a6000):
    spec = get_preset("qwen2.5-vl-7b")
    kwargs = {"image_size": (640, 480), "min_pixels": 4 * 28 * 28, "max_pixels": 200 * 28 * 28}
    frame = sweep([spec], [a6000], [16], keep_ratios=[0.25, 1.0], batch_sizes=[1, 2], **kwargs)
    unpruned = visual_layout(spec, (640, 480), (kwargs["min_pixels"], kwargs["max_pixels"]))
    assert max(frame.num_visual_tokens) == unpruned.num_visual_tokens == image_grid(
        480, 640, kwargs["min_pixels"], kwargs["max_pixels"]).num_merged_tokens()
    assert_every_stage_equals_estimate(frame, spec, a6000, {}, kwargs)
    pruned = frame.num_visual_tokens < unpruned.num_visual_tokens
    assert pruned.any() and not pruned.all()
    for total in ("flops", "time_s"):  # the selection costs something exactly where pruned
        assert ((frame[f"selection_{total}"] > 0) == pruned).all()


def test_the_sweep_cli_lists_qwen_presets(capsys):
    code, out, err = run_cli(capsys, "sweep", "--model", "qwen2-vl-7b", "--model", "qwen2.5-vl-72b",
                             "--keep-ratios", "0.5,1", "--image-size", "1280x720",
                             "--max-pixels", "1003520", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    rows = rows if isinstance(rows, list) else rows["rows"]
    assert {r["model"] for r in rows} == {"qwen2-vl-7b", "qwen2.5-vl-72b"}
    expected = image_grid(720, 1280, 3136, 1003520).num_merged_tokens()
    assert max(r["num_visual_tokens"] for r in rows) == expected


def test_a_qwen2_vl_config_json_reads_through_config(tmp_path, capsys):
    """A config.json as transformers 5 saves it (text part nested in text_config), at the 2B
    preset's sizes: the same estimate as the preset."""
    transformers = pytest.importorskip("transformers")
    preset = PRESET_CONFIGS["qwen2-vl-2b"]
    text = {k: preset[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                   "num_key_value_heads", "intermediate_size", "vocab_size",
                                   "tie_word_embeddings")}
    vision = {k: v for k, v in preset["vision_config"].items() if k != "in_chans"}
    config = transformers.Qwen2VLConfig(text_config=text, vision_config=vision,
                                        tie_word_embeddings=True)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "qwen2_vl"
    from_file = estimate_json(capsys, "--config", str(tmp_path), "--image-size", "800x600")
    from_preset = estimate_json(capsys, "--model", "qwen2-vl-2b", "--image-size", "800x600")
    assert from_file["workload"] == from_preset["workload"]
    assert from_file["stages"] == from_preset["stages"]
    assert from_file["memory"]["weight_bytes"] == from_preset["memory"]["weight_bytes"]


@pytest.mark.parametrize("args, fragment", [
    (["--model", "llava-1.5-7b", "--min-pixels", "3136"],
     "--min-pixels: 3136 changes nothing for llava-1.5-7b: only Qwen2-VL / Qwen2.5-VL"),
    (["--model", "llava-next-7b", "--max-pixels", "100000"],
     "--max-pixels: 100000 changes nothing for llava-next-7b"),
    (["--model", "qwen2-vl-7b", "--min-pixels", "5000", "--max-pixels", "4000"],
     "--min-pixels 5000 is larger than --max-pixels 4000"),
    (["--model", "qwen2-vl-7b", "--max-pixels", "1000"],
     "--min-pixels 3136 is larger than --max-pixels 1000"),
    (["--model", "qwen2-vl-7b", "--max-pixels", "0"], "--max-pixels"),
    (["--model", "qwen2-vl-7b", "--image-size", "10000x10"], "aspect ratio above 200"),
    (["--model", "qwen2-vl-7b", "--keep-ratio", "0.5", "--selection-layers", "-40"],
     "selection layer -40 is out of range for a 32-layer vision tower"),
    (["--model", "qwen2.5-vl-7b", "--image-size", "1280x"], "is not WIDTHxHEIGHT"),
])
def test_bad_qwen_options_are_one_line(args, fragment, capsys):
    code, out, err = run_cli(capsys, "estimate", *args)
    assert code == 2 and out == "", (out, err)
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def test_the_library_refuses_pixel_limits_for_other_models(a6000):
    with pytest.raises(WorkloadError, match="--min-pixels 3136 changes nothing for llava-1.5-7b"):
        make_workload(get_preset("llava-1.5-7b"), min_pixels=3136)
    with pytest.raises(WorkloadError, match="--max-pixels changes nothing"):
        sweep(["llava-1.5-7b"], [a6000], [16], max_pixels=10**6)


@pytest.mark.parametrize("change, fragment", [
    ({"vision_config": {"depth": "32"}}, "config.json vision_config: depth = '32' must be an integer"),
    ({"vision_config": {"window_size": 14}}, "window_size = 14 must be at least"),
    ({"hidden_size": 1024}, "must equal the LLM's hidden_size (1024)"),
    ({"use_sliding_window": True}, "use_sliding_window = true is not supported"),
])
def test_bad_qwen_config_files_are_one_line(change, fragment, tmp_path, capsys):
    data = json.loads(json.dumps(PRESET_CONFIGS["qwen2.5-vl-3b"]))
    for key, value in change.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    code, out, err = run_cli(capsys, "estimate", "--config", str(tmp_path))
    assert code == 2 and out == "", (out, err)
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def test_a_mixed_sweep_applies_pixel_limits_to_the_qwen_rows_only(a6000):
    plain = sweep(["llava-1.5-7b", "qwen2-vl-2b"], [a6000], [16], keep_ratios=[0.5, 1.0])
    limited = sweep(["llava-1.5-7b", "qwen2-vl-2b"], [a6000], [16], keep_ratios=[0.5, 1.0],
                    max_pixels=100 * 28 * 28)
    llava = plain.model == "llava-1.5-7b"
    assert plain[llava].equals(limited[llava])
    assert max(limited[~llava].num_visual_tokens) == image_grid(720, 1280, 3136, 100 * 28 * 28
                                                                ).num_merged_tokens() < 1196

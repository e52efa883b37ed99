"""LLaVA-OneVision as a family (issue 11, item 3): AnyRes-max token counts against
transformers' own model and processor code for many image sizes, video pooling, parameter
counts against the model built on the meta device, the presets through estimate, sweep and
memory, a config.json read through --config, one-line errors."""

import itertools
import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings

from fpcost.cli.main import main
from fpcost.costmodel.errors import ConfigError, WorkloadError
from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.families import family_of
from fpcost.costmodel.families.llava_onevision import DEFAULT_PINPOINTS, shrunk_grid
from fpcost.costmodel.families.llava_onevision_presets import PRESET_CONFIGS
from fpcost.costmodel.hfconfig import load_config_json
from fpcost.costmodel.params import parameter_counts
from fpcost.costmodel.pipeline import make_workload, visual_layout
from fpcost.costmodel.presets import get_preset, model_names
from fpcost.costmodel.pruning import DEFAULT_SELECTION
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.selection_cost import selection_ops
from fpcost.costmodel.sweep import sweep
from fpcost.costmodel.vision import projector_ops, vision_tower_ops
from fpcost.costmodel.workload import visual_tokens_for_ratio
from tests.strategies import image_sizes
from tests.test_sweep import assert_every_stage_equals_estimate

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.models.llava_onevision import modeling_llava_onevision as hf  # noqa: E402
from transformers.models.llava_onevision.processing_llava_onevision import (  # noqa: E402
    LlavaOnevisionProcessor,
)

PINS = [list(p) for p in DEFAULT_PINPOINTS]
CROP, PATCH, SIDE = 384, 14, 27
SIDES = [1, 14, 100, 383, 384, 385, 500, 720, 768, 1000, 1080, 1152, 1280, 1920, 2304, 2305, 4000]
PRESETS = tuple(PRESET_CONFIGS)
FAKE_MODEL = SimpleNamespace(config=SimpleNamespace(
    vision_config=SimpleNamespace(image_size=CROP, patch_size=PATCH), image_grid_pinpoints=PINS))


def transformers_model_count(width: int, height: int) -> tuple[int, int]:
    """(crops the tower runs, visual tokens) as LlavaOnevisionModel computes them: the crop
    count of get_image_features, and the length pack_image_features gives 729-token crops
    (one feature channel: the shapes are all that matter)."""
    crops = hf.image_size_to_num_patches([height, width], PINS, CROP)
    features = torch.zeros(crops, SIDE * SIDE, 1)
    _, lengths = hf.LlavaOnevisionModel.pack_image_features(
        FAKE_MODEL, [features], torch.tensor([[height, width]]), image_newline=torch.zeros(1),
        vision_aspect_ratio="anyres_max_9")
    return crops, int(lengths[0])


def transformers_processor_count(width: int, height: int) -> int:
    fake = SimpleNamespace(image_processor=SimpleNamespace(image_grid_pinpoints=PINS),
                           num_image_tokens=SIDE * SIDE, vision_aspect_ratio="anyres_max_9")
    fake._get_unpadded_features = lambda *a: LlavaOnevisionProcessor._get_unpadded_features(fake, *a)
    return LlavaOnevisionProcessor._get_number_of_features(fake, height, width, CROP, CROP)


def ours(width: int, height: int, name: str = "llava-onevision-7b") -> tuple[int, int]:
    layout = visual_layout(get_preset(name), (width, height))
    return layout.num_images, layout.num_visual_tokens


@pytest.mark.parametrize("width, height", list(itertools.product(SIDES, SIDES)))
def test_grid_of_sizes_matches_transformers(width, height):
    expected = transformers_model_count(width, height)
    assert ours(width, height) == expected
    assert transformers_processor_count(width, height) == expected[1]


@settings(max_examples=200, deadline=None)
@given(size=image_sizes)
def test_random_sizes_match_transformers(size):
    width, height = size
    assert ours(width, height) == transformers_model_count(width, height)


def test_1280x720_by_hand():
    # best pinpoint 768 x 1536 (h x w): 2 x 4 crops + base; grid 54 x 108 unpadded to 54 x 96
    # (1280 x 720 fitted into 1536 wide: 54 x 96); r = sqrt(5184 / 6561) < 1.1: no shrink
    layout = visual_layout(get_preset("llava-onevision-7b"))
    assert (layout.num_images, layout.tokens_per_image) == (9, 729)
    assert layout.num_visual_tokens == 729 + 54 * 96 + 54 == 5967
    assert layout.num_projected_tokens == 9 * 729
    # 2304 x 2304: 6 x 6 crops, 162 x 162 grid, r = 2: shrunk to 81 x 81, 81 newlines
    big = visual_layout(get_preset("llava-onevision-7b"), (2304, 2304))
    assert (big.num_images, big.num_visual_tokens) == (37, 729 + 81 * 81 + 81)
    assert transformers_model_count(2304, 2304) == (37, 7371)
    assert shrunk_grid(162, 162, 27, 9) == (81, 81)
    assert shrunk_grid(85, 85, 27, 9) == (85, 85)  # r = 85/81 ≤ 1.1: kept


@pytest.mark.parametrize("frames", [1, 2, 8, 32])
def test_video_frames_are_pooled_as_transformers_does(frames):
    spec = get_preset("llava-onevision-7b")
    layout = family_of(spec).visual_layout(spec, None, num_frames=frames)
    pooled = hf.LlavaOnevisionModel.apply_pooling(FAKE_MODEL, torch.zeros(frames, SIDE * SIDE, 1))
    assert pooled.shape[1] == 196
    assert layout.num_visual_tokens == frames * 196 + 1  # + one newline per video
    assert (layout.num_images, layout.num_projected_tokens) == (frames, frames * 729)
    with pytest.raises(WorkloadError):
        family_of(spec).visual_layout(spec, None, num_frames=0)


# --- parameters against transformers on the meta device -----------------------------------


def _hf_config(name: str, layers: int):
    data = json.loads(json.dumps(PRESET_CONFIGS[name]))
    data["text_config"]["num_hidden_layers"] = layers
    data.pop("model_type")
    return transformers.LlavaOnevisionConfig(**data)


def _meta_count(config) -> int:
    with torch.device("meta"):
        model = transformers.LlavaOnevisionForConditionalGeneration(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", PRESETS)
def test_parameter_counts_equal_transformers_on_meta(name):
    """Full widths, 1 and 2 LLM layers: the per-layer difference scales to the preset's depth."""
    one, two = _meta_count(_hf_config(name, 1)), _meta_count(_hf_config(name, 2))
    layers = PRESET_CONFIGS[name]["text_config"]["num_hidden_layers"]
    expected = one + (layers - 1) * (two - one)
    counts = parameter_counts(get_preset(name))
    assert counts["total"] == expected
    assert counts["image_newline"] == PRESET_CONFIGS[name]["text_config"]["hidden_size"]


@pytest.mark.parametrize("where", ["text_config", "top level"])
def test_tied_embeddings_count_as_transformers_ties_them(where, tmp_path):
    """The 0.5B's Qwen2-0.5B widths (2 layers) with tied embeddings, stated in text_config or
    at the top level (LlavaOnevisionConfig forwards either)."""
    data = json.loads(json.dumps(PRESET_CONFIGS["llava-onevision-7b"]))
    data["text_config"].update(hidden_size=896, num_hidden_layers=2, num_attention_heads=14,
                               num_key_value_heads=2, intermediate_size=4864, vocab_size=152000)
    (data["text_config"] if where == "text_config" else data)["tie_word_embeddings"] = True
    (tmp_path / "config.json").write_text(json.dumps(data))
    data.pop("model_type")
    expected = _meta_count(transformers.LlavaOnevisionConfig(**data))
    assert parameter_counts(load_config_json(tmp_path))["total"] == expected


def test_tower_and_projector_flops_equal_flop_counter():
    """FlopCounterMode on transformers' SigLIP tower (eager attention) and projector, full
    width and depth on the meta device: fpcost's tensor FLOPs less its bias adds (one per
    output element of q/k/v/o, fc1, fc2, the patch embedding and both projector linears)."""
    from torch.utils.flop_counter import FlopCounterMode

    config = _hf_config("llava-onevision-7b", 1)
    config.vision_config._attn_implementation = "eager"
    with torch.device("meta"):
        model = transformers.LlavaOnevisionForConditionalGeneration(config).eval()
    crops, spec = 3, get_preset("llava-onevision-7b")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model.model.vision_tower(torch.zeros(crops, 3, 384, 384, device="meta"),
                                       output_hidden_states=True)
    tower = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.model.multi_modal_projector(out.hidden_states[config.vision_feature_layer])
    projector = counter.get_total_flops()
    rows, h, ffn, llm = crops * 729, 1152, 4304, 3584
    ours = sum(op.count * op.tensor_flops for op in vision_tower_ops(spec.vision, QuantPlan(),
                                                                      crops, 26, False, 0))
    assert ours - 26 * rows * (4 * h + ffn + h) - rows * h == tower
    ours = sum(op.count * op.tensor_flops for op in projector_ops(spec.projector, QuantPlan(), rows))
    assert ours - 2 * rows * llm == projector


def test_total_parameters():
    assert parameter_counts(get_preset("llava-onevision-7b"))["total"] == 8_030_807_584
    assert parameter_counts(get_preset("llava-onevision-72b"))["total"] == 73_181_570_592


# --- estimate, sweep, memory ----------------------------------------------------------------


def estimate_json(capsys, *args) -> dict:
    code = main(["estimate", *args, "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_estimate(name, capsys):
    assert name in model_names()
    data = estimate_json(capsys, "--model", name)
    assert data["workload"]["num_visual_tokens"] == 5967
    assert data["workload"]["num_vision_images_per_sample"] == 9
    assert list(data["stages"]) == ["vision", "projector", "prefill", "decode"]
    assert all(t["flops"] > 0 and t["time_s"] > 0 for t in data["stages"].values())
    assert data["memory"]["weight_bytes"]["total"] == 2 * parameter_counts(get_preset(name))["total"]


@pytest.mark.parametrize("size", ["1280x720", "2304x2304", "640x480", "3000x200", "1x1"])
def test_cli_image_size_gives_the_transformers_count(size, capsys):
    width, height = map(int, size.split("x"))
    data = estimate_json(capsys, "--model", "llava-onevision-7b", "--image-size", size)
    crops, tokens = transformers_model_count(width, height)
    assert data["workload"]["num_visual_tokens"] == tokens
    assert data["workload"]["num_vision_images_per_sample"] == crops


def test_stages_are_siglip_and_qwen2(capsys, a6000):
    data = estimate_json(capsys, "--model", "llava-onevision-7b", "--breakdown", "--stage",
                         "vision")
    rows = {r["name"]: r for r in data["operators"]}
    assert rows["q_proj"]["act_read_bytes"] == 26 * 9 * 729 * 1152 * 2  # 26 layers, 9 crops
    assert "pre_layernorm" not in rows and "head_q_proj" not in rows  # SigLIP, no head
    spec = get_preset("llava-onevision-7b")
    result = estimate(spec, make_workload(spec), a6000, QuantPlan(), "fpcost", False)
    ops = {row.op.name: row.op for row in result.operators if row.op.stage == "prefill"}
    tokens = 5967 + 40  # visual + the default text tokens
    # Qwen2: q_proj 3584 -> 3584 with its bias add; k_proj 3584 -> 512 (4 KV heads of 128)
    assert ops["q_proj"].tensor_flops == 2 * tokens * 3584 * 3584 + tokens * 3584
    assert ops["k_proj"].tensor_flops == 2 * tokens * 3584 * 512 + tokens * 512
    assert ops["o_proj"].tensor_flops == 2 * tokens * 3584 * 3584


def test_pruning_runs_the_selection_on_every_crop(capsys):
    data = estimate_json(capsys, "--model", "llava-onevision-7b", "--keep-ratio", "0.25")
    assert list(data["stages"]) == ["vision", "selection", "projector", "prefill", "decode"]
    assert data["workload"]["num_visual_tokens"] == visual_tokens_for_ratio(5967, 0.25)
    # the selection runs on each of the 9 crops' 729-token maps
    spec = get_preset("llava-onevision-7b")
    ops = selection_ops(spec.vision, DEFAULT_SELECTION, 9, 26)
    assert data["stages"]["selection"]["flops"] == sum(op.count * op.flops for op in ops)
    full = estimate_json(capsys, "--model", "llava-onevision-7b")
    assert data["stages"]["vision"] == full["stages"]["vision"]
    assert data["stages"]["prefill"]["flops"] < full["stages"]["prefill"]["flops"]


def test_the_selection_reads_the_anchored_layers(capsys):
    """OneVision's LLM reads hidden state -1 of 26 SigLIP layers (layer 25's output):
    fpcost prune / generate move freePruner's defaults to pivotal 23, 24 and complementary
    25, and so does the cost model; the cost per crop is the same (every layer costs alike),
    the 729-token map, k = round(0.25 · 729) = 182."""
    data = estimate_json(capsys, "--model", "llava-onevision-7b", "--keep-ratio", "0.25")
    assert data["settings"]["selection"] == {"selection_layers": [23, 24, 25],
                                             "complementary_layer": -1, "k": 182}
    spec = get_preset("llava-onevision-7b")
    effective = family_of(spec).effective_selection(spec, DEFAULT_SELECTION)
    assert effective.pivotal_layers(26) == (23, 24)
    assert effective.complementary_layer_resolved(26) == 25
    ops = {op.name: op for op in selection_ops(spec.vision, effective, 9, 26)}
    assert ops["map_qk"].count == 2 and ops["map_qk"].tensor_flops == 2 * 9 * 16 * 72 * 729 * 729
    # the complementary layer 25: the rows of at most 2 x 182 pivotal tokens per crop
    assert ops["complementary_rows_qk"].tensor_flops == 2 * 9 * 16 * 72 * 364 * 729
    # layers a user gives are kept as given, as fpcost prune keeps its flags
    given = estimate_json(capsys, "--model", "llava-onevision-7b", "--keep-ratio", "0.25",
                          "--selection-layers", "-4,-3,-2")
    assert given["settings"]["selection"]["selection_layers"] == [22, 23, 24]


def test_the_cost_models_anchoring_equals_the_pruners():
    """``pruning.anchored_selection`` (the cost model may not import the pruner) moves the
    default layers exactly as ``fpcost.pruner.anchoring.anchored_layers`` does, for every
    tower depth up to 40 and every hidden state the LLM may read."""
    from fpcost.costmodel.pruning import SelectionSpec, anchored_selection
    from fpcost.pruner.anchoring import anchored_layers
    from fpcost.pruner.selection import FreePrunerConfig

    moved = 0
    for num_layers in range(4, 41):  # the defaults need 4 layers
        for feature_layer in range(-(num_layers + 1), num_layers + 1):
            config = FreePrunerConfig(**anchored_layers(num_layers, feature_layer))
            ours = anchored_selection(DEFAULT_SELECTION, num_layers, feature_layer)
            moved += ours != DEFAULT_SELECTION
            assert ours.pivotal_layers(num_layers) == config.pivotal_layers(num_layers), (
                num_layers, feature_layer)
            assert ours.complementary_layer_resolved(num_layers) == (
                config.complementary_layer % num_layers)
            # a selection the user gave is never moved
            given = SelectionSpec(DEFAULT_SELECTION.selection_layers)
            assert anchored_selection(given, num_layers, feature_layer) == given
    assert moved > 500  # most read layers move the defaults


@pytest.mark.parametrize("args, tokens, projected", [
    # 1280 x 720: 9 crops, 54 x 96 grid not shrunk (r = 0.89): the kept positions less the
    # 54 newlines (always kept, never projected)
    (["--image-size", "1280x720", "--keep-ratio", "0.25"], 1492, 1492 - 54),
    (["--image-size", "1280x720", "--visual-tokens", "40"], 40, 0),
    # 2304 x 2304: 37 crops, the 162 x 162 grid shrunk to 81 x 81: every crop token projected
    (["--image-size", "2304x2304", "--keep-ratio", "0.25"], 1843, 37 * 729),
    # a video of 8 frames: every frame's 729 tokens projected, then pooled, then selected
    (["--frames", "8", "--keep-ratio", "0.5"], 784, 8 * 729),
])
def test_the_pruned_projector_runs_what_the_adapter_projects(capsys, args, tokens, projected):
    data = estimate_json(capsys, "--model", "llava-onevision-7b", *args)
    assert data["workload"]["num_visual_tokens"] == tokens and data["workload"]["pruned"]
    assert data["workload"]["num_projected_tokens_per_sample"] == projected
    spec = get_preset("llava-onevision-7b")
    ops = projector_ops(spec.projector, QuantPlan(), projected)
    assert data["stages"]["projector"]["flops"] == sum(op.count * op.flops for op in ops)


def test_memory_fits_and_max_batch(capsys):
    small = estimate_json(capsys, "--model", "llava-onevision-7b", "--hardware", "a100-80g")
    assert small["memory"]["fits"] and small["memory"]["max_batch_size"] >= 1
    large = estimate_json(capsys, "--model", "llava-onevision-72b", "--hardware", "a100-80g")
    assert not large["memory"]["fits"] and large["memory"]["max_batch_size"] == 0


@pytest.mark.parametrize("flash", [False, True])
def test_sweep_rows_equal_estimate(flash, a6000, a100):
    spec = get_preset("llava-onevision-7b")
    frame = sweep([spec], [a6000, a100], [16, 4], keep_ratios=[0.2, 0.5, 1.0], batch_sizes=[1, 3],
                  flash_attention=flash, num_output_tokens=3)
    assert max(frame.num_visual_tokens) == 5967
    for device in (a6000, a100):
        assert_every_stage_equals_estimate(frame[frame.hardware == device.name], spec, device, {},
                                           {"num_output_tokens": 3}, flash)


def test_sweep_takes_the_image_size(a6000):
    spec = get_preset("llava-onevision-7b")
    frame = sweep([spec], [a6000], [16], keep_ratios=[0.25, 1.0], batch_sizes=[1, 2],
                  image_size=(2304, 2304))
    assert max(frame.num_visual_tokens) == 7371
    assert_every_stage_equals_estimate(frame, spec, a6000, {}, {"image_size": (2304, 2304)})


# --- config.json ------------------------------------------------------------------------------


def test_a_saved_config_reads_as_the_preset(tmp_path, capsys):
    """transformers' own save_pretrained of the 7B config: the same estimate as the preset."""
    _hf_config("llava-onevision-7b", 28).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "llava_onevision"
    spec = load_config_json(tmp_path)
    assert spec.kind == "llava-onevision" and spec.anyres_max_num_patches == 9
    assert spec.vision.num_hidden_layers == 26 and spec.vision.feature_layer == -1
    from_file = estimate_json(capsys, "--config", str(tmp_path), "--image-size", "800x600")
    from_preset = estimate_json(capsys, "--model", "llava-onevision-7b", "--image-size", "800x600")
    assert from_file["workload"] == from_preset["workload"]
    assert from_file["stages"] == from_preset["stages"]
    assert from_file["memory"]["weight_bytes"] == from_preset["memory"]["weight_bytes"]


def test_missing_fields_take_transformers_defaults(tmp_path):
    """A minimal file: LlavaOnevisionConfig's defaults (pinpoints, anyres_max_9, layer -1,
    "full"), SiglipVisionConfig's and Qwen2Config's for the sub-configs, as transformers reads it."""
    data = {"model_type": "llava_onevision", "text_config": {"model_type": "qwen2"},
            "vision_config": {"model_type": "siglip_vision_model", "image_size": 384,
                              "patch_size": 14}}
    (tmp_path / "config.json").write_text(json.dumps(data))
    spec = load_config_json(tmp_path)
    config = transformers.LlavaOnevisionConfig(**{k: v for k, v in data.items() if k != "model_type"})
    assert spec.image_grid_pinpoints == tuple(tuple(p) for p in config.image_grid_pinpoints)
    assert spec.vision.feature_layer == config.vision_feature_layer == -1
    assert spec.vision_feature_select_strategy == config.vision_feature_select_strategy
    assert spec.vision.hidden_size == config.vision_config.hidden_size
    assert spec.vision.use_head == config.vision_config.vision_use_head
    assert spec.llm.hidden_size == config.text_config.hidden_size
    assert spec.llm.num_key_value_heads == config.text_config.num_key_value_heads
    assert spec.llm.vocab_size == config.text_config.vocab_size
    with torch.device("meta"):
        small = dict(data, text_config={"model_type": "qwen2", "num_hidden_layers": 1})
        model = transformers.LlavaOnevisionForConditionalGeneration(
            transformers.LlavaOnevisionConfig(**{k: v for k, v in small.items() if k != "model_type"}))
    (tmp_path / "config.json").write_text(json.dumps(small))
    assert parameter_counts(load_config_json(tmp_path))["total"] == sum(
        p.numel() for p in model.parameters())


def _bad(tmp_path, **changes):
    data = json.loads(json.dumps(PRESET_CONFIGS["llava-onevision-7b"]))
    for key, value in changes.items():
        if "." in key:
            part, field = key.split(".")
            data[part][field] = value
        else:
            data[key] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize("changes, fragment", [
    ({"vision_feature_select_strategy": "default"}, "vision_feature_select_strategy 'default'"),
    ({"vision_aspect_ratio": "anyres"}, "vision_aspect_ratio = 'anyres' is not supported"),
    ({"vision_aspect_ratio": "anyres_max_0"}, "valid: anyres_max_N"),
    ({"text_config.model_type": "llama"}, "text_config model_type 'llama'"),
    ({"text_config.use_sliding_window": True}, "use_sliding_window = true"),
    ({"vision_feature_layer": -30}, "vision_feature_layer = -30"),
    ({"image_grid_pinpoints": [[384, 500]]}, "image_grid_pinpoints entry [384, 500]"),
    ({"multimodal_projector_bias": "yes"}, "multimodal_projector_bias"),
])
def test_bad_configs_are_one_line(tmp_path, capsys, changes, fragment):
    path = _bad(tmp_path, **changes)
    with pytest.raises(ConfigError) as info:
        load_config_json(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    code = main(["estimate", "--config", str(path)])
    assert code == 2 and fragment in capsys.readouterr().err

"""Reading Hugging Face config.json files: real llava-hf layouts and every error case."""

import json

import pytest

from fpcost.costmodel.errors import ConfigError
from fpcost.costmodel.hfconfig import load_config_json
from fpcost.costmodel.params import parameter_counts
from fpcost.costmodel.presets import PRESETS
from fpcost.costmodel.units import MEBI

# llava-hf/llava-1.5-7b-hf's config.json as published: its text_config names only the
# fields that differ from LlamaConfig's defaults.
LLAVA_15_7B = {
    "architectures": ["LlavaForConditionalGeneration"],
    "ignore_index": -100,
    "image_token_index": 32000,
    "model_type": "llava",
    "pad_token_id": 32001,
    "projector_hidden_act": "gelu",
    "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
                    "max_position_embeddings": 4096, "model_type": "llama", "rms_norm_eps": 1e-05,
                    "torch_dtype": "float16", "vocab_size": 32064},
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                      "model_type": "clip_vision_model", "num_attention_heads": 16,
                      "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
                      "vocab_size": 32000},
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
}
LLAMA_3_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
              "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
              "vocab_size": 128256, "tie_word_embeddings": False}


def write(tmp_path, data, name="config.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_llava_hf_config_equals_the_preset(tmp_path):
    spec = load_config_json(write(tmp_path, LLAVA_15_7B))
    preset = PRESETS["llava-1.5-7b"]
    assert spec.llm.__dict__ | {"name": ""} == preset.llm.__dict__ | {"name": ""}
    assert spec.vision.num_patches == 576 and spec.default_num_visual_tokens == 576
    assert parameter_counts(spec)["total"] == 7_063_427_072


def test_directory_and_bare_llm(tmp_path):
    write(tmp_path, LLAMA_3_8B)
    spec = load_config_json(tmp_path)
    assert spec.kind == "llm" and spec.llm.num_key_value_heads == 8


def test_video_and_next_kinds(tmp_path):
    video = {**LLAVA_15_7B, "model_type": "video_llava",
             "vision_config": {**LLAVA_15_7B["vision_config"], "image_size": 224}}
    assert load_config_json(write(tmp_path, video)).default_num_visual_tokens == 8 * 256
    nxt = {**LLAVA_15_7B, "model_type": "llava_next",
           "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]}
    # nominal: base + 2x2 crops of the largest pinpoint, 5 x 576 (--image-size gives the exact
    # count, 2928 for 672x672 with its 48 newline tokens; tests/test_anyres.py)
    assert load_config_json(write(tmp_path, nxt)).default_num_visual_tokens == 2880


@pytest.mark.parametrize("data, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ({k: v for k, v in LLAMA_3_8B.items() if k != "hidden_size"}, "'hidden_size' is missing"),
    ({**LLAMA_3_8B, "num_attention_heads": 31}, "must be divisible by num_attention_heads (31)"),
    ({**LLAMA_3_8B, "num_key_value_heads": 5}, "divisible by num_key_value_heads (5)"),
    ({**LLAMA_3_8B, "vocab_size": -3}, "vocab_size = -3 is out of range; valid: 1..16777216"),
    ({**LLAMA_3_8B, "num_hidden_layers": "32"}, "num_hidden_layers = '32' must be an integer"),
    ({**LLAVA_15_7B, "model_type": "blip"},
     "config.json: model_type 'blip' is not a supported multimodal model; valid: llava, "
     "video_llava, llava_next"),
    ({k: v for k, v in LLAVA_15_7B.items() if k != "vision_config"}, "'vision_config' is missing"),
    ({**LLAVA_15_7B, "vision_config": {"model_type": "convnext"}},
     "config.json vision_config: vision tower model_type 'convnext' is not a supported ViT; "
     "valid: clip_vision_model, siglip_vision_model, dinov2"),
])
def test_errors_name_the_field(tmp_path, data, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config_json(write(tmp_path, data))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_json(tmp_path / "nope.json")


# --- every field the reader touches: its JSON type and its range (issue 8) -----------------

TEXT = LLAVA_15_7B["text_config"]
VISION = LLAVA_15_7B["vision_config"]
NEXT = {**LLAVA_15_7B, "model_type": "llava_next",
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]}
DINO = {**LLAVA_15_7B, "vision_config": {"model_type": "dinov2", "image_size": 224, "patch_size": 14}}


def _text(**fields):
    return {**LLAVA_15_7B, "text_config": {**TEXT, **fields}}


def _vision(base=LLAVA_15_7B, **fields):
    return {**base, "vision_config": {**base["vision_config"], **fields}}


@pytest.mark.parametrize("data, message", [
    # booleans must be JSON booleans: "false" used to be read as true (LM head dropped)
    (_text(tie_word_embeddings="false"),
     "config.json text_config: tie_word_embeddings = 'false' must be true or false (a boolean)"),
    (_text(tie_word_embeddings=0), "tie_word_embeddings = 0 must be true or false (a boolean)"),
    (_text(tie_word_embeddings=None), "tie_word_embeddings = None must be true or false (a boolean)"),
    (_text(attention_bias="true"), "attention_bias = 'true' must be true or false (a boolean)"),
    (_text(mlp_bias=[True]), "mlp_bias = [True] must be true or false (a boolean)"),
    ({**LLAMA_3_8B, "tie_word_embeddings": "false"}, "config.json: tie_word_embeddings = 'false'"),
    (_vision(model_type="siglip_vision_model", vision_use_head="false"),
     "config.json vision_config: vision_use_head = 'false' must be true or false (a boolean)"),
    # integers must be JSON integers, in range
    (_text(hidden_size=4096.0), "text_config: hidden_size = 4096.0 must be an integer in 1..1048576"),
    (_text(hidden_size=True), "hidden_size = True must be an integer"),
    (_text(hidden_size=2**21), "hidden_size = 2097152 is out of range; valid: 1..1048576"),
    (_text(hidden_size=10**400), "hidden_size = an integer of about 400 digits is out of range"),
    (_text(num_key_value_heads="8"), "num_key_value_heads = '8' must be an integer"),
    (_text(num_key_value_heads=0), "num_key_value_heads = 0 is out of range"),
    (_text(head_dim=128.0), "head_dim = 128.0 must be an integer"),
    (_text(vocab_size=2**25), "vocab_size = 33554432 is out of range; valid: 1..16777216"),
    (_vision(image_size="336"), "vision_config: image_size = '336' must be an integer"),
    (_vision(image_size=2**15, patch_size=16), "image_size = 32768 is out of range; valid: 1..16384"),
    (_vision(num_channels=3.0), "num_channels = 3.0 must be an integer"),
    (_vision(patch_size=0), "patch_size = 0 is out of range"),
    # strings, objects and choices
    ({**LLAVA_15_7B, "model_type": ["llava"]}, "model_type ['llava'] is not a supported multimodal"),
    ({**LLAVA_15_7B, "model_type": {"a": 1}}, "model_type {'a': 1} is not a supported multimodal"),
    ({**LLAVA_15_7B, "model_type": None}, "model_type None is not a supported multimodal model"),
    (_text(model_type=["llama"]), "text_config: model_type = ['llama'] must be a string"),
    (_vision(model_type=7), "vision_config: vision tower model_type 7 is not a supported ViT"),
    (_vision(model_type=["clip_vision_model"]), "model_type ['clip_vision_model'] is not a"),
    ({**LLAVA_15_7B, "text_config": [1]}, "config.json: text_config = [1] must be a JSON object"),
    ({**LLAVA_15_7B, "vision_config": None}, "vision_config = None must be a JSON object"),
    ({**LLAVA_15_7B, "vision_feature_select_strategy": ["full"]},
     "vision_feature_select_strategy ['full'] is not a supported strategy; valid: default, full"),
    ({**LLAVA_15_7B, "vision_feature_select_strategy": "cls"}, "'cls' is not a supported strategy"),
    # the feature layer must exist in a 24-layer tower: hidden_states -25..24
    ({**LLAVA_15_7B, "vision_feature_layer": 100},
     "config.json: vision_feature_layer = 100 must be one integer layer index in -25..24 for "
     "the 24-layer vision tower"),
    ({**LLAVA_15_7B, "vision_feature_layer": -100}, "vision_feature_layer = -100 must be one"),
    ({**LLAVA_15_7B, "vision_feature_layer": 25}, "vision_feature_layer = 25 must be one"),
    ({**LLAVA_15_7B, "vision_feature_layer": -26}, "vision_feature_layer = -26 must be one"),
    ({**LLAVA_15_7B, "vision_feature_layer": -2.0}, "vision_feature_layer = -2.0 must be one"),
    ({**LLAVA_15_7B, "vision_feature_layer": True}, "vision_feature_layer = True must be one"),
    ({**LLAVA_15_7B, "vision_feature_layer": [-2, -5]}, "(a list of layers is not supported)"),
    # LLaVA-NeXT pinpoints
    ({**NEXT, "image_grid_pinpoints": None}, "image_grid_pinpoints = None must be a list of 1 to"),
    ({**NEXT, "image_grid_pinpoints": 5}, "image_grid_pinpoints = 5 must be a list"),
    ({**NEXT, "image_grid_pinpoints": []}, "image_grid_pinpoints = [] must be a list"),
    ({**NEXT, "image_grid_pinpoints": "336x672"}, "image_grid_pinpoints = '336x672' must be"),
    ({**NEXT, "image_grid_pinpoints": [5]}, "image_grid_pinpoints entry 5 is not valid"),
    ({**NEXT, "image_grid_pinpoints": [[1, 1]]},
     "image_grid_pinpoints entry [1, 1] is not valid; each must be [height, width], positive "
     "multiples of 336 up to 16384"),
    ({**NEXT, "image_grid_pinpoints": [[336]]}, "entry [336] is not valid"),
    ({**NEXT, "image_grid_pinpoints": [[336, 672, 336]]}, "entry [336, 672, 336] is not valid"),
    ({**NEXT, "image_grid_pinpoints": [[336, 672.0]]}, "entry [336, 672.0] is not valid"),
    ({**NEXT, "image_grid_pinpoints": [[True, 336]]}, "entry [True, 336] is not valid"),
    ({**NEXT, "image_grid_pinpoints": [[0, 336]]}, "entry [0, 336] is not valid"),
    ({**NEXT, "image_grid_pinpoints": [[-336, 336]]}, "entry [-336, 336] is not valid"),
    ({**NEXT, "image_grid_pinpoints": [[500, 336]]}, "entry [500, 336] is not valid"),
    ({**NEXT, "image_grid_pinpoints": [[336 * 64, 336]]}, "entry [21504, 336] is not valid"),
    ({**NEXT, "image_grid_pinpoints": [[336, 336]] * 1025}, "must be a list of 1 to 1024"),
    ({k: v for k, v in NEXT.items() if k != "image_grid_pinpoints"},
     "required field 'image_grid_pinpoints' is missing"),
    # DINOv2's MLP ratio
    (_vision(DINO, mlp_ratio="4"), "mlp_ratio = '4' must be a number in (0, 64]"),
    (_vision(DINO, mlp_ratio="x"), "mlp_ratio = 'x' must be a number"),
    (_vision(DINO, mlp_ratio=None), "mlp_ratio = None must be a number"),
    (_vision(DINO, mlp_ratio=True), "mlp_ratio = True must be a number"),
    (_vision(DINO, mlp_ratio=0), "mlp_ratio = 0 is out of range; valid: (0, 64]"),
    (_vision(DINO, mlp_ratio=-1), "mlp_ratio = -1 is out of range"),
    (_vision(DINO, mlp_ratio=1e300), "mlp_ratio = 1e+300 is out of range"),
    (_vision(DINO, mlp_ratio=1e-5), "mlp_ratio = 1e-05 gives an MLP width of int(768 x 1e-05) = 0"),
])
def test_wrong_types_and_ranges_name_the_key(tmp_path, data, message):
    with pytest.raises(ConfigError) as info:
        load_config_json(write(tmp_path, data))
    text = str(info.value)
    assert message in text
    assert "\n" not in text and len(text) < 400
    assert text.startswith("config.json")


@pytest.mark.parametrize("text, message", [
    ('{"model_type": "llava", "vision_config": {"mlp_ratio": NaN}}', "holds NaN, which is not a JSON number"),
    ('{"hidden_size": Infinity}', "holds Infinity, which is not a JSON number"),
    ('{"hidden_size": -Infinity}', "holds -Infinity"),
    ("[" * 100_000 + "]" * 100_000, "arrays or objects nested too deeply"),
    ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
    ('{"hidden_size": 1' + "0" * 5000 + "}", "is not valid JSON: Exceeds the limit (4300 digits)"),
    ("null", "must hold a JSON object, not NoneType"),
    ('"llava"', "must hold a JSON object, not str"),
    ("5", "must hold a JSON object, not int"),
    ("", "is not valid JSON: Expecting value at line 1 column 1"),
])
def test_malformed_json_is_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config_json(write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_non_utf8_and_huge_files(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"model_type": "\xff\xfe"}')
    with pytest.raises(ConfigError, match=r"^config.json is not UTF-8 text \(byte 16\)$"):
        load_config_json(path)
    path.write_bytes(b" " * int(17 * MEBI))
    with pytest.raises(ConfigError, match="is larger than 16 MiB"):
        load_config_json(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config_json(tmp_path / "a\x00b.json")


def test_tie_word_embeddings_true_drops_the_lm_head(tmp_path):
    """The value, not the string, decides: true removes vocab x hidden LM-head weights."""
    untied = parameter_counts(load_config_json(write(tmp_path, _text(tie_word_embeddings=False))))
    tied = parameter_counts(load_config_json(write(tmp_path, _text(tie_word_embeddings=True))))
    assert untied["total"] - tied["total"] == 32064 * 4096


@pytest.mark.parametrize("layer, num_layers_run", [(-25, 0), (0, 0), (24, 24), (-1, 24), (-2, 23)])
def test_feature_layer_edges_are_accepted(tmp_path, layer, num_layers_run):
    spec = load_config_json(write(tmp_path, {**LLAVA_15_7B, "vision_feature_layer": layer}))
    assert spec.vision.num_feature_layers == num_layers_run


def test_defaults_and_nulls_read_as_transformers_does(tmp_path):
    """Sub-configs without model_type are LlavaConfig's defaults (llama, clip_vision_model);
    null KV heads / head_dim mean "as many as heads" / "hidden / heads"; DINOv2's MLP ratio
    may be a float."""
    text = {k: v for k, v in TEXT.items() if k != "model_type"}
    vision = {k: v for k, v in VISION.items() if k != "model_type"}
    data = {**LLAVA_15_7B, "text_config": {**text, "num_key_value_heads": None, "head_dim": None},
            "vision_config": vision}
    spec = load_config_json(write(tmp_path, data))
    assert spec.llm == PRESETS["llava-1.5-7b"].llm.__class__(**{**PRESETS["llava-1.5-7b"].llm.__dict__,
                                                               "name": spec.llm.name})
    assert spec.vision.family == "clip"
    dino = load_config_json(write(tmp_path, _vision(DINO, mlp_ratio=2.5)))
    assert dino.vision.intermediate_size == 1920

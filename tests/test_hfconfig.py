"""Reading Hugging Face config.json files: real llava-hf layouts and every error case."""

import json

import pytest

from fpcost.costmodel.errors import ConfigError
from fpcost.costmodel.hfconfig import load_config_json
from fpcost.costmodel.params import parameter_counts
from fpcost.costmodel.presets import PRESETS

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
    ({**LLAMA_3_8B, "vocab_size": -3}, "vocab_size = -3 must be a positive integer"),
    ({**LLAMA_3_8B, "num_hidden_layers": "32"}, "num_hidden_layers = '32'"),
    ({**LLAVA_15_7B, "model_type": "blip"}, "model_type 'blip' is not a supported multimodal"),
    ({k: v for k, v in LLAVA_15_7B.items() if k != "vision_config"}, "'vision_config' is missing"),
    ({**LLAVA_15_7B, "vision_config": {"model_type": "convnext"}}, "'convnext' is not a supported ViT"),
])
def test_errors_name_the_field(tmp_path, data, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config_json(write(tmp_path, data))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_json(tmp_path / "nope.json")

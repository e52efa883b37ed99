"""Qwen-VL parameter counts against transformers' models built on ``meta`` (full depth: a
meta build allocates nothing), and the config reader's checks."""

import copy

import pytest

from fpcost.costmodel.errors import ConfigError
from fpcost.costmodel.families.qwen_vl_params import merger_params, parameter_counts
from fpcost.costmodel.families.qwen_vl_presets import PRESET_CONFIGS, qwen_vl_preset
from fpcost.costmodel.families.qwen_vl_spec import qwen_vl_spec_from_config
from fpcost.costmodel.params import parameter_counts as model_parameter_counts
from fpcost.costmodel.presets import get_preset


def test_presets_read_as_published():
    spec = qwen_vl_preset("qwen2-vl-7b")
    assert (spec.llm.hidden_size, spec.llm.num_hidden_layers, spec.llm.num_attention_heads,
            spec.llm.num_key_value_heads, spec.llm.intermediate_size, spec.llm.vocab_size) == (
        3584, 28, 28, 4, 18944, 152064)
    assert not spec.llm.tie_word_embeddings and qwen_vl_preset("qwen2-vl-2b").llm.tie_word_embeddings
    v = qwen_vl_preset("qwen2.5-vl-3b").vision
    assert (v.hidden_size, v.intermediate_size, v.out_hidden_size, v.window_size) == (
        1280, 3420, 2048, 112)
    assert (v.num_full_attention_blocks, v.num_window_attention_blocks) == (4, 28)
    assert qwen_vl_preset("qwen2-vl-2b").vision.intermediate_size == 5120  # 1280 · mlp_ratio 4


def test_merger_by_hand():
    # LayerNorm(1280) + Linear(5120, 5120) + Linear(5120, 3584), biases included
    vision = qwen_vl_preset("qwen2-vl-7b").vision
    assert merger_params(vision) == 2 * 1280 + 5120 * 5120 + 5120 + 5120 * 3584 + 3584
    # Qwen2.5-VL: RMSNorm (weight only)
    vision = qwen_vl_preset("qwen2.5-vl-7b").vision
    assert merger_params(vision) == 1280 + 5120 * 5120 + 5120 + 5120 * 3584 + 3584


def test_qwen2_vl_tower_is_675m():
    counts = parameter_counts(qwen_vl_preset("qwen2-vl-7b"))
    assert round((counts["vision"] + counts["projector"]) / 1e6) == 676  # "675M" in the paper


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _hf_model(config: dict):
    if config["model_type"] == "qwen2_vl":
        return transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
    return transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration


@pytest.mark.parametrize("name", sorted(PRESET_CONFIGS))
def test_preset_counts_equal_transformers_on_meta(name):
    config_cls, model_cls = _hf_model(PRESET_CONFIGS[name])
    with torch.device("meta"):
        model = model_cls(config_cls(**copy.deepcopy(PRESET_CONFIGS[name])))
    counts = parameter_counts(qwen_vl_preset(name))
    visual = model.model.visual
    assert counts["projector"] == sum(p.numel() for p in visual.merger.parameters())
    assert counts["vision"] == sum(p.numel() for p in visual.parameters()) - counts["projector"]
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    # the preset fpcost estimate costs, counted through its family (params.parameter_counts)
    assert model_parameter_counts(get_preset(name)) == counts


@pytest.mark.parametrize("name", ["qwen2-vl-2b", "qwen2.5-vl-3b"])
def test_save_pretrained_form_reads_the_same(name):
    """transformers 5 writes text_config nested; the spec read from it is the same."""
    config_cls, _ = _hf_model(PRESET_CONFIGS[name])
    saved = config_cls(**copy.deepcopy(PRESET_CONFIGS[name])).to_dict()
    assert "text_config" in saved
    assert qwen_vl_spec_from_config(saved, name=name) == qwen_vl_preset(name)


def test_defaults_are_transformers_defaults():
    """Missing fields take transformers' defaults (the tower's, and the 72B text sizes)."""
    for model_type, config_cls in (("qwen2_vl", transformers.Qwen2VLConfig),
                                   ("qwen2_5_vl", transformers.Qwen2_5_VLConfig)):
        hf = config_cls(hidden_size=3584)
        spec = qwen_vl_spec_from_config({"model_type": model_type, "hidden_size": 3584})
        text = hf.text_config
        assert (spec.llm.num_hidden_layers, spec.llm.num_attention_heads,
                spec.llm.num_key_value_heads, spec.llm.intermediate_size, spec.llm.vocab_size) == (
            text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.intermediate_size, text.vocab_size)
        vision = hf.vision_config
        assert (spec.vision.depth, spec.vision.num_heads) == (vision.depth, vision.num_heads)
        width = vision.embed_dim if model_type == "qwen2_vl" else vision.hidden_size
        assert spec.vision.hidden_size == width


def test_transformers_default_widths_disagree_and_are_refused():
    # Qwen2VLConfig() alone: a 3584-wide merger output for an 8192-wide LLM
    with pytest.raises(ConfigError, match=r"output width \(3584\) must equal the LLM's hidden_size "
                                          r"\(8192\)"):
        qwen_vl_spec_from_config({"model_type": "qwen2_vl"})


# --- the reader's checks ------------------------------------------------------------------


def _config(**changes):
    config = copy.deepcopy(PRESET_CONFIGS["qwen2.5-vl-7b"])
    for key, value in changes.items():
        if key.startswith("v_"):
            config["vision_config"][key[len("v_"):]] = value
        else:
            config[key] = value
    return config


@pytest.mark.parametrize("changes, message", [
    ({"model_type": "llava"}, r"model_type 'llava' is not a Qwen-VL model"),
    ({"hidden_size": "3584"}, r"hidden_size = '3584' must be an integer"),
    ({"num_key_value_heads": 5}, r"divisible by num_key_value_heads \(5\)"),
    ({"tie_word_embeddings": "false"}, r"tie_word_embeddings = 'false' must be true or false"),
    ({"use_sliding_window": True}, r"use_sliding_window = true is not supported"),
    ({"v_depth": 0}, r"vision_config: depth = 0 is out of range"),
    ({"v_window_size": 20}, r"window_size = 20 must be at least"),
    ({"v_fullatt_block_indexes": 7}, r"fullatt_block_indexes = 7 must be a list"),
    ({"v_fullatt_block_indexes": [-1]}, r"fullatt_block_indexes = -1 is out of range"),
    ({"v_out_hidden_size": 2048}, r"output width \(2048\) must equal the LLM's hidden_size"),
    ({"vision_config": []}, r"vision_config = \[\] must be a JSON object"),
    ({"v_num_heads": 7}, r"width \(1280\) must be divisible by num_heads \(7\)"),
])
def test_bad_configs_are_refused_naming_the_value(changes, message):
    with pytest.raises(ConfigError, match=message) as info:
        qwen_vl_spec_from_config(_config(**changes), origin="model/config.json")
    assert str(info.value).startswith("model/config.json")


def test_qwen2_vl_mlp_ratio_checks():
    config = copy.deepcopy(PRESET_CONFIGS["qwen2-vl-7b"])
    config["vision_config"]["mlp_ratio"] = 2.5
    assert qwen_vl_spec_from_config(config).vision.intermediate_size == 3200
    config["vision_config"]["mlp_ratio"] = float("nan")
    with pytest.raises(ConfigError, match="mlp_ratio = nan must be a number"):
        qwen_vl_spec_from_config(config)

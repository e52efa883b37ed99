"""Direction (b): analytic parameter counts equal transformers' models built on ``meta``."""

import pytest

from fpcost.costmodel.params import parameter_counts
from fpcost.costmodel.presets import PRESETS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_config(spec):
    v, t = spec.vision, spec.llm
    vision = transformers.CLIPVisionConfig(
        hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_hidden_layers, num_attention_heads=v.num_attention_heads,
        image_size=v.image_size, patch_size=v.patch_size)
    text = transformers.LlamaConfig(
        hidden_size=t.hidden_size, num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
        intermediate_size=t.intermediate_size, vocab_size=t.vocab_size)
    if spec.kind == "llava":
        return transformers.LlavaForConditionalGeneration, transformers.LlavaConfig(
            vision_config=vision, text_config=text)
    if spec.kind == "video-llava":
        return transformers.VideoLlavaForConditionalGeneration, transformers.VideoLlavaConfig(
            vision_config=vision, text_config=text)
    return transformers.LlavaNextForConditionalGeneration, transformers.LlavaNextConfig(
        vision_config=vision, text_config=text,
        image_grid_pinpoints=[list(p) for p in spec.image_grid_pinpoints])


# the Qwen-VL presets are built with their own transformers classes in
# tests/families/test_qwen_vl_params.py (and their totals checked in test_qwen_vl_family.py)
LLAVA_PRESETS = sorted(n for n in PRESETS if PRESETS[n].kind in ("llava", "video-llava", "llava-next"))


@pytest.mark.parametrize("name", LLAVA_PRESETS)
def test_preset_parameter_count_equals_transformers(name):
    spec = PRESETS[name]
    cls, config = hf_config(spec)
    with torch.device("meta"):
        model = cls(config)
    assert parameter_counts(spec)["total"] == sum(p.numel() for p in model.parameters())


def test_llava_7b_count_is_the_published_one():
    # llava-hf/llava-1.5-7b-hf with its 32,064-token vocabulary
    assert parameter_counts(PRESETS["llava-1.5-7b"])["total"] == 7_063_427_072


@pytest.mark.parametrize("family", ["siglip", "dinov2"])
def test_other_vision_towers(family):
    from fpcost.costmodel.spec import VisionSpec

    spec = VisionSpec(hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                      num_attention_heads=4, image_size=56, patch_size=14, family=family)
    if family == "siglip":
        config = transformers.SiglipVisionConfig(
            hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
            image_size=56, patch_size=14)
        cls = transformers.SiglipVisionModel
    else:
        config = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=3,
                                           num_attention_heads=4, image_size=56, patch_size=14,
                                           mlp_ratio=4)
        cls = transformers.Dinov2Model
    with torch.device("meta"):
        model = cls(config)
    from fpcost.costmodel.params import vision_params

    assert vision_params(spec) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("where", ["top", "text_config"])
def test_tied_embeddings_are_read_where_transformers_reads_them(tmp_path, where):
    """LlavaConfig ties the LM head when the top level *or* text_config says so."""
    import json

    from fpcost.costmodel.hfconfig import spec_from_config

    cls, config = hf_config(PRESETS["llava-1.5-7b"])
    if where == "top":
        config.tie_word_embeddings = True
    else:
        config.text_config.tie_word_embeddings = True
    config.save_pretrained(tmp_path)
    spec = spec_from_config(json.loads((tmp_path / "config.json").read_text()))
    config = type(config).from_pretrained(tmp_path)  # as a checkpoint is loaded
    with torch.device("meta"):
        model = cls(config)
    assert spec.llm.tie_word_embeddings
    assert parameter_counts(spec)["total"] == sum(p.numel() for p in model.parameters())

"""Encoder loading and image preprocessing (encoders.py)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from fpcost.pruner.encoders import (
    CLIP_MEAN,
    SIGLIP_MEAN,
    load_encoder,
    normalize,
    resize_and_crop,
    to_rgb,
)
from fpcost.pruner.errors import PruningError

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=7)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("encoders")
    CLIPVisionModel(CLIPVisionConfig(intermediate_size=64, **TINY)).save_pretrained(root / "clip")
    SiglipVisionModel(SiglipVisionConfig(intermediate_size=64, **TINY)).save_pretrained(
        root / "siglip"
    )
    Dinov2Model(Dinov2Config(**TINY)).save_pretrained(root / "dinov2")
    llava = LlavaForConditionalGeneration(
        LlavaConfig(
            vision_config=CLIPVisionConfig(intermediate_size=64, **TINY),
            text_config=LlamaConfig(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=4,
                vocab_size=128,
            ),
            image_token_index=100,
        )
    )
    llava.save_pretrained(root / "llava")
    return root, llava


@pytest.mark.parametrize(
    "name, class_name, mean",
    [
        ("clip", "CLIPVisionModel", CLIP_MEAN),
        ("siglip", "SiglipVisionModel", SIGLIP_MEAN),
        ("dinov2", "Dinov2Model", (0.485, 0.456, 0.406)),
    ],
)
def test_load_bare_encoders(saved, name, class_name, mean):
    encoder = load_encoder(str(saved[0] / name))
    assert type(encoder.model).__name__ == class_name
    assert encoder.model.config._attn_implementation == "sdpa"
    assert not encoder.model.training
    assert (encoder.image_size, encoder.patch_size, encoder.num_patches) == (28, 7, 16)
    assert encoder.mean == pytest.approx(mean)


def test_llava_checkpoint_gives_its_vision_tower(saved):
    root, llava = saved
    encoder = load_encoder(str(root / "llava"))
    assert type(encoder.model).__name__ == "CLIPVisionModel"
    pixels = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        ours = encoder.model(pixels).last_hidden_state
        theirs = llava.model.vision_tower(pixels).last_hidden_state
    torch.testing.assert_close(ours, theirs)


def test_processor_config_overrides_normalisation(saved, tmp_path):
    import shutil

    shutil.copytree(saved[0] / "dinov2", tmp_path / "dino")
    (tmp_path / "dino" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_mean": [0.1, 0.2, 0.3],
                "image_std": [1, 1, 1],
                "crop_size": {"height": 14, "width": 14},
            }
        )
    )
    encoder = load_encoder(str(tmp_path / "dino"))
    assert encoder.mean == (0.1, 0.2, 0.3) and encoder.image_size == 14 and encoder.num_patches == 4


def test_clip_rejects_other_sizes(saved):
    with pytest.raises(
        PruningError, match="image size 56 px does not match CLIPVisionModel's position embeddings"
    ):
        load_encoder(str(saved[0] / "clip"), image_size=56)


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            "nowhere/at-all",
            "no weights at nowhere/at-all: not a local "
            "directory, not in the local Hugging Face cache",
        ),
        ("./relative/missing", "no weights at ./relative/missing"),
    ],
)
def test_missing_sources(bad, message):
    with pytest.raises(PruningError, match=message):
        load_encoder(bad)


def test_directory_errors(tmp_path):
    with pytest.raises(PruningError, match="no config.json in"):
        load_encoder(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(
        PruningError, match="model_type 'bert' .* is not supported; valid: clip_vision_model"
    ):
        load_encoder(str(tmp_path))
    file = tmp_path / "weights.bin"
    file.write_bytes(b"x")
    with pytest.raises(PruningError, match="no weights at .*weights.bin: expected a directory"):
        load_encoder(str(file))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "I;16", "F", "1", "CMYK"])
def test_any_mode_becomes_rgb(mode):
    image = Image.new("RGB", (9, 5), (200, 100, 50)).convert(mode)
    assert to_rgb(image).mode == "RGB"


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("size", [(100, 40), (40, 100), (28, 28), (5, 7)])
def test_resize_shortest_side_and_centre_crop(size):
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:, : size[0] // 2] = 255  # left half white
    crop = resize_and_crop(Image.fromarray(array), 28)
    assert crop.size == (28, 28)
    if size[0] > size[1]:  # landscape: the centre crop straddles the white/black edge
        pixels = np.asarray(crop)
        assert pixels[:, 0].mean() > 200 and pixels[:, -1].mean() < 50


def test_normalize():
    image = Image.new("RGB", (2, 2), (255, 0, 128))
    pixels = normalize(image, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # (3, 2, 2)
    assert pixels.shape == (3, 2, 2)
    torch.testing.assert_close(pixels[:, 0, 0], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]))

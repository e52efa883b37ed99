"""``fpcost prune --model DIR`` on a tiny LLaVA-OneVision checkpoint (save_pretrained, with its
PIL image processor's preprocessor_config.json): the SigLIP tower alone, the base image as the
processor makes it, freePruner's layers placed relative to the layer the LLM reads."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_onevision import OV_PINPOINTS, tiny_llava_onevision
from transformers import LlavaOnevisionImageProcessorPil

from fpcost.cli.main import main
from fpcost.pruner.anchoring import anchored_layers
from fpcost.pruner.encoders import load_encoder
from tests.cli_helpers import one_line_error

NUM_TOKENS = 16  # 28 px / 7 px patches, no CLS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-onevision")
    model = tiny_llava_onevision(seed=0)
    model.save_pretrained(directory)
    processor = LlavaOnevisionImageProcessorPil(
        size={"height": 28, "width": 28}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        image_grid_pinpoints=OV_PINPOINTS)
    processor.save_pretrained(directory)
    return directory, model, processor


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("ov-images") / "wide.png"
    array = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("size", [(70, 50), (100, 300), (28, 28), (90, 17)])
def test_encoder_sees_the_processors_base_image(checkpoint, size):
    """The whole image squashed to 28 px (not a centre crop), SigLIP mean and std from the
    preprocessor config, through the checkpoint's own tower weights."""
    directory, model, processor = checkpoint
    encoder = load_encoder(str(directory))
    assert type(encoder.model).__name__ == "SiglipVisionModel"
    assert (encoder.image_size, encoder.mean, encoder.feature_layer) == (28, (0.5,) * 3, -1)
    array = np.random.default_rng(1).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    picture = Image.fromarray(array)
    mine = encoder.pixel_values([encoder.crop(picture)])  # (1, 3, 28, 28)
    theirs = processor(images=picture, return_tensors="pt")["pixel_values"][:, 0]  # base
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
    with torch.no_grad():
        ours = encoder.model(mine, output_hidden_states=True).hidden_states[-1]
        model_side = model.model.vision_tower(mine, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(ours, model_side, rtol=0, atol=0)


def test_default_layers_follow_the_feature_layer():
    # released LLaVA-OneVision: 26 layers, hidden state -1 -> pivotal 23, 24; complementary 25
    assert anchored_layers(26, -1) == {
        "pivotal_start_layer": -3, "pivotal_end_layer": -1, "complementary_layer": -1}
    assert anchored_layers(24, -2) == {}  # LLaVA-1.5: the defaults as written
    assert anchored_layers(24, 23) == {}  # the same layer, counted from the front
    assert anchored_layers(24, -3)["complementary_layer"] == -3
    assert anchored_layers(24, [-2, -1]) == anchored_layers(24, 1) == {}


def test_prune_model_dir_end_to_end(capsys, checkpoint, image_path, tmp_path):
    directory = checkpoint[0]
    output = tmp_path / "results.json"
    code = main(["prune", str(image_path), "--model", str(directory), "--format", "json",
                 "--output", str(output)])
    out = capsys.readouterr()
    assert code == 0, out.err
    (row,) = json.loads(out.out)
    assert row["num_tokens"] == NUM_TOKENS and row["grid"] == [4, 4]
    assert 0 < row["num_kept"] < NUM_TOKENS
    assert row["kept_indices"] == sorted(set(row["kept_indices"]))
    assert all(0 <= i < NUM_TOKENS for i in row["kept_indices"])
    # 4 layers read at hidden state -1: complementary 3, pivotal range(4)[-3:-1] = 1, 2
    assert row["settings"]["pivotal_layers"] == [1, 2]
    assert row["settings"]["complementary_layer"] == 3
    assert json.loads(output.read_text())["settings"]["complementary_layer"] == 3
    code = main(["prune", str(image_path), "--model", str(directory), "--format", "json",
                 "--complementary-layer", "-2"])
    settings = json.loads(capsys.readouterr().out)[0]["settings"]
    assert code == 0
    assert (settings["complementary_layer"], settings["pivotal_layers"]) == (2, [1, 2])


@pytest.mark.parametrize("method", ["cls", "prumerge+", "random", "uniform", "keep-all"])
def test_baselines_run_on_a_tower_without_cls(capsys, checkpoint, image_path, method):
    """No CLS token: cls ranks by mean attention received, prumerge+ likewise (methods.py)."""
    code = main(["prune", str(image_path), "--model", str(checkpoint[0]), "--format", "json",
                 "--method", method])
    out = capsys.readouterr()
    assert code == 0, out.err
    (row,) = json.loads(out.out)
    assert row["num_tokens"] == NUM_TOKENS and 0 < row["num_kept"] <= NUM_TOKENS


def test_out_of_range_layer_is_one_line(capsys, checkpoint, image_path):
    code = main(["prune", str(image_path), "--model", str(checkpoint[0]),
                 "--complementary-layer", "4"])
    one_line_error(code, capsys.readouterr().err, "--complementary-layer 4")


def test_released_depth_resolves_to_layers_23_24_and_25(capsys, tmp_path, image_path):
    """The released towers' depth (26 SigLIP layers read at hidden state -1), tiny widths."""
    from transformers import SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=26,
                                num_attention_heads=4, image_size=28, patch_size=7,
                                vision_use_head=False)
    tiny_llava_onevision(seed=0, vision_config=vision).save_pretrained(tmp_path)
    code = main(["prune", str(image_path), "--model", str(tmp_path), "--format", "json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    settings = json.loads(out.out)[0]["settings"]
    assert (settings["pivotal_layers"], settings["complementary_layer"]) == ([23, 24], 25)

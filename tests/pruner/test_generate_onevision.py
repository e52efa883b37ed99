"""``fpcost generate`` on a tiny LLaVA-OneVision saved with save_pretrained, with a locally built
tokenizer and its PIL image processor (no hub, no torchvision: onevision_processor.py)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import IMAGE_TOKEN_ID
from tiny_onevision import OV_PACKED, OV_PINPOINTS, tiny_llava_onevision
from transformers import LlavaOnevisionImageProcessorPil

from fpcost.pruner.generate import load_checkpoint
from tests.cli_helpers import one_line_error, run_cli
from tests.pruner.test_cli_generate import FAST, PROMPT, RUN_KEYS, _json_runs, tiny_processor

SIZE = (40, 56)  # width, height: the tiny model's shrunk 2x2 grid, OV_PACKED[1] tokens


@pytest.fixture(scope="module")
def ov_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate-ov")
    directory = root / "tiny-onevision"
    tiny_llava_onevision(seed=0).save_pretrained(directory)
    tiny_processor().tokenizer.save_pretrained(directory)
    LlavaOnevisionImageProcessorPil(
        size={"height": 28, "width": 28}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        image_grid_pinpoints=OV_PINPOINTS,
    ).save_pretrained(directory)
    pixels = (np.random.default_rng(0).random((SIZE[1], SIZE[0], 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(root / "image.png")
    return directory, root / "image.png"


def test_the_processor_expands_the_image_to_the_models_packed_count(ov_checkpoint):
    directory, image = ov_checkpoint
    checkpoint = load_checkpoint(directory)
    batch = checkpoint.processor(images=Image.open(image).convert("RGB"),
                                 text="<image>\n" + PROMPT, return_tensors="pt")
    assert int((batch["input_ids"] == IMAGE_TOKEN_ID).sum()) == OV_PACKED[1]
    assert batch["image_sizes"].tolist() == [[SIZE[1], SIZE[0]]]
    with torch.no_grad():  # the model accepts exactly these inputs
        out = checkpoint.model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 2


def test_keep_all_gives_the_unpruned_answer(capsys, ov_checkpoint):
    directory, image = ov_checkpoint
    payload = _json_runs(capsys, image, "--model", directory, "--prompt", PROMPT,
                         "--method", "keep-all", *FAST)
    assert payload["model_type"] == "llava_onevision"
    unpruned, kept = payload["runs"]
    assert unpruned["answer"] == kept["answer"] and unpruned["answer"].strip()
    assert unpruned["num_visual_tokens"] == kept["num_kept"] == OV_PACKED[1]


def test_freepruner_keeps_fewer_with_a_finite_prediction(capsys, ov_checkpoint, tmp_path):
    from tests.test_calibration import this_cpu_profile

    profile = this_cpu_profile(tmp_path)
    directory, image = ov_checkpoint
    threads = torch.get_num_threads()
    try:
        payload = _json_runs(capsys, image, "--model", directory, "--prompt", PROMPT,
                             "--profile", profile, *FAST)
    finally:
        torch.set_num_threads(threads)  # generate adopts the profile's thread count
    unpruned, pruned = payload["runs"]
    assert unpruned["num_kept"] == OV_PACKED[1] > pruned["num_kept"] > 0
    assert pruned["num_prompt_tokens"] < unpruned["num_prompt_tokens"]
    for run in payload["runs"]:
        assert set(run) == RUN_KEYS
        for key in RUN_KEYS - {"label", "method", "ratio", "answer"}:
            assert math.isfinite(run[key]) and run[key] >= 0, (key, run[key])
    assert pruned["predicted_speedup"] > 1


def test_directory_without_tokenizer_is_one_line(capsys, tmp_path, ov_checkpoint):
    tiny_llava_onevision(seed=0).save_pretrained(tmp_path / "bare")
    code, _, err = run_cli(capsys, "generate", ov_checkpoint[1], "--model", tmp_path / "bare",
                           "--prompt", PROMPT, *FAST)
    one_line_error(code, err, "no tokenizer")

"""``fpcost generate`` on tiny Qwen2-VL / Qwen2.5-VL checkpoints saved with save_pretrained
(model, a WordLevel tokenizer with the Qwen special tokens, the PIL image processor): no hub,
no torchvision.

The merged-token selector (``fpcost.pruner.qwen_vision.select_merged``) is replaced by a
stand-in that keeps every merged token for keep-all and every other one otherwise, so these
tests check the generate path and the prediction, not a selection method."""

import json
import math
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from qwen_gen_models import (
    BUILDERS,
    IMAGE_PAD_ID,
    VIDEO_PAD_ID,
    VISION_END_ID,
    VISION_START_ID,
    VOCAB_SIZE,
    StrideSelector,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessorPil

import fpcost
from fpcost.costmodel.quant import QuantPlan
from fpcost.pruner.methods import KeepAllPruner
from fpcost.pruner.qwen_processor import QwenVLImageTextProcessor
from tests.cli_helpers import one_line_error, run_cli

SPECIAL = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<|vision_start|>": VISION_START_ID,
           "<|image_pad|>": IMAGE_PAD_ID, "<|video_pad|>": VIDEO_PAD_ID,
           "<|vision_end|>": VISION_END_ID}
PROMPT = "w5 w6 w7 w8"
FAST = ("--max-new-tokens", "4", "--repeats", "1", "--format", "json")
IMAGE_HW = (60, 90)  # smart_resize -> 56 x 84 px -> a (1, 4, 6) grid -> 6 merged tokens
MIN_PIXELS, MAX_PIXELS = 4 * 28 * 28, 64 * 28 * 28


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Words ``w<id>`` for every id not special, and Qwen's vision tokens as special tokens."""
    vocab = dict(SPECIAL)
    vocab.update({f"w{i}": i for i in range(VOCAB_SIZE) if i not in SPECIAL.values()})
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_start_token": "<|vision_start|>",
                              "vision_end_token": "<|vision_end|>"},
    )


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def checkpoint(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    directory = root / "checkpoint"
    BUILDERS[request.param](seed=0).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS).save_pretrained(directory)
    pixels = (np.random.default_rng(0).random((*IMAGE_HW, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(root / "image.png")
    return request.param, directory, root / "image.png"


@pytest.fixture(autouse=True)
def stand_in_selector(monkeypatch):
    """keep-all keeps every merged token, any other pruner every other one."""
    def select_merged(pruner, visual, pixel_values, grid_thw):
        stride = 1 if isinstance(pruner, KeepAllPruner) else 2
        return StrideSelector(stride)(pruner, visual, pixel_values, grid_thw)

    module = types.ModuleType("fpcost.pruner.qwen_vision")
    module.select_merged = select_merged
    monkeypatch.setitem(sys.modules, "fpcost.pruner.qwen_vision", module)


def _json(capsys, *args):
    code, out, err = run_cli(capsys, "generate", *args)
    assert code == 0, err
    return json.loads(out)


def test_the_processor_expands_and_wraps_the_image(checkpoint):
    _, directory, image = checkpoint
    from transformers import AutoConfig

    processor = QwenVLImageTextProcessor.from_pretrained(
        directory, AutoConfig.from_pretrained(directory))
    assert processor.image_prompt == "<|vision_start|><|image_pad|><|vision_end|>"
    assert processor.pixel_limits == (MIN_PIXELS, MAX_PIXELS)
    batch = processor(images=Image.open(image), text=processor.image_prompt + " " + PROMPT)
    assert batch["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert batch["pixel_values"].shape == (24, 3 * 2 * 14 * 14)
    ids = batch["input_ids"][0].tolist()
    assert ids == [VISION_START_ID, *[IMAGE_PAD_ID] * 6, VISION_END_ID, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="the text has 0 <|image_pad|> for 1 images"):
        processor(images=Image.open(image), text=PROMPT)


def test_keep_all_gives_the_unpruned_answer(capsys, checkpoint):
    model_type, directory, image = checkpoint
    payload = _json(capsys, image, "--model", directory, "--prompt", PROMPT,
                    "--method", "keep-all", *FAST)
    assert payload["model_type"] == model_type
    unpruned, kept = payload["runs"]
    assert unpruned["answer"] == kept["answer"] and unpruned["answer"].strip()
    assert unpruned["num_visual_tokens"] == unpruned["num_kept"] == kept["num_kept"] == 6
    # <|vision_start|> 6 x <|image_pad|> <|vision_end|> w5 w6 w7 w8
    assert unpruned["num_prompt_tokens"] == kept["num_prompt_tokens"] == 12


def _this_cpu_profile(tmp_path):
    from tests.test_calibration import this_cpu_profile

    return this_cpu_profile(tmp_path)


def test_pruned_run_and_the_qwen_prediction(capsys, checkpoint, tmp_path):
    _, directory, image = checkpoint
    profile = _this_cpu_profile(tmp_path)
    threads = torch.get_num_threads()
    try:
        payload = _json(capsys, image, "--model", directory, "--prompt", PROMPT,
                        "--ratio", "0.5", "--profile", profile, *FAST)
    finally:
        torch.set_num_threads(threads)  # generate adopts the profile's thread count
    unpruned, half = payload["runs"]
    assert (unpruned["num_kept"], half["num_kept"]) == (6, 3)  # the stand-in keeps every other
    assert half["num_prompt_tokens"] == unpruned["num_prompt_tokens"] - 3
    for run in payload["runs"]:
        for key in ("ttft_s", "decode_s", "total_s", "predicted_total_s", "predicted_ttft_s",
                    "predicted_speedup", "measured_speedup"):
            assert math.isfinite(run[key]) and run[key] >= 0, (key, run[key])
    # the pruned prediction drops 3 of 6 tokens from the LLM and adds freePruner's selection
    # stage (which, on this 24-patch tower, may cost more than the 3 tokens save: no claim
    # on the speedup); the tower and merger run every token in both
    assert unpruned["predicted_speedup"] == 1.0
    assert half["predicted_prefill_s"] < unpruned["predicted_prefill_s"]
    assert half["predicted_selection_s"] > 0 == unpruned["predicted_selection_s"]
    assert half["predicted_projector_s"] == unpruned["predicted_projector_s"]
    assert half["predicted_vision_s"] == unpruned["predicted_vision_s"]
    # the prediction is the Qwen cost model of this config.json for this image's layout
    for run in payload["runs"]:
        est = fpcost.estimate(str(directory), profile, quant=QuantPlan.uniform(32),
                              vision_quant=QuantPlan.uniform(32),
                              visual_tokens=run["num_kept"], text_tokens=6, output_tokens=4,
                              image_size=IMAGE_HW[::-1], min_pixels=MIN_PIXELS,
                              max_pixels=MAX_PIXELS)
        assert est.end_to_end().time_s == pytest.approx(run["predicted_total_s"], rel=1e-12)
        assert est.ttft_s == pytest.approx(run["predicted_ttft_s"], rel=1e-12)
    # ... and its vision stage depends on the image's size: a larger one costs more
    small, large = (fpcost.estimate(str(directory), profile, image_size=size,
                                    min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
                    for size in ((90, 60), (200, 200)))
    assert small.workload.num_visual_tokens == 6 < large.workload.num_visual_tokens


def _copy_with_limits(directory, target, min_pixels, max_pixels):
    """``directory`` copied to ``target`` with the image processor's limits written as the
    released checkpoints write them (``min_pixels`` / ``max_pixels`` keys, no ``size``)."""
    target.mkdir()
    for path in directory.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    config = json.loads((directory / "preprocessor_config.json").read_text())
    config.pop("size")
    config.update(min_pixels=min_pixels, max_pixels=max_pixels)
    (target / "preprocessor_config.json").write_text(json.dumps(config))
    return target


def test_the_prediction_follows_the_processors_pixel_limits(capsys, checkpoint, tmp_path):
    _, directory, image = checkpoint
    profile = _this_cpu_profile(tmp_path)
    # at least 16 merged tokens: the 60 x 90 image is enlarged to 112 x 140 px, a (1, 8, 10) grid
    other = _copy_with_limits(directory, tmp_path / "other", 16 * 784, MAX_PIXELS)
    threads = torch.get_num_threads()
    try:
        payload = _json(capsys, image, "--model", other, "--prompt", PROMPT, "--method",
                        "keep-all", "--profile", profile, *FAST)
    finally:
        torch.set_num_threads(threads)
    unpruned = payload["runs"][0]
    assert unpruned["num_visual_tokens"] == 20
    est = fpcost.estimate(str(other), profile, quant=QuantPlan.uniform(32),
                          vision_quant=QuantPlan.uniform(32), visual_tokens=20,
                          text_tokens=6, output_tokens=4, image_size=IMAGE_HW[::-1],
                          min_pixels=16 * 784, max_pixels=MAX_PIXELS)
    assert est.workload.num_visual_tokens == 20
    assert est.end_to_end().time_s == pytest.approx(unpruned["predicted_total_s"], rel=1e-12)


def test_a_prediction_for_another_layout_is_refused(capsys, checkpoint, tmp_path, monkeypatch):
    """Were the cost model told other limits than the processor used, it would predict
    another workload: refused, one line."""
    import fpcost.pruner.generate as generate_module

    _, directory, image = checkpoint
    profile = _this_cpu_profile(tmp_path)
    monkeypatch.setattr(generate_module, "layout_options",
                        lambda checkpoint, image: {"image_size": image.size,
                                                   "min_pixels": 16 * 784})
    threads = torch.get_num_threads()
    try:
        code, _, err = run_cli(capsys, "generate", image, "--model", directory, "--prompt",
                               PROMPT, "--profile", profile, *FAST)
    finally:
        torch.set_num_threads(threads)
    one_line_error(code, err, "the cost model lays this image out in 20 visual tokens, "
                              "the model made 6; no prediction")


def test_a_directory_without_a_tokenizer(capsys, checkpoint, tmp_path):
    model_type, _, image = checkpoint
    BUILDERS[model_type](seed=0).save_pretrained(tmp_path)
    code, _, err = run_cli(capsys, "generate", image, "--model", tmp_path, "--prompt", PROMPT)
    one_line_error(code, err, "no processor/tokenizer")

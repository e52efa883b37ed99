"""``fpcost generate --video`` on tiny Video-LLaVA, Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision
checkpoints saved with save_pretrained (a WordLevel tokenizer with the image and video
tokens, the PIL image processor; Qwen a small video_preprocessor_config.json): no hub, no
torchvision. Videos are animated PNGs of random frames.

Qwen's merged-token selector is the stand-in of test_cli_generate_qwen (every token for
keep-all, every other one otherwise); Video-LLaVA and OneVision run freePruner itself."""

import json
import math

import numpy as np
import pytest
import torch
from qwen_gen_models import BUILDERS as QWEN_BUILDERS
from tiny_models import IMAGE_TOKEN_ID, NUM_PATCHES, VIDEO_TOKEN_ID, VOCAB_SIZE, tiny_video_llava
from tiny_onevision import OV_POOLED, tiny_llava_onevision
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    LlavaOnevisionImageProcessorPil,
    PreTrainedTokenizerFast,
    Qwen2VLImageProcessorPil,
    VideoLlavaImageProcessor,
)

import fpcost
from fpcost.costmodel.quant import QuantPlan
from tests.cli_helpers import one_line_error, run_cli
from tests.pruner.test_cli_generate import PROMPT, RUN_KEYS
from tests.pruner.test_cli_generate_qwen import (
    _this_cpu_profile,
    stand_in_selector,  # noqa: F401  (an autouse fixture)
    tiny_tokenizer,
)
from tests.pruner.test_video_frames import frames, save_apng

FAST = ("--max-new-tokens", "3", "--repeats", "1", "--format", "json")
FRAMES = 4
QWEN_LIMITS = {"min_pixels": 4 * 28 * 28, "max_pixels": 16 * 28 * 28}
# per family: visual tokens of a FRAMES-frame 60 x 90 video
EXPECTED = {
    "video_llava": FRAMES * (NUM_PATCHES + 1),  # each frame's CLS kept: 4 x 17
    "qwen2_vl": FRAMES // 2 * 4 * 6 // 4,  # 56 x 84 px -> 4 x 6 patches, pairs, 2 x 2 merge
    "qwen2_5_vl": FRAMES // 2 * 4 * 6 // 4,
    "llava_onevision": FRAMES * OV_POOLED + 1,  # 2 x 2 pooled frames + one newline
}


def llava_tokenizer() -> PreTrainedTokenizerFast:
    special = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<image>": IMAGE_TOKEN_ID,
               "<video>": VIDEO_TOKEN_ID}
    vocab = dict(special)
    vocab.update({f"w{i}": i for i in range(VOCAB_SIZE) if i not in special.values()})
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )


def _save(model_type: str, directory):
    if model_type == "video_llava":
        tiny_video_llava(seed=0).save_pretrained(directory)
        llava_tokenizer().save_pretrained(directory)
        VideoLlavaImageProcessor(size={"shortest_edge": 28},
                                 crop_size={"height": 28, "width": 28}).save_pretrained(directory)
    elif model_type == "llava_onevision":
        tiny_llava_onevision(seed=0).save_pretrained(directory)
        llava_tokenizer().save_pretrained(directory)
        LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28}).save_pretrained(directory)
    else:
        QWEN_BUILDERS[model_type](seed=0).save_pretrained(directory)
        tiny_tokenizer().save_pretrained(directory)
        Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28,
                                 max_pixels=64 * 28 * 28).save_pretrained(directory)
        # the video limits differ from the image's: the video must use these
        (directory / "video_preprocessor_config.json").write_text(json.dumps(QWEN_LIMITS))


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def video_checkpoint(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    _save(request.param, root / "checkpoint")
    clip = save_apng(root / "clip.png", frames(2 * FRAMES, 60, 90))
    return request.param, root / "checkpoint", clip


def _json(capsys, *args):
    code, out, err = run_cli(capsys, "generate", *args)
    assert code == 0, err
    payload = json.loads(out)
    for run in payload["runs"]:
        assert set(run) == RUN_KEYS
    return payload


def test_keep_all_gives_the_unpruned_answer(capsys, video_checkpoint):
    model_type, directory, clip = video_checkpoint
    payload = _json(capsys, clip, "--video", "--frames", FRAMES, "--model", directory,
                    "--prompt", PROMPT, "--method", "keep-all", *FAST)
    assert payload["model_type"] == model_type
    unpruned, kept = payload["runs"]
    assert unpruned["answer"] == kept["answer"] and unpruned["answer"].strip()
    assert unpruned["num_visual_tokens"] == kept["num_kept"] == EXPECTED[model_type]
    assert unpruned["num_prompt_tokens"] == kept["num_prompt_tokens"]


def test_pruned_keeps_fewer_and_the_prediction_is_finite(capsys, video_checkpoint, tmp_path):
    model_type, directory, clip = video_checkpoint
    profile = _this_cpu_profile(tmp_path)
    threads = torch.get_num_threads()
    # Video-LLaVA's cost model lays out 8 frames only
    num_frames = 8 if model_type == "video_llava" else FRAMES
    try:
        payload = _json(capsys, clip, "--video", "--frames", num_frames, "--model", directory,
                        "--prompt", PROMPT, "--ratio", "0.5", "--profile", profile, *FAST)
    finally:
        torch.set_num_threads(threads)  # generate adopts the profile's thread count
    unpruned, half = payload["runs"]
    assert unpruned["num_kept"] > half["num_kept"] > 0
    assert half["num_prompt_tokens"] < unpruned["num_prompt_tokens"]
    for run in payload["runs"]:
        for key in RUN_KEYS - {"label", "method", "ratio", "answer"}:
            assert math.isfinite(run[key]) and run[key] >= 0, (key, run[key])
    assert half["predicted_prefill_s"] < unpruned["predicted_prefill_s"]
    if model_type != "video_llava":  # the prediction is the cost model of this many frames
        text = unpruned["num_prompt_tokens"] - unpruned["num_visual_tokens"]
        extra = ({"image_size": (90, 60), **QWEN_LIMITS} if model_type.startswith("qwen")
                 else {})
        est = fpcost.estimate(str(directory), profile, quant=QuantPlan.uniform(32),
                              vision_quant=QuantPlan.uniform(32), visual_tokens=half["num_kept"],
                              text_tokens=text, output_tokens=3, frames=FRAMES, **extra)
        assert est.end_to_end().time_s == pytest.approx(half["predicted_total_s"], rel=1e-12)


def test_another_frame_count_for_video_llava_is_refused(capsys, video_checkpoint, tmp_path):
    model_type, directory, clip = video_checkpoint
    if model_type != "video_llava":
        pytest.skip("Video-LLaVA's fixed 8 frames")
    profile = _this_cpu_profile(tmp_path)
    threads = torch.get_num_threads()
    try:
        code, _, err = run_cli(capsys, "generate", clip, "--video", "--frames", FRAMES,
                               "--model", directory, "--prompt", PROMPT, "--profile", profile,
                               *FAST)
    finally:
        torch.set_num_threads(threads)
    one_line_error(code, err, f"runs 8 frame(s) per sample, not {FRAMES}")


def test_bad_videos_are_one_line(capsys, video_checkpoint, tmp_path):
    model_type, directory, clip = video_checkpoint
    still = tmp_path / "still.png"
    frames(1)[0].save(still)
    cases = [
        ((still, "--video"), "a still image, not a video"),
        ((clip, "--video", "--frames", 0), "--frames"),
        ((clip, "--video", "--frames", 99), "the video has 8 frame(s); give 1 to 8"),
        ((clip, "--frames", 4), "--frames 4 applies to --video only"),
        ((tmp_path, "--model", directory), "is a directory; give --video"),
    ]
    bad = tmp_path / "frames"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not an image")
    cases.append(((bad, "--video", "--frames", 1), "cannot read image"))
    for args, fragment in cases:
        if "--model" not in args:
            args = (*args, "--model", directory)
        code, _, err = run_cli(capsys, "generate", *args, "--prompt", PROMPT, *FAST)
        one_line_error(code, err, fragment)
    image_token = "<|image_pad|>" if model_type.startswith("qwen") else "<image>"
    code, _, err = run_cli(capsys, "generate", clip, "--video", "--frames", 2, "--model",
                           directory, "--prompt", f"{image_token} {PROMPT}", *FAST)
    one_line_error(code, err, f"--prompt holds the image placeholder {image_token}")


def test_an_image_checkpoint_refuses_a_video(capsys, tmp_path):
    from tiny_models import tiny_llava

    from tests.pruner.test_cli_generate import tiny_processor

    tiny_llava(seed=0).save_pretrained(tmp_path / "llava")
    tiny_processor().save_pretrained(tmp_path / "llava")
    clip = save_apng(tmp_path / "clip.png", frames(2))
    code, _, err = run_cli(capsys, "generate", clip, "--video", "--frames", 2, "--model",
                           tmp_path / "llava", "--prompt", PROMPT, *FAST)
    one_line_error(code, err, "llava checkpoints take images only")


def test_the_video_inputs_by_hand(video_checkpoint):
    """Placeholders and pixel shapes as each family's processor lays them out."""
    from fpcost.pruner.generate import _inputs, load_checkpoint
    from fpcost.pruner.video_frames import read_video

    model_type, directory, clip = video_checkpoint
    checkpoint = load_checkpoint(directory)
    batch = _inputs(checkpoint, read_video(clip, FRAMES), PROMPT)
    ids = batch["input_ids"][0].tolist()
    token_id = getattr(checkpoint.model.config, "video_token_id", None) or VIDEO_TOKEN_ID
    assert ids.count(token_id) == EXPECTED[model_type]
    if model_type.startswith("qwen"):
        assert batch["video_grid_thw"].tolist() == [[2, 4, 6]]
        assert batch["pixel_values_videos"].shape == (2 * 24, 3 * 2 * 14 * 14)
        start = ids.index(token_id) - 1
        assert ids[start] == checkpoint.model.config.vision_start_token_id
        assert ids[start + 1 + EXPECTED[model_type]] == checkpoint.model.config.vision_end_token_id
        if model_type == "qwen2_5_vl":  # temporal_patch_size / sampled fps: 2 / (4/8 · 10)
            assert batch["second_per_grid_ts"].tolist() == pytest.approx([0.4])
            assert batch["second_per_grid_ts"].dtype == torch.float32
    else:
        assert batch["pixel_values_videos"].shape == (1, FRAMES, 3, 28, 28)
    assert np.isfinite(batch["pixel_values_videos"].numpy()).all()


def test_video_llava_takes_images_too(capsys, video_checkpoint, tmp_path):
    """Its processor here (transformers' needs torchvision): ``<image>`` × 16 patches, the
    CLS dropped by the "default" strategy, as VideoLlavaProcessor.replace_image_token."""
    model_type, directory, _ = video_checkpoint
    if model_type != "video_llava":
        pytest.skip("Video-LLaVA's own processor")
    image = tmp_path / "image.png"
    frames(1, 40, 50)[0].save(image)
    payload = _json(capsys, image, "--model", directory, "--prompt", PROMPT,
                    "--method", "keep-all", *FAST)
    unpruned, kept = payload["runs"]
    assert unpruned["answer"] == kept["answer"]
    assert unpruned["num_visual_tokens"] == kept["num_kept"] == NUM_PATCHES

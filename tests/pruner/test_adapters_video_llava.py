"""Video-LLaVA adapter: per-frame selection with each frame's CLS kept; keep-all equals
plain generate."""

import pytest
import torch
from tiny_models import (
    IMAGE_TOKEN_ID,
    NUM_PATCHES,
    VIDEO_TOKEN_ID,
    StridePruner,
    left_padded,
    pixel_values,
    prompt,
    tiny_video_llava,
)

from fpcost.pruner.adapters import KeepAll, PruningError, generate_pruned

GREEDY = {"max_new_tokens": 5, "do_sample": False}
FRAMES = 3
FRAME_TOKENS = NUM_PATCHES + 1  # transformers passes each frame's CLS on: 8 x 257 at full size
VIDEO_PROMPTS = [
    prompt(FRAMES * FRAME_TOKENS, [1, 5, 6], [7, 8], VIDEO_TOKEN_ID),
    prompt(FRAMES * FRAME_TOKENS, [1, 9], [10, 11, 12, 13], VIDEO_TOKEN_ID),
]


@pytest.fixture(scope="module")
def model():
    return tiny_video_llava(seed=0)


def _plain(model, ids, mask, **pixels):
    return model.generate(input_ids=ids, attention_mask=mask, **pixels, **GREEDY)[:, ids.shape[1] :]


@pytest.mark.parametrize("batch", [1, 2])
def test_keep_all_equals_plain_generate_on_videos(model, batch):
    ids, mask = left_padded(VIDEO_PROMPTS[:batch])
    videos = pixel_values(batch, 5, FRAMES)  # (B, F, 3, 28, 28)
    result = generate_pruned(
        model,
        {"input_ids": ids, "attention_mask": mask, "pixel_values_videos": videos},
        KeepAll(),
        **GREEDY,
    )
    assert torch.equal(result.sequences, _plain(model, ids, mask, pixel_values_videos=videos))
    assert result.num_kept_per_unit == [[FRAME_TOKENS] * FRAMES] * batch


def _mixed_prompts():
    """Sample 0: image then video; sample 1: video then image (different lengths)."""
    return left_padded(
        [
            prompt(NUM_PATCHES, [1, 5], [6]) + [VIDEO_TOKEN_ID] * (FRAMES * FRAME_TOKENS) + [7],
            prompt(FRAMES * FRAME_TOKENS, [1, 9], [10, 11, 12], VIDEO_TOKEN_ID)
            + [IMAGE_TOKEN_ID] * NUM_PATCHES,
        ]
    )


def test_keep_all_equals_plain_generate_on_images_and_videos(model):
    ids, mask = _mixed_prompts()
    images, videos = pixel_values(2, 6), pixel_values(2, 7, FRAMES)
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": images,
        "pixel_values_videos": videos,
    }
    result = generate_pruned(model, inputs, KeepAll(), **GREEDY)
    assert torch.equal(
        result.sequences, _plain(model, ids, mask, pixel_values=images, pixel_values_videos=videos)
    )
    # images drop CLS ("default" strategy), frames keep it
    assert result.num_tokens_per_unit == [[16, 17, 17, 17], [17, 17, 17, 16]]


def test_per_frame_pruning_keeps_each_frames_cls(model):
    ids, mask = _mixed_prompts()
    images, videos = pixel_values(2, 6), pixel_values(2, 7, FRAMES)
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": images,
        "pixel_values_videos": videos,
    }
    result = generate_pruned(model, inputs, StridePruner((2, 4, 8)), **GREEDY)
    assert result.sequences.shape == (2, 5)
    # images: strides 2, 4 -> 8, 4 patches; frames: strides 2, 4, 8, 2, 4, 8 -> 1 CLS + 8, 4, 2
    assert result.num_kept_per_unit == [[8, 9, 5, 3], [9, 5, 3, 4]]
    assert result.selections["video"].num_kept == [8, 4, 2, 8, 4, 2]
    assert result.selections["image"].num_kept == [8, 4]
    assert (result.input_ids == VIDEO_TOKEN_ID).sum(dim=1).tolist() == [17, 17]
    assert (result.input_ids == IMAGE_TOKEN_ID).sum(dim=1).tolist() == [8, 4]
    assert result.attention_mask.sum(dim=1).tolist() == [
        a - b for a, b in zip(mask.sum(dim=1).tolist(), [42, 46], strict=True)
    ]


def test_missing_pixels_raise(model):
    ids, mask = left_padded(VIDEO_PROMPTS[:1])
    with pytest.raises(PruningError, match="neither pixel_values nor pixel_values_videos"):
        generate_pruned(model, {"input_ids": ids}, KeepAll())
    with pytest.raises(PruningError, match="pixel_values_videos must be"):
        generate_pruned(
            model, {"input_ids": ids, "pixel_values_videos": pixel_values(1)}, KeepAll()
        )

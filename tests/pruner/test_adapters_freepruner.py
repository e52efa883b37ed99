"""freePruner end to end inside the three tiny LLaVA-family models, through the adapters.

Uses the real ``get_pruner("freepruner")`` (methods.py); on a 16-patch tower k=4 keeps the
selection from saturating. Skipped until methods.py is importable.
"""

import pytest
import torch
from tiny_models import (
    IMAGE_TOKEN_ID,
    NUM_PATCHES,
    VIDEO_TOKEN_ID,
    left_padded,
    pixel_values,
    prompt,
    tiny_llava,
    tiny_llava_next,
    tiny_video_llava,
)

from fpcost.pruner.adapters import generate_pruned

methods = pytest.importorskip("fpcost.pruner.methods")
GREEDY = {"max_new_tokens": 5, "do_sample": False}


def test_freepruner_on_llava():
    model = tiny_llava(seed=0)
    ids, mask = left_padded(
        [prompt(NUM_PATCHES, [1, 5, 6], [7, 8]), prompt(NUM_PATCHES, [1, 9], [10, 11])]
    )
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_values(2, 11)}
    result = generate_pruned(model, inputs, methods.get_pruner("freepruner", k=4), **GREEDY)
    assert result.sequences.shape == (2, 5)
    kept = result.selections["image"].num_kept
    assert all(1 <= k <= NUM_PATCHES for k in kept)
    assert result.num_kept == kept
    assert (result.input_ids == IMAGE_TOKEN_ID).sum(dim=1).tolist() == kept
    shrink = [NUM_PATCHES - k for k in kept]
    assert result.attention_mask.sum(dim=1).tolist() == [
        int(n) - s for n, s in zip(mask.sum(dim=1), shrink, strict=True)
    ]


def test_freepruner_on_video_llava_counts_per_frame():
    model = tiny_video_llava(seed=0)
    frames = 2
    ids, mask = left_padded([prompt(frames * (NUM_PATCHES + 1), [1, 5], [7], VIDEO_TOKEN_ID)])
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values_videos": pixel_values(1, 12, frames),
    }
    result = generate_pruned(model, inputs, methods.get_pruner("freepruner", k=4), **GREEDY)
    per_frame = result.selections["video"].num_kept
    assert len(per_frame) == frames
    assert result.num_kept_per_unit == [[1 + k for k in per_frame]]  # each frame keeps its CLS
    assert (result.input_ids == VIDEO_TOKEN_ID).sum().item() == sum(1 + k for k in per_frame)


def test_freepruner_on_llava_next_with_a_budget():
    model = tiny_llava_next(seed=0)
    ids, mask = left_padded([prompt(34, [1, 5, 6], [7, 8]), prompt(72, [1, 9], [10, 11])])
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixel_values(2, 8, 5),
        "image_sizes": torch.tensor([[10, 50], [56, 40]]),
    }
    result = generate_pruned(
        model, inputs, methods.get_pruner("freepruner", k=4), budget=12, **GREEDY
    )
    assert result.num_kept == [12 + 2, 12 + 8]  # budget + newlines, exact after unpadding
    assert (result.input_ids == IMAGE_TOKEN_ID).sum(dim=1).tolist() == result.num_kept
    assert result.sequences.shape == (2, 5)


@pytest.mark.parametrize(
    "name, params",
    [("keep-all", {}), ("prumerge+", {}), ("cls", {"ratio": 0.5}), ("random", {"count": 5})],
)
def test_every_method_runs_through_the_llava_adapter(name, params):
    model = tiny_llava(seed=0)
    ids, mask = left_padded(
        [prompt(NUM_PATCHES, [1, 5, 6], [7, 8]), prompt(NUM_PATCHES, [1, 9], [10, 11])]
    )
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_values(2, 11)}
    result = generate_pruned(model, inputs, methods.get_pruner(name, **params), **GREEDY)
    assert (result.input_ids == IMAGE_TOKEN_ID).sum(dim=1).tolist() == result.num_kept
    if name == "keep-all":
        plain = model.generate(**inputs, **GREEDY)[:, ids.shape[1] :]
        assert torch.equal(result.sequences, plain)

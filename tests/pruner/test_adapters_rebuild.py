"""Prompt rebuilding: K placeholders per visual unit, left re-padding, clear errors."""

import pytest
import torch

from fpcost.pruner.adapters import PruningError, Segment, rebuild_prompt
from fpcost.pruner.adapters.rebuild import pad_token_id, per_sample

IMG, VID, PAD = 100, 101, 0


def test_shrinks_each_run_and_left_pads():
    ids = torch.tensor([[PAD, 1, IMG, IMG, IMG, 7], [1, 9, IMG, IMG, IMG, 8]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    out = rebuild_prompt(ids, mask, [Segment(IMG, 3, 1), Segment(IMG, 3, 2)], PAD)
    assert out.input_ids.tolist() == [[PAD, PAD, 1, IMG, 7], [1, 9, IMG, IMG, 8]]
    assert out.attention_mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert out.segments == [[0], [1]]


def test_right_padded_input_comes_out_left_padded():
    ids = torch.tensor([[1, IMG, IMG, 7, PAD, PAD], [1, 9, 9, IMG, IMG, 8]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    out = rebuild_prompt(ids, mask, [Segment(IMG, 2, 2), Segment(IMG, 2, 2)], PAD)
    assert out.input_ids.tolist() == [[PAD, PAD, 1, IMG, IMG, 7], [1, 9, 9, IMG, IMG, 8]]
    assert out.attention_mask.tolist() == [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]


def test_adjacent_runs_are_split_by_expected_length():
    # two images back to back in sample 0, one in sample 1; a unit may keep nothing
    ids = torch.tensor([[1, IMG, IMG, IMG, IMG, 5], [1, 2, 3, IMG, IMG, 6]])
    out = rebuild_prompt(
        ids, None, [Segment(IMG, 2, 1), Segment(IMG, 2, 0), Segment(IMG, 2, 2)], PAD
    )
    assert out.input_ids.tolist() == [[PAD, PAD, PAD, 1, IMG, 5], [1, 2, 3, IMG, IMG, 6]]
    assert out.segments == [[0, 1], [2]]
    assert per_sample([10, 20, 30], out.segments) == [[10, 20], [30]]


def test_images_and_videos_are_matched_per_token_id():
    ids = torch.tensor([[VID, VID, IMG, 4], [IMG, 3, VID, VID]])
    segments = [Segment(IMG, 1, 1), Segment(IMG, 1, 1), Segment(VID, 2, 1), Segment(VID, 2, 2)]
    out = rebuild_prompt(ids, None, segments, PAD)
    assert out.input_ids.tolist() == [[PAD, VID, IMG, 4], [IMG, 3, VID, VID]]
    assert out.segments == [[2, 0], [1, 3]]  # prompt order within each sample


@pytest.mark.parametrize(
    "segments, message",
    [
        ([Segment(IMG, 3, 1)], "more placeholders"),
        (
            [Segment(IMG, 3, 1), Segment(IMG, 3, 1), Segment(IMG, 3, 1)],
            "2 visual inputs of token 100, but 3",
        ),
        ([Segment(IMG, 2, 1), Segment(IMG, 4, 1)], "expected a run of 4"),
    ],
)
def test_mismatched_counts_raise(segments, message):
    ids = torch.tensor([[1, IMG, IMG, IMG], [IMG, IMG, IMG, 2]])
    with pytest.raises(PruningError, match=message):
        rebuild_prompt(ids, None, segments, PAD)


def test_bad_shapes_raise():
    with pytest.raises(PruningError, match="batch, length"):
        rebuild_prompt(torch.tensor([1, IMG]), None, [Segment(IMG, 1, 1)], PAD)
    with pytest.raises(PruningError, match="attention_mask shape"):
        rebuild_prompt(torch.tensor([[1, IMG]]), torch.ones(1, 3), [Segment(IMG, 1, 1)], PAD)


def test_pad_token_id_prefers_the_caller():
    class Config:
        pad_token_id = None
        text_config = type("T", (), {"pad_token_id": 7})()

    class Model:
        config = Config()
        generation_config = type("G", (), {"pad_token_id": None})()

    assert pad_token_id(Model(), {"pad_token_id": 3}) == 3
    assert pad_token_id(Model(), {}) == 7

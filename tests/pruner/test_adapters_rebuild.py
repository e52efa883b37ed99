"""Prompt rebuilding: K placeholders per visual unit, left re-padding, clear errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


@st.composite
def prompts_with_units(draw):
    """A batch of prompts: text tokens (1..9) around visual units of IMG or VID, each unit a
    run of ``num_tokens`` placeholders that keeps ``num_kept``; random padding side."""
    batch = draw(st.integers(1, 4))
    rows, units = [], []  # units in prompt order: (sample, Segment)
    for b in range(batch):
        row = draw(st.lists(st.integers(1, 9), max_size=4))
        for _ in range(draw(st.integers(0, 3))):
            token = draw(st.sampled_from([IMG, VID]))
            n = draw(st.integers(1, 6))
            units.append((b, Segment(token, n, draw(st.integers(0, n)))))
            row += [token] * n + draw(st.lists(st.integers(1, 9), max_size=3))
        rows.append(row)
    length = max(len(r) for r in rows)
    left = draw(st.booleans())
    ids = torch.full((batch, length), PAD)
    mask = torch.zeros((batch, length), dtype=torch.long)
    for b, row in enumerate(rows):
        start = length - len(row) if left else 0
        ids[b, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, start : start + len(row)] = 1
    return ids, mask, units


@settings(max_examples=60, deadline=None)
@given(prompts_with_units())
def test_rebuild_invariants(case):
    ids, mask, units = case
    # the adapters list segments per modality in feature order: images first, then videos
    segments = [s for _, s in units if s.token_id == IMG] + [
        s for _, s in units if s.token_id == VID
    ]
    out = rebuild_prompt(ids, mask, segments, PAD)
    for b in range(ids.shape[0]):
        mine = [s for sample, s in units if sample == b]
        row, keep = out.input_ids[b].tolist(), out.attention_mask[b].tolist()
        first = keep.index(1) if 1 in keep else len(keep)
        assert keep == [0] * first + [1] * (len(keep) - first)  # left-padded
        tokens = row[first:]
        old = [t for t, m in zip(ids[b].tolist(), mask[b].tolist(), strict=True) if m]
        # text tokens survive, in order; placeholders shrink to the kept counts
        assert [t for t in tokens if t not in (IMG, VID)] == [t for t in old if t not in (IMG, VID)]
        for token in (IMG, VID):
            assert tokens.count(token) == sum(s.num_kept for s in mine if s.token_id == token)
        assert [segments[i] for i in out.segments[b]] == mine

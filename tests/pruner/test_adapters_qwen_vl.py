"""Qwen2-VL / Qwen2.5-VL adapter: keep-all equals plain ``generate``; pruning drops merged
tokens but the kept ones and the text keep their original M-RoPE positions, and decoding
continues where the unpruned prompt would."""

import sys
import time
import types

import pytest
import torch
from qwen_gen_models import (
    BUILDERS,
    GRIDS,
    IMAGE_PAD_ID,
    VIDEO_PAD_ID,
    StrideSelector,
    image_inputs,
    left_padded,
    num_merged,
    patches,
    type_ids,
    vision_prompt,
)

from fpcost.pruner.adapters import SUPPORTED_MODELS, PruningError, generate_pruned
from fpcost.pruner.adapters.qwen_vl import generate_qwen_vl
from fpcost.pruner.adapters.stages import StageClock

GREEDY = {"max_new_tokens": 5, "do_sample": False}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def model(request):
    return BUILDERS[request.param](seed=0)


_inputs = image_inputs


def _plain(model, inputs):
    out = model.generate(**inputs, mm_token_type_ids=type_ids(inputs["input_ids"]), **GREEDY)
    return out[:, inputs["input_ids"].shape[1]:]  # (B, 5): new tokens only


class PositionRecorder:
    """The ``position_ids`` the language model receives on each forward call."""

    def __init__(self, model):
        self.calls: list[torch.Tensor] = []
        self.handle = model.model.language_model.register_forward_pre_hook(
            self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls.append(kwargs["position_ids"].clone())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_both_classes_are_registered():
    for name in ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"):
        assert SUPPORTED_MODELS[name] is generate_qwen_vl


@pytest.mark.parametrize("batch", [1, 2])
def test_keep_all_equals_plain_generate(model, batch):
    inputs = _inputs(batch)
    selector = StrideSelector(1)
    result = generate_pruned(model, inputs, None, selector=selector, **GREEDY)
    assert torch.equal(result.sequences, _plain(model, inputs))
    assert torch.equal(result.input_ids, inputs["input_ids"])
    assert torch.equal(result.attention_mask, inputs["attention_mask"])
    counts = [[num_merged(g)] for g in GRIDS[:batch]]
    assert result.num_tokens_per_unit == result.num_kept_per_unit == counts
    assert len(selector.grids) == 1  # the tower ran once for all images


def _every_other_columns(input_ids, attention_mask):
    """Per sample, the original columns the every-other selector leaves: every unpadded
    text token and the even-numbered placeholders of each image run."""
    columns = []
    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
        mine, offset = [], 0
        for j, (token, real) in enumerate(zip(ids, mask, strict=True)):
            if not real:
                continue
            offset = offset + 1 if token == IMAGE_PAD_ID else 0
            if token != IMAGE_PAD_ID or (offset - 1) % 2 == 0:
                mine.append(j)
        columns.append(mine)
    return columns


def test_pruned_tokens_keep_their_original_positions(model):
    inputs = _inputs(2)
    with PositionRecorder(model) as plain:
        _plain(model, inputs)
    with PositionRecorder(model) as pruned:
        result = generate_pruned(model, inputs, None, selector=StrideSelector(2), **GREEDY)
    assert result.num_tokens_per_unit == [[9], [16]]
    assert result.num_kept_per_unit == [[5], [8]]
    assert (result.input_ids == IMAGE_PAD_ID).sum(dim=1).tolist() == [5, 8]
    lengths = result.attention_mask.sum(dim=1)
    assert lengths.tolist() == (inputs["attention_mask"].sum(dim=1) - torch.tensor([4, 8])).tolist()
    assert result.input_length < inputs["input_ids"].shape[1]

    original, given = plain.calls[0], pruned.calls[0]  # prefill: (4, B, L) and (4, B, L')
    assert given.shape == (4, 2, result.input_length)
    for b, cols in enumerate(_every_other_columns(inputs["input_ids"], inputs["attention_mask"])):
        real = result.attention_mask[b].bool()
        # M-RoPE rows (t, h, w): the original positions at the kept columns
        assert torch.equal(given[1:, b][:, real], original[1:, b][:, cols])
        # the text row is the rebuilt prompt's sequence index (it only builds the mask)
        assert torch.equal(given[0, b][real], torch.arange(len(cols)))
    # the model's own 3-D positions are not plain 1-D ones, so the check above has teeth
    assert not torch.equal(original[1], original[2])


def test_decoding_continues_after_the_original_positions(model):
    inputs = _inputs(2)
    with PositionRecorder(model) as plain:
        _plain(model, inputs)
    with PositionRecorder(model) as pruned:
        result = generate_pruned(model, inputs, None, selector=StrideSelector(2), **GREEDY)
    first_step = pruned.calls[1]  # (4, B, 1): the first decode step
    assert torch.equal(first_step[1:], plain.calls[1][1:])
    expected = plain.calls[0][1:].amax(dim=(0, 2)) + 1  # original max position + 1, per sample
    for b in range(2):
        assert (first_step[1:, b, 0] == expected[b]).all()
        # not where a sequential count over the shorter prompt would have put it
        assert expected[b] != result.attention_mask[b].sum()
    for step, (a, b) in enumerate(zip(pruned.calls[1:], plain.calls[1:], strict=True)):
        assert torch.equal(a[1:], b[1:]), step


def test_the_model_instance_is_left_as_it_was(model):
    model.model.rope_deltas = None
    hooks = [(n, tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
             for n, m in model.named_modules()]
    generate_pruned(model, _inputs(2), None, selector=StrideSelector(2), **GREEDY)
    assert model.model.rope_deltas is None
    assert hooks == [(n, tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
                     for n, m in model.named_modules()]


def test_video_keep_all_equals_plain_generate_and_prunes(model):
    grid = (2, 4, 4)  # 4 frames in 2 temporal patches: 8 merged tokens
    ids, mask = left_padded([vision_prompt(num_merged(grid), [1, 5], [7, 8, 9], VIDEO_PAD_ID)])
    pixels, grid_thw = patches([grid], seed=2)
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values_videos": pixels,
              "video_grid_thw": grid_thw}
    if "2_5" in type(model).__name__:
        inputs["second_per_grid_ts"] = torch.tensor([0.5])
    result = generate_pruned(model, inputs, None, selector=StrideSelector(1), **GREEDY)
    assert torch.equal(result.sequences, _plain(model, inputs))
    pruned = generate_pruned(model, inputs, None, selector=StrideSelector(4), **GREEDY)
    assert pruned.num_kept_per_unit == [[2]] and pruned.num_tokens_per_unit == [[8]]
    assert (pruned.input_ids == VIDEO_PAD_ID).sum() == 2


def test_stages_are_timed(model):
    clock = StageClock()
    generate_qwen_vl(model, _inputs(1), None, selector=StrideSelector(2), stage_clock=clock,
                     **GREEDY)
    assert set(clock.times_s) == {"vision", "projector", "llm"}
    assert all(t >= 0 for t in clock.times_s.values())


def test_the_merger_is_timed_as_the_projector(model):
    """The merger runs inside the tower's forward; the cost model prices it as the projector,
    so a sleep in it lands in "projector", not "vision"."""
    sleep_s = 0.05

    def sleep(module, args):
        time.sleep(sleep_s)

    hook = model.model.visual.merger.register_forward_pre_hook(sleep)
    try:
        clock = StageClock()
        generate_qwen_vl(model, _inputs(1), None, selector=StrideSelector(2), stage_clock=clock,
                         **GREEDY)
    finally:
        hook.remove()
    assert clock.times_s["projector"] >= sleep_s
    assert clock.times_s["vision"] >= 0


def test_the_default_selector_is_imported_when_called(model, monkeypatch):
    selector = StrideSelector(2)
    module = types.ModuleType("fpcost.pruner.qwen_vision")
    module.select_merged = selector
    monkeypatch.setitem(sys.modules, "fpcost.pruner.qwen_vision", module)
    result = generate_pruned(model, _inputs(1), None, **GREEDY)
    assert len(selector.grids) == 1 and result.num_kept == [5]


def _bad_count(pruner, visual, pixel_values, grid_thw):
    selected = StrideSelector(1)(pruner, visual, pixel_values, grid_thw)
    selected.num_merged = [n + 1 for n in selected.num_merged]
    return selected


def _unsorted(pruner, visual, pixel_values, grid_thw):
    selected = StrideSelector(1)(pruner, visual, pixel_values, grid_thw)
    selected.kept = [k.flip(0) for k in selected.kept]
    return selected


@pytest.mark.parametrize("change, selector, message", [
    ({"image_grid_thw": None}, StrideSelector(1), "need both pixel_values and image_grid_thw"),
    ({"pixel_values": None, "image_grid_thw": None}, StrideSelector(1), "need pixel_values"),
    ({}, _bad_count, r"returned \[10\] merged tokens per image, the grid gives \[9\]"),
    ({}, _unsorted, "image 0: kept indices are not sorted and unique"),
])
def test_bad_inputs_are_refused(model, change, selector, message):
    inputs = {k: v for k, v in {**_inputs(1), **change}.items() if v is not None}
    with pytest.raises(PruningError, match=message):
        generate_pruned(model, inputs, None, selector=selector, **GREEDY)


def test_position_ids_cannot_be_passed(model):
    with pytest.raises(PruningError, match="position_ids are computed by the Qwen-VL adapter"):
        generate_pruned(model, _inputs(1), None, selector=StrideSelector(1),
                        position_ids=torch.zeros(1), **GREEDY)

"""``stage_clock``: every LLaVA-family adapter times its "vision", "projector" and "llm"
stages and hands the pruner's ``selection_time_s`` on; without a clock nothing changes.

Timing checks use sleeps put into each stage (a pruner that sleeps, forward pre-hooks
that sleep): a stage must last at least its sleep, and the stages, being disjoint parts of
one call, at most the call. Lower bounds and a sum bound only, so a loaded machine cannot
make them fail.
"""

import time

import pytest
import torch
from tiny_models import (
    NUM_PATCHES,
    VIDEO_TOKEN_ID,
    StridePruner,
    left_padded,
    pixel_values,
    prompt,
    tiny_llava,
    tiny_llava_next,
    tiny_video_llava,
)

from fpcost.pruner.adapters import KeepAll, StageClock, generate_pruned
from fpcost.pruner.adapters.common import find_module
from fpcost.pruner.adapters.stages import STAGES, moved_to_stage, record_selection, timed
from fpcost.pruner.methods import get_pruner

GREEDY = {"max_new_tokens": 4, "do_sample": False}
SLEEP_S = 0.02
REPORTED_SELECTION_S = 0.005
FRAMES_PER_VIDEO = 3


class SleepyPruner(StridePruner):
    """StridePruner that sleeps SLEEP_S inside the tower pass and reports a fixed
    selection time."""

    def encode_and_select(self, vision_model, pixel_values):
        from dataclasses import replace

        time.sleep(SLEEP_S)
        encoded = super().encode_and_select(vision_model, pixel_values)
        return replace(encoded, selection_time_s=REPORTED_SELECTION_S)


def _sleep_hook(module, args):
    time.sleep(SLEEP_S)


def _llava_inputs():
    ids, mask = left_padded([prompt(NUM_PATCHES, [1, 5, 6], [7, 8])])
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_values(1, 11)}


def _next_inputs():
    # (10, 50): 1x2 grid -> 3 crops, 34 packed tokens (test_adapters_llava_next.py)
    ids, mask = left_padded([prompt(34, [1, 5, 6], [7, 8])])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixel_values(1, 8, 5),
        "image_sizes": torch.tensor([[10, 50]]),
    }


def _video_inputs():
    frame_tokens = NUM_PATCHES + 1  # each frame's CLS is passed on
    ids, mask = left_padded(
        [prompt(FRAMES_PER_VIDEO * frame_tokens, [1, 5], [6, 7], VIDEO_TOKEN_ID)]
    )
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values_videos": pixel_values(1, 7, FRAMES_PER_VIDEO),
    }


FAMILIES = {
    "llava": (tiny_llava, _llava_inputs),
    "llava_next": (tiny_llava_next, _next_inputs),
    "video_llava": (tiny_video_llava, _video_inputs),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    build, inputs = FAMILIES[request.param]
    return build(seed=0), inputs()


@pytest.mark.parametrize(
    "pruner", [KeepAll(), StridePruner((2,)), get_pruner("freepruner", ratio=0.5)],
    ids=["keep-all", "stride", "freepruner"],
)
def test_a_clock_changes_nothing_but_is_filled(family, pruner):
    model, inputs = family
    plain = generate_pruned(model, inputs, pruner, **GREEDY)
    clock = StageClock()
    start = time.perf_counter()
    timed_run = generate_pruned(model, inputs, pruner, stage_clock=clock, **GREEDY)
    wall_s = time.perf_counter() - start
    assert torch.equal(timed_run.sequences, plain.sequences)
    assert torch.equal(timed_run.input_ids, plain.input_ids)
    assert timed_run.num_kept_per_unit == plain.num_kept_per_unit
    assert set(clock.times_s) == set(STAGES)
    assert all(t > 0 for t in clock.times_s.values())
    assert sum(clock.times_s.values()) <= wall_s  # disjoint parts of one call
    assert clock.selection_time_s is not None and clock.selection_time_s >= 0
    assert clock.selection_time_s <= clock.times_s["vision"]  # measured inside the tower pass


def test_each_stage_holds_its_own_work(family):
    """A sleep in the pruner lands in "vision", one in the projector in "projector", one per
    LLM forward in "llm"; the reported selection time is passed on unchanged."""
    model, inputs = family
    projector = find_module(model, "multi_modal_projector")
    language_model = find_module(model, "language_model")
    hooks = [projector.register_forward_pre_hook(_sleep_hook),
             language_model.register_forward_pre_hook(_sleep_hook)]
    try:
        clock = StageClock()
        result = generate_pruned(model, inputs, SleepyPruner((2,)), stage_clock=clock, **GREEDY)
    finally:
        for hook in hooks:
            hook.remove()
    num_towers = 1  # one tower pass per modality: these inputs have one modality each
    assert clock.times_s["vision"] >= num_towers * SLEEP_S
    assert clock.times_s["projector"] >= SLEEP_S
    # one LLM forward per new token: prefill, then a step per further token
    assert clock.times_s["llm"] >= result.sequences.shape[1] * SLEEP_S
    assert clock.selection_time_s == pytest.approx(num_towers * REPORTED_SELECTION_S)


def test_the_clock_itself():
    clock = StageClock()
    with timed(clock, "vision"):
        time.sleep(0.001)
    with timed(clock, "vision"):  # repeated names add up
        time.sleep(0.001)
    assert clock.times_s["vision"] >= 0.002 and set(clock.times_s) == {"vision"}
    with pytest.raises(ValueError, match="unknown stage 'tower'"):
        with timed(clock, "tower"):
            pass
    assert clock.selection_time_s is None  # not reported: told apart from 0
    record_selection(clock, None)  # a pruner that does not time itself
    record_selection(clock, 0.25)
    record_selection(clock, 0.5)
    assert clock.selection_time_s == 0.75
    with timed(None, "vision"):  # no clock: nothing to do
        pass
    record_selection(None, 1.0)


class _Sleeper(torch.nn.Module):
    def forward(self, x):
        time.sleep(SLEEP_S)
        return x


def test_a_module_run_inside_a_stage_is_moved_to_another():
    """Qwen's merger runs inside the tower's call: its seconds leave "vision" for "projector",
    so the two still add up to the wall time (without the move they would exceed it by the
    merger's sleep)."""
    clock, merger = StageClock(), _Sleeper()
    start = time.perf_counter()
    with timed(clock, "vision"), moved_to_stage(clock, merger, "projector", within="vision"):
        time.sleep(SLEEP_S)  # the tower
        merger(torch.zeros(1))
    wall_s = time.perf_counter() - start
    assert clock.times_s["projector"] >= SLEEP_S
    assert clock.times_s["vision"] >= SLEEP_S
    assert clock.times_s["vision"] + clock.times_s["projector"] <= wall_s
    merger(torch.zeros(1))  # hooks removed on exit
    assert clock.times_s["projector"] < wall_s
    assert not merger._forward_hooks and not merger._forward_pre_hooks
    with moved_to_stage(None, merger, "projector", within="vision"):  # no clock: nothing
        merger(torch.zeros(1))
    assert not merger._forward_pre_hooks
    with pytest.raises(ValueError, match="unknown stage 'merger'"):
        with moved_to_stage(clock, merger, "merger", within="vision"):
            pass

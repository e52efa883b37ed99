"""``stage_times``: one round's stages from the TTFT run's and the total run's clocks, by hand."""

import pytest

from fpcost.pruner.adapters.stages import StageClock
from fpcost.pruner.errors import PruningError
from fpcost.pruner.generate import STAGES, stage_times


def _clock(vision, projector, llm, selection=None):
    clock = StageClock()
    clock.times_s = {"vision": vision, "projector": projector, "llm": llm}
    clock.selection_time_s = selection
    return clock


def test_stages_add_up_to_the_total_run():
    first = _clock(0.5, 0.25, 2.0, selection=0.125)
    full = _clock(0.75, 0.25, 5.0, selection=0.25)
    got = stage_times(first, full, full_s=6.5, selects=True, num_new_tokens=4)
    assert got == {"vision": 0.5, "selection": 0.25, "projector": 0.25, "prefill": 2.0,
                   "decode": 3.0, "other": 0.5}
    assert sum(got.values()) == 6.5
    assert set(got) == {*STAGES, "other"}


def test_keep_all_selects_nothing():
    first, full = _clock(0.5, 0.25, 2.0, 0.001), _clock(0.5, 0.25, 3.0, 0.001)
    got = stage_times(first, full, full_s=4.0, selects=False, num_new_tokens=2)
    assert got["selection"] == 0.0 and got["vision"] == 0.5  # keep-all's bookkeeping stays in vision
    assert sum(got.values()) == 4.0


def test_an_unreported_selection_stays_in_vision():
    first, full = _clock(0.5, 0.25, 2.0), _clock(0.5, 0.25, 3.0)
    got = stage_times(first, full, full_s=4.0, selects=True, num_new_tokens=2)
    assert got["selection"] is None and got["vision"] == 0.5
    assert sum(v for v in got.values() if v is not None) == 4.0


def test_one_new_token_has_no_decode():
    first, full = _clock(0.5, 0.25, 2.0, 0.0), _clock(0.5, 0.25, 2.5, 0.0)
    got = stage_times(first, full, full_s=3.5, selects=True, num_new_tokens=1)
    assert got["decode"] == 0.0 and got["other"] == 0.75  # the two prefills' difference


def test_noise_never_makes_a_stage_negative():
    # the TTFT run's prefill outlasted the total run's whole LLM stage
    first, full = _clock(0.5, 0.25, 4.0, 0.0), _clock(0.5, 0.25, 3.0, 0.0)
    got = stage_times(first, full, full_s=4.0, selects=True, num_new_tokens=8)
    assert got["decode"] == 0.0 and got["other"] == 0.0
    assert all(v >= 0 for v in got.values())


def test_an_adapter_without_stages_is_an_error():
    bare = StageClock()
    with pytest.raises(PruningError, match="timed no vision, projector, llm stage"):
        stage_times(bare, bare, full_s=1.0, selects=True, num_new_tokens=2)

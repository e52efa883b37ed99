"""A wall clock for the stages of one adapter call, for ``fpcost generate``.

An adapter wraps each of its stages in ``timed(clock, name)``; with ``clock=None`` (every
call except the timed ones of ``fpcost generate``) that is a no-op. Stage names:

- ``"vision"``: the vision tower's forward pass, hooks included (the pruner's own
  ``selection_time_s`` is measured inside it and reported apart as ``"selection"`` by the
  caller, which subtracts it from ``"vision"``);
- ``"projector"``: the projector (LLaVA) or patch merger run on the kept tokens, and any
  packing (newlines, unpadding) before the language model;
- ``"llm"``: ``generate(inputs_embeds=...)``: prefill and every decode step.

Each stage is bracketed by a device synchronisation (CUDA), so queued kernels are counted in
the stage that launched them. Repeated names add up (several images in one call).

The pruner's own ``selection_time_s`` (``EncoderOutput.selection_time_s``: hooks + scoring +
choosing, by the pruner's clock) is handed to ``record_selection(clock, seconds)`` by the
adapter that ran the pruner (``common.run_pruner`` does it); ``selection_time_s`` stays None
when an adapter reported none, so the caller can tell "not reported" from "zero".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

STAGES = ("vision", "projector", "llm")


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class StageClock:
    """Seconds spent in each named stage (``times_s``), device-synchronised at both ends."""

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.times_s: dict[str, float] = {}
        self.selection_time_s: float | None = None  # the pruner's, inside "vision"

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
        _sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync(self.device)
            self.times_s[name] = self.times_s.get(name, 0.0) + time.perf_counter() - start


def record_selection(clock: StageClock | None, seconds: float | None) -> None:
    """Add a pruner's ``selection_time_s`` to ``clock`` (summed over calls); no-op without a
    clock. ``seconds=None`` (a pruner that does not time itself) counts as 0 s."""
    if clock is not None:
        clock.selection_time_s = (clock.selection_time_s or 0.0) + float(seconds or 0.0)


def timed(clock: StageClock | None, name: str) -> AbstractContextManager[None]:
    """``clock.stage(name)``, or a no-op without a clock."""
    return nullcontext() if clock is None else clock.stage(name)


@contextmanager
def moved_to_stage(clock: StageClock | None, module: torch.nn.Module, name: str,
                   within: str) -> Iterator[None]:
    """Inside this block, every forward of ``module`` (run inside stage ``within``) counts as
    stage ``name``: its seconds are added to ``name`` and taken out of ``within`` (which adds
    them back when it ends), so the two still sum to the wall time. For a module a family runs
    inside another stage's call: Qwen-VL's patch merger runs at the end of the tower's forward
    but is the projector the cost model prices. Device-synchronised at both ends (CUDA);
    forward hooks on this one instance, removed on exit; a no-op without a clock."""
    if clock is None:
        yield
        return
    if name not in STAGES or within not in STAGES:
        raise ValueError(f"unknown stage {name!r} or {within!r}; stages: {', '.join(STAGES)}")
    starts: list[float] = []

    def before(_module, _args):
        _sync(clock.device)
        starts.append(time.perf_counter())

    def after(_module, _args, _output):
        _sync(clock.device)
        seconds = time.perf_counter() - starts.pop()
        clock.times_s[name] = clock.times_s.get(name, 0.0) + seconds
        clock.times_s[within] = clock.times_s.get(within, 0.0) - seconds

    # first of the pre-hooks, last of the hooks: the whole call, other hooks included
    handles = [module.register_forward_pre_hook(before, prepend=True),
               module.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

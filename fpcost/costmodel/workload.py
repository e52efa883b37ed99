"""What a request asks of the model: visual and text tokens, batch, generated tokens."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import WorkloadError


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``, or a WorkloadError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkloadError(f"{name} = {value!r} must be an integer ≥ {minimum}")
    if value < minimum:
        raise WorkloadError(f"{name} = {value!r} must be an integer ≥ {minimum}")
    return value


@dataclass(frozen=True)
class Workload:
    """Per-sample token counts and the batch size.

    The LLM's prompt is ``num_visual_tokens + num_text_tokens`` tokens per sample. A decode
    step (LLM-Viewer's convention) generates one token over a KV cache of that prompt.
    """

    num_visual_tokens: int
    num_text_tokens: int = 40
    batch_size: int = 1

    def __post_init__(self) -> None:
        check_count("num_visual_tokens", self.num_visual_tokens, minimum=0)
        check_count("num_text_tokens", self.num_text_tokens, minimum=0)
        check_count("batch_size", self.batch_size)
        if self.num_prompt_tokens < 1:
            raise WorkloadError("the prompt is empty: visual + text tokens must be at least 1")

    @property
    def num_prompt_tokens(self) -> int:
        return self.num_visual_tokens + self.num_text_tokens

    @classmethod
    def from_total(cls, num_tokens: int, default_visual: int, batch_size: int = 1) -> Workload:
        """``--tokens N``: an LLM input of N tokens, of which min(N, the model's visual
        tokens) are visual and the rest text."""
        check_count("tokens", num_tokens)
        visual = min(num_tokens, default_visual)
        return cls(visual, num_tokens - visual, batch_size)


def visual_tokens_for_ratio(default_visual: int, keep_ratio: float) -> int:
    """Visual tokens kept when a fraction ``keep_ratio`` in (0, 1] of them is kept
    (rounded to nearest, at least 1)."""
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not (
        0 < keep_ratio <= 1
    ):
        raise WorkloadError(f"keep ratio {keep_ratio!r} must be in (0, 1]")
    return max(1, round(default_visual * keep_ratio))

"""What a request asks of the model: visual and text tokens, batch, generated tokens."""

from __future__ import annotations

from dataclasses import dataclass

from .anyres import check_image_size
from .errors import WorkloadError

# Largest token count (per sample, each of visual / text / per-frame) and batch size: 2**31 − 1,
# the int32 range frameworks index tensors with. Far beyond any context window, and small
# enough that no product the cost model forms overflows before ``ops.check_exact`` refuses
# operators whose FLOP or byte counts leave the range float64 holds exactly (2**53).
MAX_TOKENS = 2**31 - 1
MAX_BATCH = 2**31 - 1
# Generated tokens: every decode step is costed on its own (one array element per step):
# 10 million, far beyond any context window, take a few seconds and ~1 GB; more is refused.
MAX_OUTPUT_TOKENS = 10_000_000
# --frames: frames of one video, far above any video model's (Qwen2-VL samples at 2 fps)
MAX_FRAMES = 2**14
# --min-pixels / --max-pixels: far above any image (2**40 pixels = a 1-megapixel-sided square)
MAX_PIXEL_LIMIT = 2**40


def check_count(name: str, value: object, minimum: int = 1, maximum: int = MAX_TOKENS) -> int:
    """``value`` as an int in [``minimum``, ``maximum``], or a WorkloadError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkloadError(f"{name} = {_short(value)} must be an integer in {minimum}..{maximum:,}")
    if not minimum <= value <= maximum:
        raise WorkloadError(f"{name} = {_short(value)} must be an integer in {minimum}..{maximum:,}")
    return value


def _short(value: object) -> str:
    """``repr(value)``, abbreviated for integers too long to print in one line."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Workload:
    """Per-sample token counts, the batch size and the tokens generated.

    The LLM's prompt is ``num_visual_tokens + num_text_tokens`` tokens per sample (the
    visual ones after any pruning). ``num_output_tokens`` counts generated tokens as
    ``generate(max_new_tokens=N)`` does: the prefill yields the first, then
    ``num_decode_steps`` = N − 1 decode steps yield the rest; step i (0-based) runs one token
    over a KV cache of prompt + i tokens. The default N = 2 is one decode step over the
    prompt's cache: LLM-Viewer's decode. N = 0 is accepted as the prefill alone (as N = 1).
    ``image_size`` (width, height in pixels) matters to LLaVA-NeXT's AnyRes and the
    dynamic-resolution families (Qwen2-VL, Qwen2.5-VL), whose image processor resizes
    within ``min_pixels`` .. ``max_pixels`` (None: the checkpoints' defaults);
    ``frame_tokens`` are a video's per-frame kept counts (they sum to ``num_visual_tokens``);
    ``num_frames`` makes each sample a video of that many frames for the families whose layout
    takes a frame count (None: an image, or the model's fixed frames).
    """

    num_visual_tokens: int
    num_text_tokens: int = 40
    batch_size: int = 1
    num_output_tokens: int = 2
    image_size: tuple[int, int] | None = None
    frame_tokens: tuple[int, ...] | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    num_frames: int | None = None

    def __post_init__(self) -> None:
        check_count("num_visual_tokens", self.num_visual_tokens, minimum=0)
        check_count("num_text_tokens", self.num_text_tokens, minimum=0)
        check_count("batch_size", self.batch_size, maximum=MAX_BATCH)
        check_count("num_output_tokens", self.num_output_tokens, minimum=0,
                    maximum=MAX_OUTPUT_TOKENS)
        if self.num_prompt_tokens < 1:
            raise WorkloadError("the prompt is empty: visual + text tokens must be at least 1")
        if self.image_size is not None:
            if not isinstance(self.image_size, tuple) or len(self.image_size) != 2:
                raise WorkloadError(f"image_size = {self.image_size!r} must be a (width, height) pair")
            check_image_size(*self.image_size)
        if self.num_frames is not None:
            check_count("--frames", self.num_frames, maximum=MAX_FRAMES)
        for flag, value in (("--min-pixels", self.min_pixels), ("--max-pixels", self.max_pixels)):
            if value is not None:
                check_count(flag, value, maximum=MAX_PIXEL_LIMIT)
        if None not in self.pixel_limits and self.min_pixels > self.max_pixels:
            raise WorkloadError(f"--min-pixels {self.min_pixels} is larger than --max-pixels "
                                f"{self.max_pixels}")
        if self.frame_tokens is not None:
            for i, count in enumerate(self.frame_tokens):
                check_count(f"frame_tokens[{i}]", count, minimum=0)
            if sum(self.frame_tokens) != self.num_visual_tokens:
                raise WorkloadError(
                    f"frame_tokens sum to {sum(self.frame_tokens)}, not num_visual_tokens = "
                    f"{self.num_visual_tokens}"
                )

    @property
    def pixel_limits(self) -> tuple[int | None, int | None]:
        """(min_pixels, max_pixels), either None for the family's default."""
        return self.min_pixels, self.max_pixels

    @property
    def num_decode_steps(self) -> int:
        """Decode steps after the prefill: N − 1 for N generated tokens (none for N ≤ 1)."""
        return max(self.num_output_tokens - 1, 0)

    @property
    def num_final_context_tokens(self) -> int:
        """Tokens in the KV cache after the last decode step: the prompt plus one per decode
        step (the last generated token is never fed back)."""
        return self.num_prompt_tokens + self.num_decode_steps

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

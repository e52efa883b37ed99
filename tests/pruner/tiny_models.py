"""Tiny random-weight LLaVA-family models and inputs for offline tests.

Every model is built from a config (no hub access), with a fixed seed, in eval mode and
with SDPA attention. The vision tower is a 4-layer CLIP at 28 px with 7 px patches, so one
image (or frame, or crop) gives 4 x 4 = 16 patch tokens plus a CLS token.
"""

from __future__ import annotations

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    VideoLlavaConfig,
    VideoLlavaForConditionalGeneration,
)

IMAGE_SIZE = 28
PATCH_SIZE = 7
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16 patch tokens per image / frame / crop
VOCAB_SIZE = 128
IMAGE_TOKEN_ID = 100
VIDEO_TOKEN_ID = 101
PAD_TOKEN_ID = 0
# AnyRes grids of 1x2, 2x1 and 2x2 crops of 28 px (LLaVA-NeXT), given as (height, width).
GRID_PINPOINTS = [[28, 56], [56, 28], [56, 56]]


# A bare 4-layer encoder at 56 px with 7 px patches: an 8 x 8 grid of 64 patch tokens, for
# the selection, method and CLI tests (keyword arguments of CLIPVisionConfig / SiglipVisionConfig).
TINY_ENCODER = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=56,
    patch_size=7,
)


def _vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )


def _text_config() -> LlamaConfig:
    return LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=VOCAB_SIZE,
        pad_token_id=PAD_TOKEN_ID,
        bos_token_id=1,
        eos_token_id=2,
    )


def _finish(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    # Never stop early on a random EOS: every test compares exactly max_new_tokens tokens.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD_TOKEN_ID
    return model


def tiny_llava(seed: int = 0, **overrides) -> LlavaForConditionalGeneration:
    """``overrides`` go to ``LlavaConfig`` (e.g. ``vision_feature_layer=[-3, -2]``)."""
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=_vision_config(),
        text_config=_text_config(),
        image_token_index=IMAGE_TOKEN_ID,
        image_seq_length=NUM_PATCHES,
        **overrides,
    )
    return _finish(LlavaForConditionalGeneration(config))


def tiny_video_llava(seed: int = 0) -> VideoLlavaForConditionalGeneration:
    torch.manual_seed(seed)
    config = VideoLlavaConfig(
        vision_config=_vision_config(),
        text_config=_text_config(),
        image_token_index=IMAGE_TOKEN_ID,
        video_token_index=VIDEO_TOKEN_ID,
        image_seq_length=NUM_PATCHES,
    )
    return _finish(VideoLlavaForConditionalGeneration(config))


def tiny_llava_next(seed: int = 0) -> LlavaNextForConditionalGeneration:
    torch.manual_seed(seed)
    config = LlavaNextConfig(
        vision_config=_vision_config(),
        text_config=_text_config(),
        image_token_index=IMAGE_TOKEN_ID,
        image_grid_pinpoints=GRID_PINPOINTS,
        image_seq_length=NUM_PATCHES,
    )
    return _finish(LlavaNextForConditionalGeneration(config))


def left_padded(
    prompts: list[list[int]], pad_token_id: int = PAD_TOKEN_ID
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``input_ids`` and ``attention_mask``, both (B, L)."""
    length = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for b, prompt in enumerate(prompts):
        input_ids[b, length - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[b, length - len(prompt) :] = 1
    return input_ids, attention_mask


def prompt(
    num_image_tokens: int, prefix: list[int], suffix: list[int], token_id: int = IMAGE_TOKEN_ID
) -> list[int]:
    """``prefix + [token_id] * num_image_tokens + suffix``, as a processor would expand it."""
    return list(prefix) + [token_id] * num_image_tokens + list(suffix)


def pixel_values(batch: int, seed: int = 1, *leading: int) -> torch.Tensor:
    """Random normalised pixels, shape (batch, *leading, 3, IMAGE_SIZE, IMAGE_SIZE)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *leading, 3, IMAGE_SIZE, IMAGE_SIZE), generator=generator)


class StridePruner:
    """Deterministic test pruner: image (or frame, or crop) i keeps every ``strides[i % n]``-th
    patch, so K differs between images of one batch. Scores favour low patch indices."""

    def __init__(self, strides: tuple[int, ...] = (2,)):
        self.strides = strides

    def encode_and_select(self, vision_model, pixel_values):
        from fpcost.pruner.api import EncoderOutput, Selection

        outputs = vision_model(pixel_values, output_hidden_states=True)
        num_patches = NUM_PATCHES if pixel_values.shape[-1] == IMAGE_SIZE else None
        assert num_patches is not None
        kept = [
            torch.arange(0, num_patches, self.strides[i % len(self.strides)])
            for i in range(pixel_values.shape[0])
        ]
        scores = -torch.arange(num_patches, dtype=torch.float32).expand(
            pixel_values.shape[0], -1
        )  # (B, N)
        selection = Selection(kept=kept, num_patches=num_patches, pivotal=kept, scores=scores)
        return EncoderOutput(tuple(outputs.hidden_states), selection)

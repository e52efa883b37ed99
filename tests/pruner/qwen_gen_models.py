"""Tiny random-weight Qwen2-VL / Qwen2.5-VL models, prompts and a test selector for the
generation adapter's tests (no hub access).

Vision: 4 blocks (so freePruner's default layers -4 .. -2 exist), 14 px patches, 2x2 merger,
so an image of H x W pixels (multiples of 28) gives a (1, H/14, W/14) grid and H*W/784
merged tokens. LLM: 2 layers of width 32 with
4 heads of 8 (M-RoPE sections 1 + 1 + 2 = 8 / 2) and 2 KV heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

VOCAB_SIZE = 160
PAD_TOKEN_ID = 0
VISION_START_ID, IMAGE_PAD_ID, VIDEO_PAD_ID, VISION_END_ID = 150, 151, 152, 153
PATCH_SIZE, MERGE, TEMPORAL_PATCH = 14, 2, 2
PATCH_DIM = 3 * TEMPORAL_PATCH * PATCH_SIZE * PATCH_SIZE  # one flattened patch: 1176 values

TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=VOCAB_SIZE,
    rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
    pad_token_id=PAD_TOKEN_ID,
    bos_token_id=1,
    eos_token_id=2,
)
TOKENS = dict(
    image_token_id=IMAGE_PAD_ID,
    video_token_id=VIDEO_PAD_ID,
    vision_start_token_id=VISION_START_ID,
    vision_end_token_id=VISION_END_ID,
)


def _finish(model):
    model.eval()
    # Never stop early on a random EOS: every test compares exactly max_new_tokens tokens.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD_TOKEN_ID
    return model


def tiny_qwen2_vl(seed: int = 0) -> Qwen2VLForConditionalGeneration:
    torch.manual_seed(seed)
    vision = dict(depth=4, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2,
                  patch_size=PATCH_SIZE, spatial_merge_size=MERGE,
                  temporal_patch_size=TEMPORAL_PATCH)
    return _finish(Qwen2VLForConditionalGeneration(
        Qwen2VLConfig(vision_config=vision, text_config=TEXT, **TOKENS)))


def tiny_qwen2_5_vl(seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    """Windows of 56 px (2 x 2 merged tokens) with blocks 1 and 3 on full attention, so a grid
    larger than 4 x 4 patches is really split into windows."""
    torch.manual_seed(seed)
    vision = dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                  patch_size=PATCH_SIZE, spatial_merge_size=MERGE,
                  temporal_patch_size=TEMPORAL_PATCH, window_size=56, fullatt_block_indexes=[1, 3])
    return _finish(Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(vision_config=vision, text_config=TEXT, **TOKENS)))


BUILDERS = {"qwen2_vl": tiny_qwen2_vl, "qwen2_5_vl": tiny_qwen2_5_vl}


def num_merged(grid: tuple[int, int, int]) -> int:
    t, h, w = grid
    return t * h * w // MERGE**2


def patches(grids: list[tuple[int, int, int]], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flattened patches (sum t*h*w, PATCH_DIM) and the grid_thw rows (N, 3)."""
    grid_thw = torch.tensor(grids, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(int(grid_thw.prod(-1).sum()), PATCH_DIM, generator=generator), grid_thw


def vision_prompt(count: int, prefix: list[int], suffix: list[int],
                  pad_id: int = IMAGE_PAD_ID) -> list[int]:
    """``prefix <|vision_start|> pad * count <|vision_end|> suffix``, as the processor expands it."""
    return [*prefix, VISION_START_ID, *[pad_id] * count, VISION_END_ID, *suffix]


def left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, both (B, L), padded on the left."""
    length = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), length), PAD_TOKEN_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for b, p in enumerate(prompts):
        input_ids[b, length - len(p):] = torch.tensor(p, dtype=torch.long)
        attention_mask[b, length - len(p):] = 1
    return input_ids, attention_mask


def type_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """The processor's ``mm_token_type_ids``: 1 on image pads, 2 on video pads, else 0."""
    return (input_ids == IMAGE_PAD_ID).int() + 2 * (input_ids == VIDEO_PAD_ID).int()


@dataclass
class FakeMergedSelection:
    """The fields of ``fpcost.pruner.qwen_vision.MergedSelection`` the adapter reads."""

    features: list[torch.Tensor]
    kept: list[torch.Tensor]
    num_merged: list[int]
    selection: object | None
    selection_time_s: float


class StrideSelector:
    """Runs ``visual`` once and keeps every ``stride``-th merged token of each image / video
    (stride 1: all of them). Records each call's grid."""

    def __init__(self, stride: int = 1):
        self.stride = stride
        self.grids: list[torch.Tensor] = []

    def __call__(self, pruner, visual, pixel_values, grid_thw):
        self.grids.append(grid_thw)
        merged = visual(pixel_values, grid_thw=grid_thw).pooler_output  # (sum N_i, D_llm)
        counts = (grid_thw.prod(-1) // visual.spatial_merge_size**2).tolist()
        return FakeMergedSelection(
            features=list(torch.split(merged, counts)),
            kept=[torch.arange(0, n, self.stride) for n in counts],
            num_merged=counts,
            selection=None,
            selection_time_s=0.0,
        )


# Two images of 84 x 84 and 112 x 112 px: 3 x 3 = 9 and 4 x 4 = 16 merged tokens spanning 3
# and 4 positions, so every-other pruning (5 and 8 kept) cannot line up with sequential
# positions; each in its own prompt of different length (left padding at batch 2).
GRIDS = [(1, 6, 6), (1, 8, 8)]
PROMPTS = [
    vision_prompt(num_merged(GRIDS[0]), [1, 5, 6], [7, 8]),
    vision_prompt(num_merged(GRIDS[1]), [1, 9], [10, 11, 12, 13, 14, 15]),
]


def image_inputs(batch: int) -> dict[str, torch.Tensor]:
    """The processor-like inputs of the first ``batch`` prompts and images."""
    ids, mask = left_padded(PROMPTS[:batch])
    pixels, grid_thw = patches(GRIDS[:batch])
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels,
            "image_grid_thw": grid_thw}

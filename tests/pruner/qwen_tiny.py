"""Tiny random-weight Qwen2-VL and Qwen2.5-VL models and inputs for offline tests.

Towers of 4 (Qwen2-VL) and 6 (Qwen2.5-VL) blocks, 32 wide, 4 heads, 14-px patches merged
2×2. Qwen2.5-VL's windows are 56 px = 2×2 merged tokens (4×4 patches), with full attention at
blocks 2 and 5, so windows matter on images of a few hundred px and the paper's default
layers (-4, -3 pivotal, -2 complementary = blocks 2, 3, 4) mix full and windowed blocks.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=160,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [1, 1, 2]})
TOKENS = dict(image_token_id=151, video_token_id=152, vision_start_token_id=150,
              vision_end_token_id=153, bos_token_id=None, eos_token_id=None, pad_token_id=None)
QWEN2_VISION = dict(depth=4, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2)
QWEN25_VISION = dict(depth=6, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=32,
                     window_size=56, fullatt_block_indexes=[2, 5])
MIN_PIXELS, MAX_PIXELS = 3136, 200_000  # small images stay small


def qwen_model(kind: str, seed: int = 0):
    """A tiny ``Qwen2VLForConditionalGeneration`` ("qwen2_vl") or
    ``Qwen2_5_VLForConditionalGeneration`` ("qwen2_5_vl"), eval, SDPA."""
    torch.manual_seed(seed)
    if kind == "qwen2_vl":
        config = Qwen2VLConfig(vision_config=QWEN2_VISION, text_config=TEXT, **TOKENS)
        return Qwen2VLForConditionalGeneration(config).eval()
    config = Qwen2_5_VLConfig(vision_config=QWEN25_VISION, text_config=TEXT, **TOKENS)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def visual(model):
    """The vision tower of a tiny model."""
    return model.model.visual


def picture(height: int, width: int, seed: int = 0) -> Image.Image:
    """A random RGB picture of ``height`` x ``width`` px."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def processed(images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values, image_grid_thw) as the PIL processor returns them."""
    processor = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    out = processor(images=images, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]

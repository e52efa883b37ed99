"""A tiny random-weight LLaVA-OneVision for offline tests (the LLaVA ones are in tiny_models.py).

SigLIP tower (no CLS, strategy "full", ``vision_feature_layer`` -1 as released) of 4 layers at
28 px with 7 px patches: 4 x 4 = 16 tokens per crop; a 2-layer Qwen2 LLM. AnyRes pinpoints
1x2, 2x1, 2x2 crops of 28 px and the cap ``anyres_max_2`` (two crops' worth, 32 tokens), so
that a 2x2 grid is shrunk at this size, as ``anyres_max_9`` shrinks large images at 384 px.
Image sizes (H, W) used by the tests:

- (10, 50): 1x2 grid, 3 crops; unpadding keeps 2 of 4 patch rows: 2 x 8 = 16 tokens
  (r = sqrt(16 / 32) < 1.1, not shrunk) -> 16 base + 16 + 2 newlines = 34.
- (56, 40): 2x2 grid, 5 crops; unpadding keeps 6 of 8 columns: 8 x 6 = 48, r = sqrt(48 / 32)
  = 1.22 > 1.1 -> shrunk to int(8 // 1.22) x int(6 // 1.22) = 6 x 4 -> 16 + 24 + 6 = 46.
- a video of F frames: each frame's 4 x 4 pooled to 2 x 2 -> 4 F + 1 newline.
"""

from __future__ import annotations

import torch
from tiny_models import IMAGE_TOKEN_ID, PAD_TOKEN_ID, VIDEO_TOKEN_ID, VOCAB_SIZE, _finish
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    SiglipVisionConfig,
)

OV_PINPOINTS = [[28, 56], [56, 28], [56, 56]]
OV_ASPECT_RATIO = "anyres_max_2"
OV_SIZES = torch.tensor([[10, 50], [56, 40]])  # (height, width) per image
OV_PACKED = [34, 46]  # tokens the LLM receives per image, newlines included
OV_VISUAL = [32, 40]  # of which base + grid tokens
OV_NEWLINES = [2, 6]
OV_CROPS = [3, 5]
OV_POOLED = 4  # tokens per video frame after 2 x 2 pooling


def tiny_onevision_config(**overrides) -> LlavaOnevisionConfig:
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                num_attention_heads=4, image_size=28, patch_size=7,
                                vision_use_head=False)
    text = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB_SIZE,
                       pad_token_id=PAD_TOKEN_ID, bos_token_id=1, eos_token_id=2,
                       tie_word_embeddings=False)
    values = dict(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_ID,
                  video_token_index=VIDEO_TOKEN_ID, image_grid_pinpoints=OV_PINPOINTS,
                  vision_aspect_ratio=OV_ASPECT_RATIO)
    values.update(overrides)
    return LlavaOnevisionConfig(**values)


def tiny_llava_onevision(seed: int = 0, **overrides) -> LlavaOnevisionForConditionalGeneration:
    """``overrides`` go to ``LlavaOnevisionConfig``."""
    torch.manual_seed(seed)
    return _finish(LlavaOnevisionForConditionalGeneration(tiny_onevision_config(**overrides)))

"""How Qwen2.5-VL's windowed blocks shape freePruner's complementary tokens (mechanism only).

    python benchmarks/qwen_window_keep.py

A random-weight Qwen2.5-VL tower with the released block layout (32 blocks, full attention
at 7, 15, 23, 31, windows of 112 px = 8x8 patches) but 32 wide, on one 896x504 random
picture (36x64 patches, 576 merged tokens). It prints the kept counts with the paper's
default layers (pivotal 28, 29; complementary 30, windowed) and with the complementary layer
moved to block 31 (full attention). A windowed row is zero outside its window, so when a
window holds under a quarter of the image Q1 = Q3 = 0 and every token of the window is an
IQR outlier: the complementary tokens become whole windows around the pivotal tokens. The
weights are random, so only that mechanism carries over to a trained checkpoint, not the
counts.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from fpcost.pruner.methods import get_pruner
from fpcost.pruner.qwen_vision import select_merged

VISION = dict(depth=32, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=32,
              window_size=112, fullatt_block_indexes=[7, 15, 23, 31])
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=160,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [1, 1, 2]})


def main() -> None:
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(vision_config=VISION, text_config=TEXT, bos_token_id=None,
                              eos_token_id=None, pad_token_id=None, image_token_id=151,
                              video_token_id=152, vision_start_token_id=150)
    tower = Qwen2_5_VLForConditionalGeneration(config).eval().model.visual
    pixels = (np.random.default_rng(5).random((504, 896, 3)) * 255).astype(np.uint8)
    processor = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12845056)
    inputs = processor(images=[Image.fromarray(pixels)], return_tensors="pt")
    print("grid_thw", inputs["image_grid_thw"].tolist()[0])
    for label, params in (("default: pivotal 28,29, complementary 30 (windowed)", {}),
                          ("complementary 31 (full attention)", {"complementary_layer": -1})):
        chosen = select_merged(get_pruner("freepruner", **params), tower, inputs["pixel_values"],
                               inputs["image_grid_thw"])
        raw = chosen.selection
        print(f"{label}: {chosen.kept[0].numel()} of {chosen.num_merged[0]} merged tokens kept "
              f"({raw.pivotal[0].numel()} pivotal, {raw.complementary[0].numel()} complementary)")


if __name__ == "__main__":
    main()

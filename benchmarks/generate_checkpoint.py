"""Mid-size random-weight checkpoints with their processors built locally, for trying
``fpcost generate`` without a hub (the figures in the README's ``fpcost generate`` section and in
docs/validation.md, "fpcost generate on the other families").

    python benchmarks/generate_checkpoint.py /tmp/mid                      # --family llava
    python benchmarks/generate_checkpoint.py /tmp/mid-qwen2 --family qwen2_vl
    fpcost calibrate --output cpu.toml
    fpcost generate --model /tmp/mid photo.png --prompt "w5 w6 w7 w8 w9 w10 w11 w12" \\
        --ratio 0.25 --max-new-tokens 8 --repeats 5 --profile cpu.toml

Every family: a tower 6 layers x 512 wide and an LLM 6 layers x 768 wide (12 heads of 64), a
word-level tokenizer (words w0..w127 as in the tests), so one prompt serves them all.

- llava (default): CLIP 224 px / 14 px patches (256 visual tokens); Llama, 12 KV heads.
- qwen2_vl: Qwen2-VL tower (14 px patches, full attention, 2D rotary, 2 x 2 merger into the LLM
  width), MLP ratio 4; the processor's max_pixels is 448 x 448, so a 512 x 512 image becomes a
  32 x 32 patch grid and 256 merged tokens. Qwen2 LLM, 4 KV heads, M-RoPE sections 8 + 12 + 12.
- qwen2_5_vl: Qwen2.5-VL tower (RMSNorm, SwiGLU 1536 wide, windows of 112 px = 4 x 4 merged
  tokens, blocks 2 and 5 on full attention, as the released models put one full block after
  every few windowed ones); the same LLM and processor as qwen2_vl.
- llava_onevision: SigLIP 168 px / 14 px patches (144 tokens per crop, no CLS, layer -1 as
  released); AnyRes pinpoints 1x2, 2x1, 2x2 crops of 168 px with ``anyres_max_2``: a square
  image takes the 2 x 2 grid (5 crops, 720 tower tokens), its 24 x 24 grid features are shrunk
  to 16 x 16, so the LLM reads 144 + 256 + 16 newlines = 416 visual tokens. Qwen2 LLM, 4 KV heads.

Random weights: the answers say nothing about accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "pruner"))

import torch  # noqa: E402
from test_cli_generate import tiny_processor  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    SiglipVisionConfig,
)

FAMILIES = ("llava", "qwen2_vl", "qwen2_5_vl", "llava_onevision")
# The LLM every family shares: 6 layers x 768, 12 heads of 64 (KV heads set per family).
LLM = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=12,
           pad_token_id=0, bos_token_id=1, eos_token_id=2)
QWEN_PIXELS = dict(min_pixels=4 * 28 * 28, max_pixels=448 * 448)  # 512 px -> 448 px, 256 merged
OV_CROP_PX = 168
OV_PINPOINTS = [[168, 336], [336, 168], [336, 336]]


def _finish(model):
    model.eval()
    model.generation_config.eos_token_id = None  # always generate --max-new-tokens tokens
    model.generation_config.pad_token_id = 0
    return model


def llava(directory: str) -> None:
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
                                       num_attention_heads=8, image_size=224, patch_size=14),
        text_config=LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=6,
                                num_attention_heads=12, num_key_value_heads=12, vocab_size=128,
                                pad_token_id=0, bos_token_id=1, eos_token_id=2),
        image_token_index=100, image_seq_length=256)
    model = _finish(LlavaForConditionalGeneration(config))
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 224},
                                              crop_size={"height": 224, "width": 224}),
        tokenizer=tiny_processor().tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def qwen(directory: str, family: str) -> None:
    from qwen_gen_models import TOKENS, VOCAB_SIZE
    from test_cli_generate_qwen import tiny_tokenizer  # words w0..w159 + Qwen's vision tokens

    # M-RoPE: temporal + height + width sections of head_dim / 2 = 32 frequencies.
    text = dict(LLM, num_key_value_heads=4, vocab_size=VOCAB_SIZE,
                rope_parameters={"rope_type": "default", "mrope_section": [8, 12, 12],
                                 "rope_theta": 1000000.0})
    common = dict(depth=6, num_heads=8, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_vl":
        vision = dict(common, embed_dim=512, mlp_ratio=4, hidden_size=768)
        model = Qwen2VLForConditionalGeneration(
            Qwen2VLConfig(vision_config=vision, text_config=text, **TOKENS))
    else:
        vision = dict(common, hidden_size=512, intermediate_size=1536, out_hidden_size=768,
                      window_size=112, fullatt_block_indexes=[2, 5])
        model = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(vision_config=vision, text_config=text, **TOKENS))
    _finish(model).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    Qwen2VLImageProcessorPil(**QWEN_PIXELS).save_pretrained(directory)


def llava_onevision(directory: str) -> None:
    vision = SiglipVisionConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
                                num_attention_heads=8, image_size=OV_CROP_PX, patch_size=14,
                                vision_use_head=False)
    text = Qwen2Config(**LLM, num_key_value_heads=4, vocab_size=128, tie_word_embeddings=False)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=100,
                                  video_token_index=101, image_grid_pinpoints=OV_PINPOINTS,
                                  vision_aspect_ratio="anyres_max_2")
    _finish(LlavaOnevisionForConditionalGeneration(config)).save_pretrained(directory)
    tiny_processor().tokenizer.save_pretrained(directory)
    LlavaOnevisionImageProcessorPil(
        size={"height": OV_CROP_PX, "width": OV_CROP_PX}, image_grid_pinpoints=OV_PINPOINTS,
    ).save_pretrained(directory)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--family", choices=FAMILIES, default="llava")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.family == "llava":
        llava(args.directory)
    elif args.family == "llava_onevision":
        llava_onevision(args.directory)
    else:
        qwen(args.directory, args.family)
    print(f"wrote {args.directory} ({args.family})")


if __name__ == "__main__":
    main()

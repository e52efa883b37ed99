"""A mid-size random-weight LLaVA checkpoint with a processor built locally, for trying
``fpcost generate`` without a hub (the figure in the README's ``fpcost generate`` section).

    python benchmarks/generate_checkpoint.py /tmp/mid
    fpcost calibrate --output cpu.toml
    fpcost generate --model /tmp/mid photo.png --prompt "w5 w6 w7 w8 w9 w10 w11 w12" \\
        --ratio 0.25 --max-new-tokens 8 --repeats 5 --profile cpu.toml

Tower: CLIP 224 px / 14 px patches, 6 layers x 512 (256 visual tokens); LLM: Llama 6 layers
x 768, a 128-word vocabulary; the tokenizer is the tests' WordLevel one (words w0..w127).
Random weights: the answers say nothing about accuracy.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "pruner"))

import torch  # noqa: E402
from test_cli_generate import tiny_processor  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)


def main(directory: str) -> None:
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
                                       num_attention_heads=8, image_size=224, patch_size=14),
        text_config=LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=6,
                                num_attention_heads=12, num_key_value_heads=12, vocab_size=128,
                                pad_token_id=0, bos_token_id=1, eos_token_id=2),
        image_token_index=100, image_seq_length=256)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = None  # always generate --max-new-tokens tokens
    model.generation_config.pad_token_id = 0
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 224},
                                              crop_size={"height": 224, "width": 224}),
        tokenizer=tiny_processor().tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    print(f"wrote {directory}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/generate_checkpoint.py DIRECTORY")
    main(sys.argv[1])

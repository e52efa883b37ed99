"""A text + image processor for LLaVA-OneVision checkpoints that needs no torchvision.

transformers 5's ``LlavaOnevisionProcessor`` cannot be built without torchvision (its
video-processor slot is checked against a class mapping that exists only with it), so
``AutoProcessor`` fails on every OneVision directory here. This one does the processor's
image job with the pieces that do load: the directory's tokenizer (``AutoTokenizer``) and
``LlavaOnevisionImageProcessorPil`` (reads ``preprocessor_config.json``: size, mean / std,
pinpoints). Each ``<image>`` in the text is expanded to as many placeholders as the model
packs for that image, counted by packing a map through the model's own
``pack_image_features`` (adapters/llava_onevision.py ``packed_sources``), so the count and
the model cannot disagree. Images only: videos need the video processor.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fpcost.pruner.adapters.llava_onevision import num_crops, packed_sources
from fpcost.pruner.errors import PruningError


class OnevisionProcessor:
    """``processor(images=..., text=..., return_tensors="pt")`` -> ``input_ids``,
    ``attention_mask``, ``pixel_values`` (num_images, max_crops, C, H, W), ``image_sizes``,
    ``batch_num_images``: what the model's ``generate`` takes."""

    def __init__(self, tokenizer, image_processor, model: torch.nn.Module):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model = model
        self.image_token = getattr(tokenizer, "image_token", None) or "<image>"
        token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if token_id != model.config.image_token_id:
            raise PruningError(
                f"the tokenizer maps {self.image_token} to {token_id}, but the model's "
                f"image_token_id is {model.config.image_token_id}"
            )

    def num_image_tokens(self, pixels: dict) -> list[int]:
        """Placeholders per image: the length of the model's packed features for it."""
        sizes = torch.as_tensor(pixels["image_sizes"])
        counts = num_crops(self.model, sizes, pixels.get("batch_num_images"))
        side = self.model.config.vision_config.image_size // self.model.config.vision_config.patch_size
        sources, _ = packed_sources(self.model, counts, side * side, sizes)
        return [int(s.numel()) for s in sources]

    def __call__(self, images, text: str, return_tensors: str = "pt") -> dict:
        pixels = self.image_processor(images=images, return_tensors=return_tensors)
        counts = self.num_image_tokens(pixels)
        pieces = text.split(self.image_token)
        if len(pieces) - 1 != len(counts):
            raise PruningError(
                f"the prompt holds {len(pieces) - 1} {self.image_token} tokens for "
                f"{len(counts)} images"
            )
        expanded = pieces[0] + "".join(
            self.image_token * n + piece for n, piece in zip(counts, pieces[1:], strict=True)
        )
        encoded = self.tokenizer(expanded, return_tensors=return_tensors)
        return {**encoded, **pixels}


def load_onevision_processor(directory: Path, model: torch.nn.Module) -> OnevisionProcessor:
    """The directory's tokenizer and PIL image processor, as one ``OnevisionProcessor``."""
    from transformers import AutoTokenizer, LlavaOnevisionImageProcessorPil

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        image_processor = LlavaOnevisionImageProcessorPil.from_pretrained(
            directory, local_files_only=True
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        text = str(exc).strip()
        raise PruningError(
            f"--model {directory}: no tokenizer / preprocessor_config.json in the directory "
            f"(save them with save_pretrained next to the model): "
            f"{text.splitlines()[0] if text else type(exc).__name__}"
        ) from exc
    return OnevisionProcessor(tokenizer, image_processor, model)

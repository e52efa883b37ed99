"""The image + text half of transformers' ``Qwen2VLProcessor``, on the PIL image processor.

transformers 5 cannot build ``Qwen2VLProcessor`` (nor ``Qwen2_5_VLProcessor``) without
torchvision: its video-processor slot is type-checked against a class that only exists when
torchvision imports, and the fast image processor needs torchvision too. ``fpcost generate``
needs images only, so this module does what the processor does for them: the checkpoint's
``preprocessor_config.json`` read by ``Qwen2VLImageProcessorPil`` (patches, ``image_grid_thw``),
each ``<|image_pad|>`` of the text expanded to the image's t*h*w / merge_size**2 merged tokens
(as ``Qwen2VLProcessor.replace_image_token``), then the checkpoint's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch

IMAGE_PAD = "<|image_pad|>"  # Qwen2VLProcessor's default when the tokenizer names none


class QwenVLImageTextProcessor:
    """``processor(images=..., text=..., return_tensors="pt")`` for Qwen2-VL / Qwen2.5-VL:
    ``input_ids`` and ``attention_mask`` (1, L), ``pixel_values`` (patches, C*T*P*P) and
    ``image_grid_thw`` (num_images, 3)."""

    def __init__(self, tokenizer, image_processor, vision_start_token: str,
                 vision_end_token: str):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_PAD
        # what fpcost generate prepends when the prompt names no image
        self.image_prompt = f"{vision_start_token}{self.image_token}{vision_end_token}"

    @classmethod
    def from_pretrained(cls, directory: Path | str, config) -> QwenVLImageTextProcessor:
        """The tokenizer and PIL image processor saved in ``directory``; the vision start /
        end tokens are the ones ``config`` names by id."""
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        images = Qwen2VLImageProcessorPil.from_pretrained(directory, local_files_only=True)
        start, end = tokenizer.convert_ids_to_tokens(
            [config.vision_start_token_id, config.vision_end_token_id])
        if start is None or end is None:
            raise ValueError("the tokenizer has no tokens for vision_start_token_id / "
                             "vision_end_token_id of config.json")
        return cls(tokenizer, images, start, end)

    @property
    def pixel_limits(self) -> tuple[int, int]:
        """(min_pixels, max_pixels) the image processor resizes within."""
        size = self.image_processor.size
        return int(size["shortest_edge"]), int(size["longest_edge"])

    def __call__(self, images, text: str, return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r}: only 'pt' is supported")
        images = images if isinstance(images, list | tuple) else [images]
        pixels = self.image_processor(images=images, return_tensors="pt")
        grid_thw = pixels["image_grid_thw"]  # (num_images, 3)
        merge = self.image_processor.merge_size
        counts = (grid_thw.prod(-1) // merge**2).tolist()
        pieces = text.split(self.image_token)
        if len(pieces) - 1 != len(counts):
            raise ValueError(f"the text has {len(pieces) - 1} {self.image_token} for "
                             f"{len(counts)} images")
        expanded = pieces[0] + "".join(
            self.image_token * n + piece for n, piece in zip(counts, pieces[1:], strict=True))
        batch = self.tokenizer(expanded, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "pixel_values": pixels["pixel_values"], "image_grid_thw": grid_thw}

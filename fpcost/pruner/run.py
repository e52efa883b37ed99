"""One image through an encoder and a pruner: what ``fpcost prune`` does per file."""

from __future__ import annotations

import io
import time
from pathlib import Path

import torch
from PIL import Image

from fpcost.files import write_output
from fpcost.pruner.encoders import Encoder
from fpcost.pruner.inputs import check_resize, open_image
from fpcost.pruner.overlay import draw_overlay
from fpcost.pruner.results import ImageResult


def prune_image(encoder: Encoder, pruner, path: Path | str) -> tuple[ImageResult, Image.Image]:
    """Select tokens of one image file. Returns the result and the crop the encoder saw.

    ``encoder_time_s`` is one plain forward of the encoder (no hooks,
    ``output_hidden_states=True`` as in the pruned pass), wall clock like
    ``selection_time_s``, run just before the pruned pass, so their ratio is the overhead."""
    image = open_image(path)  # PruningError naming the file: unreadable, bomb, NaN pixels
    check_resize(image.size, encoder.image_size, path)
    crop = encoder.crop(image)
    pixels = encoder.pixel_values([crop])
    with torch.no_grad():
        start = time.perf_counter()
        encoder.model(pixels, output_hidden_states=True)
        encoder_time_s = time.perf_counter() - start
    output = pruner.encode_and_select(encoder.model, pixels)
    selection = output.selection
    filled = selection.filled[0].tolist() if selection.filled else []
    result = ImageResult(
        image=str(path),
        num_tokens=selection.num_patches,
        kept_indices=selection.kept[0].tolist(),
        pivotal_indices=selection.pivotal[0].tolist() if selection.pivotal else [],
        complementary_indices=selection.complementary[0].tolist()
        if selection.complementary
        else [],
        filled_indices=filled,
        selection_time_s=float(output.selection_time_s or 0.0),
        grid=encoder.grid,
        encoder_time_s=encoder_time_s,
        settings=selection.settings,
    )
    return result, crop


def save_overlay(result: ImageResult, crop: Image.Image, patch_size: int, path: Path) -> None:
    """Write the overlay PNG of ``result`` to ``path`` by ``fpcost.files.write_output``
    (atomically for a regular file; ``OutputError`` if it cannot be written)."""
    image = draw_overlay(
        crop,
        result.grid,
        patch_size,
        result.pivotal_indices,
        result.complementary_indices,
        result.filled_indices,
    )
    png = io.BytesIO()
    image.save(png, format="PNG", optimize=True)
    write_output(path, png.getvalue(), what="overlay")

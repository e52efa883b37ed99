"""One image through an encoder and a pruner: what ``fpcost prune`` does per file."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from fpcost.pruner.encoders import Encoder
from fpcost.pruner.errors import PruningError
from fpcost.pruner.overlay import draw_overlay
from fpcost.pruner.results import ImageResult


def open_image(path: Path | str) -> Image.Image:
    """The decoded image at ``path``; ``PruningError`` if it is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        raise PruningError(f"cannot read image {path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PruningError(f"cannot read image {path}: {reason}") from None


def prune_image(encoder: Encoder, pruner, path: Path | str) -> tuple[ImageResult, Image.Image]:
    """Select tokens of one image file. Returns the result and the crop the encoder saw.

    ``encoder_time_s`` is one plain forward of the encoder (no hooks,
    ``output_hidden_states=True`` as in the pruned pass), wall clock like
    ``selection_time_s``, run just before the pruned pass, so their ratio is the overhead."""
    crop = encoder.crop(open_image(path))
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
    """Write the overlay PNG of ``result`` to ``path`` atomically (temp file + os.replace)."""
    image = draw_overlay(
        crop,
        result.grid,
        patch_size,
        result.pivotal_indices,
        result.complementary_indices,
        result.filled_indices,
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        image.save(tmp, format="PNG", optimize=True)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; an overlay is an ordinary output file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

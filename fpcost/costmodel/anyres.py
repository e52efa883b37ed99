"""LLaVA-NeXT's AnyRes: how many crops the vision tower runs and how many visual tokens the
LLM receives for an image of a given size, as transformers computes them (no transformers
import; tests compare against transformers' own helpers).

transformers (``image_processing_utils.select_best_resolution``,
``models/llava_next/modeling_llava_next.py``: ``get_anyres_image_grid_shape``,
``image_size_to_num_patches``, ``unpad_image``, ``pack_image_features``, and the processor's
``_get_number_of_features``):

1. best resolution: among ``image_grid_pinpoints`` (``(height, width)`` pairs) the one that
   keeps the most of the image's pixels when the image is scaled to fit it, ties broken by
   the least wasted area;
2. the resized image is cut into ``rows × cols`` crops of ``image_size`` (336 px), plus one
   base crop (the whole image resized to 336 × 336): the tower runs ``1 + rows·cols`` crops;
3. the crops' patch features form a ``(rows·p) × (cols·p)`` grid (p = 24 patches per side);
   the rows (or columns) that only hold padding are cut off (unpadding);
4. each remaining grid row gets one ``image_newline`` token;
5. the base crop's p² patch tokens (+1 with ``vision_feature_select_strategy="full"`` and a
   CLS token) come first.

Sizes are plain ints (an image size is one request's property, not a sweep axis).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import WorkloadError

_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
# transformers rounds the rescaled side to 7 decimals before truncating (unpad_image).
UNPAD_ROUND_DIGITS = 7


def parse_image_size(text: str) -> tuple[int, int]:
    """``"1344x336"`` → ``(1344, 336)``: (width, height) in pixels, both positive integers."""
    match = _SIZE_PATTERN.match(str(text)) if len(str(text)) <= 40 else None
    if match is None:
        shown = repr(str(text)) if len(str(text)) <= 40 else repr(str(text)[:20] + "...")
        raise WorkloadError(
            f"image size {shown} is not WIDTHxHEIGHT with positive integer pixels (e.g. 1344x336)"
        )
    width, height = int(match.group(1)), int(match.group(2))
    check_image_size(width, height)
    return width, height


# Largest image side: 2**31 − 1 px (int32, as image libraries index pixels); only the aspect
# ratio matters to AnyRes, and the float arithmetic of select_best_resolution stays exact.
MAX_IMAGE_SIDE = 2**31 - 1


def check_image_size(width: object, height: object) -> tuple[int, int]:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IMAGE_SIDE:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:20] + "..."
            raise WorkloadError(f"image {name} = {shown} must be a positive integer number of "
                                f"pixels, at most {MAX_IMAGE_SIDE:,}")
    return width, height


def select_best_resolution(height: int, width: int, pinpoints) -> tuple[int, int]:
    """The ``(height, width)`` pinpoint transformers resizes an image of this size to."""
    best, max_effective, min_wasted = None, 0, float("inf")
    for pin_height, pin_width in pinpoints:
        scale = min(pin_width / width, pin_height / height)
        down_width, down_height = int(width * scale), int(height * scale)
        effective = min(down_width * down_height, width * height)
        wasted = pin_width * pin_height - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            best, max_effective, min_wasted = (pin_height, pin_width), effective, wasted
    return best


def unpadded_grid(height: int, width: int, grid_height: int, grid_width: int) -> tuple[int, int]:
    """Rows and columns of a ``grid_height × grid_width`` feature grid left after removing
    the padding added when an image of ``height × width`` was fitted into it."""
    if width / height > grid_width / grid_height:
        new_height = int(round(height * (grid_width / width), UNPAD_ROUND_DIGITS))
        padding = (grid_height - new_height) // 2
        return grid_height - 2 * padding, grid_width
    new_width = int(round(width * (grid_height / height), UNPAD_ROUND_DIGITS))
    padding = (grid_width - new_width) // 2
    return grid_height, grid_width - 2 * padding


@dataclass(frozen=True)
class AnyResLayout:
    """What AnyRes makes of one image: crops the tower runs, tokens the LLM receives."""

    width: int
    height: int
    best_height: int
    best_width: int
    grid_rows: int  # crops per column of the best resolution
    grid_cols: int
    unpadded_rows: int  # feature-grid rows (and columns) left after unpadding
    unpadded_cols: int
    base_tokens: int

    @property
    def num_crops(self) -> int:
        """Images the vision tower runs: the grid's crops plus the base image."""
        return self.grid_rows * self.grid_cols + 1

    @property
    def num_newline_tokens(self) -> int:
        return self.unpadded_rows

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens in the LLM's input: base crop, unpadded grid, one newline per row."""
        return self.base_tokens + self.unpadded_rows * self.unpadded_cols + self.num_newline_tokens


def anyres_layout(
    width: int, height: int, pinpoints, crop_size: int, patch_size: int, base_extra_tokens: int = 0
) -> AnyResLayout:
    """AnyRes for an image of ``width × height`` pixels. ``crop_size`` is the tower's
    ``image_size`` (336), ``patch_size`` its patch (14); ``base_extra_tokens`` is 1 when the
    CLS token is kept (``vision_feature_select_strategy="full"``), else 0."""
    check_image_size(width, height)
    best_height, best_width = select_best_resolution(height, width, pinpoints)
    rows, cols = best_height // crop_size, best_width // crop_size
    side = crop_size // patch_size  # patches per crop side
    unpadded_rows, unpadded_cols = unpadded_grid(height, width, rows * side, cols * side)
    return AnyResLayout(width, height, best_height, best_width, rows, cols, unpadded_rows,
                        unpadded_cols, side * side + base_extra_tokens)


def default_image_size(pinpoints) -> tuple[int, int]:
    """(width, height) of the largest pinpoint by area (the first among equals): the image
    size assumed when none is given; a square pinpoint loses nothing to padding."""
    height, width = max(pinpoints, key=lambda hw: (hw[0] * hw[1], hw[0] == hw[1]))
    return width, height

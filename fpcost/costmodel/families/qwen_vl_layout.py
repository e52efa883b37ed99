"""Visual-token layout of Qwen2-VL and Qwen2.5-VL: dynamic resolution, patch grids, the 2×2
merger, temporal patches, and Qwen2.5-VL's attention windows.

Everything follows transformers (5.x) exactly:

- ``smart_resize`` is ``Qwen2VLImageProcessorPil``'s resize rule: each side rounded to a
  multiple of ``factor`` = patch 14 × merge 2 = 28 (Python's ``round``: halves go to the even
  multiple), then, when the area leaves [min_pixels, max_pixels], both sides rescaled by one
  factor and floored (too large) or ceiled (too small) to multiples of 28.
- An image becomes a grid of (t, h, w) = (1, H/14, W/14) patches; its one frame is repeated to
  fill the Conv3d's 2-frame temporal kernel. A video of F frames is padded by repeating its
  last frame to a multiple of 2 (``Qwen2VLVideoProcessor.patchify``): t = ceil(F / 2).
- The merger concatenates 2×2 neighbouring patches: t·h·w / 4 tokens reach the LLM.
- Attention runs within each temporal slice of each image or video (transformers'
  ``get_vision_cu_seqlens``: t segments of h·w patches). Qwen2.5-VL's windowed blocks split
  each slice into windows of ``window_size`` px = 112 / 14 / 2 = 4×4 merged units (8×8
  patches); windows at the right and bottom edges are partial (``get_vision_window_index``).

The sizes here are counts of patches (before the merger) unless a name says ``merged``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import WorkloadError
from ..workload import MAX_PIXEL_LIMIT

# Released checkpoints' preprocessor_config.json (Qwen/Qwen2-VL-7B-Instruct,
# Qwen/Qwen2.5-VL-7B-Instruct): min_pixels 3136 = 56², max_pixels 12845056 = 28² × 16384.
DEFAULT_MIN_PIXELS = 3136
DEFAULT_MAX_PIXELS = 12845056
PATCH_SIZE = 14
SPATIAL_MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
RESIZE_FACTOR = PATCH_SIZE * SPATIAL_MERGE_SIZE  # 28
MAX_ASPECT_RATIO = 200  # smart_resize raises above it
MAX_IMAGE_SIDE_PX = 2**20  # far above any photograph; keeps every count exact


@dataclass(frozen=True)
class VisionGrid:
    """One image or video as the tower sees it: ``t`` temporal patches of ``h`` × ``w``
    spatial patches (transformers' ``grid_thw`` row)."""

    t: int
    h: int
    w: int

    @property
    def num_patches(self) -> int:
        """Token rows through the vision blocks: t·h·w."""
        return self.t * self.h * self.w

    def num_merged_tokens(self, merge_size: int = SPATIAL_MERGE_SIZE) -> int:
        """Tokens after the patch merger (what the LLM receives): t·h·w / merge²."""
        return self.num_patches // merge_size**2


def _check_side(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IMAGE_SIDE_PX:
        raise WorkloadError(f"{name} = {value!r} must be an integer number of pixels in "
                            f"1..{MAX_IMAGE_SIDE_PX}")
    return value


def check_pixel_limits(min_pixels: object, max_pixels: object) -> tuple[int, int]:
    """``(min_pixels, max_pixels)`` if both are integers with 1 ≤ min ≤ max, else an error
    naming the ``--min-pixels`` / ``--max-pixels`` value."""
    for flag, value in (("--min-pixels", min_pixels), ("--max-pixels", max_pixels)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PIXEL_LIMIT:
            raise WorkloadError(f"{flag} {value!r} must be an integer in 1..{MAX_PIXEL_LIMIT}")
    if min_pixels > max_pixels:
        raise WorkloadError(f"--min-pixels {min_pixels} is larger than --max-pixels {max_pixels}")
    return min_pixels, max_pixels


def smart_resize(height: int, width: int, factor: int = RESIZE_FACTOR,
                 min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) in pixels the Qwen2-VL image processor resizes an image to: both
    multiples of ``factor``, area within [min_pixels, max_pixels] where the rounding allows
    (transformers' rule, reproduced operation for operation, floats included)."""
    height, width = _check_side("image height", height), _check_side("image width", width)
    min_pixels, max_pixels = check_pixel_limits(min_pixels, max_pixels)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise WorkloadError(f"image size {width}x{height} has an aspect ratio above "
                            f"{MAX_ASPECT_RATIO}, which the Qwen2-VL image processor refuses")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if h_bar == 0 or w_bar == 0:  # only when min_pixels < factor²; transformers fails later
        raise WorkloadError(f"image size {width}x{height} resizes to {w_bar}x{h_bar} pixels with "
                            f"--min-pixels {min_pixels}; use --min-pixels {factor * factor} or more")
    return h_bar, w_bar


def image_grid(height: int, width: int, min_pixels: int = DEFAULT_MIN_PIXELS,
               max_pixels: int = DEFAULT_MAX_PIXELS, patch_size: int = PATCH_SIZE,
               merge_size: int = SPATIAL_MERGE_SIZE) -> VisionGrid:
    """Patch grid of one image of ``height`` × ``width`` pixels: (1, H'/14, W'/14) after
    ``smart_resize``."""
    h_px, w_px = smart_resize(height, width, patch_size * merge_size, min_pixels, max_pixels)
    return VisionGrid(1, h_px // patch_size, w_px // patch_size)


def num_temporal_patches(num_frames: int, temporal_patch_size: int = TEMPORAL_PATCH_SIZE) -> int:
    """Temporal patches of a video of ``num_frames`` frames: the last frame is repeated up to
    a multiple of the temporal patch (transformers' video processor), so ceil(F / 2)."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise WorkloadError(f"--frames {num_frames!r} must be a positive integer")
    return -(-num_frames // temporal_patch_size)


def video_grid(num_frames: int, height: int, width: int, min_pixels: int = DEFAULT_MIN_PIXELS,
               max_pixels: int = DEFAULT_MAX_PIXELS, patch_size: int = PATCH_SIZE,
               merge_size: int = SPATIAL_MERGE_SIZE,
               temporal_patch_size: int = TEMPORAL_PATCH_SIZE) -> VisionGrid:
    """Patch grid of a video of ``num_frames`` frames of ``height`` × ``width`` pixels, each
    frame resized by ``smart_resize`` with the given limits (the video processor's own
    defaults differ: pass them; its optional per-video token cap is not modelled)."""
    frame = image_grid(height, width, min_pixels, max_pixels, patch_size, merge_size)
    return VisionGrid(num_temporal_patches(num_frames, temporal_patch_size), frame.h, frame.w)


def full_attention_seqlens(grids) -> list[int]:
    """Patches per attention segment of a full-attention block: one segment of h·w per
    temporal slice of each grid, in order (transformers' ``cu_seqlens`` differences)."""
    return [g.h * g.w for g in grids for _ in range(g.t)]


def window_attention_seqlens(grids, window_size: int, patch_size: int = PATCH_SIZE,
                             merge_size: int = SPATIAL_MERGE_SIZE) -> list[int]:
    """Patches per attention window of a Qwen2.5-VL windowed block, in transformers' order.

    Each temporal slice's (h/2) × (w/2) merged units are tiled row-major by windows of
    ``n = window_size // merge_size // patch_size`` units (4 for 112 px); a window holds
    min(n, rows left) × min(n, columns left) units, each of merge² patches. Empty windows do
    not exist here (transformers pads to a whole window more and then drops them)."""
    units = window_size // merge_size // patch_size
    if units < 1:
        raise WorkloadError(f"window_size {window_size} is smaller than one merged unit "
                            f"({merge_size * patch_size} px)")
    seqlens = []
    for g in grids:
        merged_h, merged_w = g.h // merge_size, g.w // merge_size
        rows = [min(units, merged_h - top) for top in range(0, merged_h, units)]
        cols = [min(units, merged_w - left) for left in range(0, merged_w, units)]
        frame = [r * c * merge_size**2 for r in rows for c in cols]
        seqlens += frame * g.t
    return seqlens

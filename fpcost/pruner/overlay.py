"""Kept tokens drawn over the image the encoder saw (the paper's Fig. 5), with PIL only.

Pruned patches are dimmed; pivotal patches are tinted and outlined in magenta,
complementary ones in cyan, and tokens added only to reach a budget in yellow.
"""

from __future__ import annotations

from collections.abc import Iterable

from PIL import Image, ImageDraw

DIM_RGBA = (0, 0, 0, 150)
COLOURS = {
    "pivotal": (255, 40, 160),
    "complementary": (40, 200, 255),
    "filled": (255, 220, 0),
}
TINT_ALPHA = 70


def draw_overlay(
    crop: Image.Image,
    grid: tuple[int, int],
    patch_size: int,
    pivotal: Iterable[int],
    complementary: Iterable[int],
    filled: Iterable[int] = (),
) -> Image.Image:
    """``crop`` (the RGB square the encoder saw) with the selection drawn over it.

    ``grid``: (rows, cols) of patches of ``patch_size`` px; indices are raster patch indices."""
    rows, cols = grid
    groups = {"pivotal": set(pivotal), "complementary": set(complementary), "filled": set(filled)}
    kept = set().union(*groups.values())
    layer = Image.new("RGBA", crop.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)

    def box(index: int) -> tuple[int, int, int, int]:
        r, c = divmod(index, cols)
        return c * patch_size, r * patch_size, (c + 1) * patch_size - 1, (r + 1) * patch_size - 1

    for index in range(rows * cols):
        if index not in kept:
            draw.rectangle(box(index), fill=DIM_RGBA)
    for name, indices in groups.items():
        rgb = COLOURS[name]
        for index in sorted(indices):
            draw.rectangle(box(index), fill=(*rgb, TINT_ALPHA), outline=(*rgb, 255))
    return Image.alpha_composite(crop.convert("RGBA"), layer).convert("RGB")

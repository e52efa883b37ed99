"""Write scikit-image's real photographs as PNG files, for ``fpcost prune`` and docs/pruning.md.

    python benchmarks/export_skimage_photos.py photos/

The twelve photographs bundled with scikit-image (``skimage.data``) that need no download:
synthetic images (colorwheel, logo), scans (page), textures (brick, grass, gravel) and
binary masks (horse) are left out. Greyscale photos stay greyscale; ``fpcost prune``
converts them to RGB as a processor would.
"""

from __future__ import annotations

import sys
from pathlib import Path

PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
    "text",
)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/export_skimage_photos.py OUTDIR")
    from PIL import Image
    from skimage import data

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        Image.fromarray(getattr(data, name)()).save(out / f"{name}.png")
        print(out / f"{name}.png")


if __name__ == "__main__":
    main()

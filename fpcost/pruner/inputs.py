"""What ``fpcost prune`` (and ``validate --images``) refuses before it computes anything.

Images, one at a time (``open_image``): a file that is missing or not an image, a header
declaring more than ``MAX_IMAGE_PIXELS`` pixels (PIL's decompression-bomb threshold), pixels
that are NaN or infinite (float TIFFs), and a shape so elongated that resizing its shortest
side to the encoder's input would make more than ``MAX_RESIZED_PIXELS`` pixels (a 1 x 20000
image at 336 px would be 336 x 6,720,000 px, 7 GB). Each is a ``PruningError`` naming the
file; ``fpcost prune`` skips that image with the message and exits 2 at the end, writing no
results file (the other images' rows are still printed).

Parameters, once per run (``check_image_size`` before the encoder loads; ``check_against_encoder``
once its depth and patch count are known, before any image is read): ``--image-size`` up to
``MAX_IMAGE_SIZE``, layer indices within the encoder's depth, budgets and counts within its
patch tokens.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fpcost.pruner.errors import PruningError

# PIL's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS: 89,478,485 px, about
# 0.25 GB as 24-bit RGB), fixed here so that a caller lowering or disabling PIL's does not
# change what fpcost accepts. Above it PIL warns; above twice it PIL raises.
MAX_IMAGE_PIXELS = 89_478_485
# The resize before the centre crop makes shortest side x (longest side x scale) pixels;
# 2**26 px is 0.2 GB as RGB, reached only by an aspect ratio over 590:1 at 336 px (64:1 at
# the largest --image-size); the crop keeps size x size of it.
MAX_RESIZED_PIXELS = 2**26
# --image-size (DINOv2 only; CLIP and SigLIP take only their own size). DINOv2 was trained
# at 518 px (37 x 37 position embeddings) and interpolates them to other sizes. At 1024 px
# a 14-px-patch encoder has 73 x 73 = 5,329 tokens, so each captured (T, T) attention map is
# 114 MB in fp32 per image; the work grows as the fourth power of the side (5000 px: 127,551
# tokens, a 65 GB map), which is why the side is bounded here, before the model is loaded.
MAX_IMAGE_SIZE = 1024
# Float and 32-bit integer modes, rescaled to 8 bits by encoders.to_rgb.
NUMERIC_MODES = ("F", "I", "I;16", "I;16B", "I;16L")


def open_image(path: Path | str) -> Image.Image:
    """The decoded image at ``path``; ``PruningError`` naming the file if it is missing, not
    an image, a decompression bomb, or has NaN or infinite pixels."""
    path = Path(path)
    if not path.is_file():
        raise PruningError(f"cannot read image {path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_pixel_count(image.size, path)  # from the header, before decoding
                image.load()
                image = image.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PruningError(
            f"cannot read image {path}: its header declares more than {MAX_IMAGE_PIXELS:,} pixels "
            "(a decompression bomb, or an image too large to prune)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PruningError(f"cannot read image {path}: {reason}") from None
    except MemoryError:
        raise PruningError(f"cannot read image {path}: not enough memory to decode it") from None
    check_finite_pixels(image, path)
    return image


def check_pixel_count(size: tuple[int, int], path: Path | str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise PruningError(f"cannot read image {path}: it is {width} x {height} px (empty)")
    if width * height > MAX_IMAGE_PIXELS:
        raise PruningError(
            f"cannot read image {path}: it is {width} x {height} px = {width * height:,} pixels, "
            f"more than {MAX_IMAGE_PIXELS:,} (a decompression bomb, or an image too large to prune)"
        )


def check_finite_pixels(image: Image.Image, path: Path | str | None = None) -> None:
    """``PruningError`` if a float-mode image holds NaN or infinite values (integer modes
    cannot). Such pixels have no brightness: rescaling would turn the image black or noise."""
    if image.mode not in NUMERIC_MODES:
        return
    values = np.asarray(image)
    if values.dtype.kind != "f":
        return
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        name = f"image {path}" if path is not None else "the image"
        raise PruningError(
            f"{name} has {bad:,} NaN or infinite pixel value(s) of {values.size:,} "
            f"(mode {image.mode}); only finite pixels can be pruned"
        )


def check_resize(size: tuple[int, int], image_size: int, path: Path | str | None = None) -> None:
    """``PruningError`` if resizing the shortest side of a ``size`` (width, height) image to
    ``image_size`` px would make more than ``MAX_RESIZED_PIXELS`` pixels."""
    width, height = size
    scale = image_size / min(width, height)
    new_w, new_h = max(image_size, round(width * scale)), max(image_size, round(height * scale))
    if new_w * new_h > MAX_RESIZED_PIXELS:
        name = f"image {path}" if path is not None else "the image"
        raise PruningError(
            f"{name} is {width} x {height} px: resizing its shortest side to {image_size} px "
            f"would make {new_w:,} x {new_h:,} px, more than {MAX_RESIZED_PIXELS:,}; "
            "crop it to a less elongated shape first"
        )


def check_image_size(image_size: int | None) -> None:
    """``PruningError`` unless ``image_size`` (px; None: the encoder's own) is in
    1..``MAX_IMAGE_SIZE``."""
    if image_size is None:
        return
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise PruningError(f"--image-size {image_size!r} must be an integer number of px")
    if not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise PruningError(
            f"--image-size {image_size} is out of range; valid: 1..{MAX_IMAGE_SIZE} px "
            "(DINOv2's attention maps grow as the fourth power of the side)"
        )


def check_against_encoder(pruner, num_layers: int, num_patches: int, encoder_name: str) -> None:
    """Before any image: every layer index the pruner reads exists in a ``num_layers``-layer
    encoder, and a fixed budget or count is at most its ``num_patches`` patch tokens.
    Messages name the ``fpcost prune`` flags."""
    where = f"encoder {encoder_name} ({num_layers} layers, {num_patches} patch tokens)"
    config = getattr(pruner, "config", None)
    if config is not None:
        comp = getattr(config, "complementary_layer", None)
        if comp is not None and not -num_layers <= comp < num_layers:
            raise PruningError(f"--complementary-layer {comp} is out of range for {where}; "
                               f"valid: {-num_layers}..{num_layers - 1}")
        start = getattr(config, "pivotal_start_layer", None)
        end = getattr(config, "pivotal_end_layer", None)
        if start is not None and end is not None and not range(num_layers)[start:end]:
            raise PruningError(
                f"--start-layer {start} and --end-layer {end} (exclusive) select no layer of "
                f"{where}; give a start before the end, within {-num_layers}..{num_layers}"
            )
        budget = getattr(config, "budget", None)
        if budget is not None and budget > num_patches:
            raise PruningError(f"--budget {budget} exceeds the patch tokens of {where}")
    count = getattr(pruner, "count", None)
    if count is not None and count > num_patches:
        raise PruningError(f"--budget {count} exceeds the patch tokens of {where}")
    try:  # whatever else the method resolves (cls and prumerge+ read fixed layers)
        pruner.capture_layers(num_layers)
    except PruningError as exc:
        raise PruningError(f"{exc} ({where})") from None

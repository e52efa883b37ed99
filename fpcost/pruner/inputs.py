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

import json
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


def check_against_encoder(pruner, num_layers: int | None, num_patches: int | None,
                          encoder_name: str) -> None:
    """Before any image: every layer index the pruner reads exists in a ``num_layers``-layer
    encoder, and a fixed budget or count is at most its ``num_patches`` patch tokens (either
    may be None: not known yet, not checked). Messages name the ``fpcost prune`` flags."""
    parts = [f"{n} {what}" for n, what in ((num_layers, "layers"), (num_patches, "patch tokens"))
             if n is not None]
    where = f"encoder {encoder_name} ({', '.join(parts)})"
    config = getattr(pruner, "config", None)
    if config is not None and num_layers is not None:
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
    if num_patches is not None:
        budget = getattr(config, "budget", None)
        count = getattr(pruner, "count", None)
        for value in (budget, count):
            if value is not None and value > num_patches:
                raise PruningError(f"--budget {value} exceeds the patch tokens of {where}")
    if num_layers is not None:
        try:  # whatever else the method resolves (cls and prumerge+ read fixed layers)
            pruner.capture_layers(num_layers)
        except PruningError as exc:
            raise PruningError(f"{exc} ({where})") from None


def _positive_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def configured_geometry(name_or_path: str, image_size: int | None) -> tuple[int | None, int | None]:
    """(layers, patch tokens) of an encoder from its config alone, before its weights load
    (a LLaVA checkpoint's shards are read in full to find the tower). None where the config
    does not settle it (the loaded encoder is checked again): layers from
    ``num_hidden_layers``; patch tokens for the built-in DINOv2 and for CLIP / SigLIP, whose
    input side is always their config's ``image_size``."""
    from fpcost.pruner.dinov2_onnx import DINOV2_S14

    if name_or_path == "dinov2-s14":
        from fpcost.pruner.encoders import DINOV2_S14_IMAGE_SIZE

        side = (image_size or DINOV2_S14_IMAGE_SIZE) // DINOV2_S14["patch_size"]
        return DINOV2_S14["num_hidden_layers"], side * side
    config_path = Path(name_or_path).expanduser() / "config.json"
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, ValueError, RecursionError):
        return None, None  # the loader gives the one-line error
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type in _TOWER_TYPES:  # a LLaVA-family checkpoint: its vision tower
        vision = raw.get("vision_config")
        vision_type = vision.get("model_type", "clip_vision_model") if isinstance(vision, dict) else None
    elif model_type in _BARE_TYPES:
        vision, vision_type = raw.get("vision_config", raw), model_type
    else:
        return None, None  # not an encoder fpcost loads: the loader says so
    if not isinstance(vision, dict) or vision_type not in _BARE_TYPES:
        return None, None
    layers = _positive_int(vision.get("num_hidden_layers"))
    side, patch = _positive_int(vision.get("image_size")), _positive_int(vision.get("patch_size"))
    if vision_type in _FIXED_SIZE_TYPES and side and patch and image_size in (None, side):
        return layers, (side // patch) ** 2
    return layers, None


# model_type values encoders.py loads (its _BARE and _TOWERS); CLIP and SigLIP take only
# their config's image_size as input side, DINOv2 any.
_FIXED_SIZE_TYPES = ("clip_vision_model", "clip", "siglip_vision_model", "siglip")
_BARE_TYPES = (*_FIXED_SIZE_TYPES, "dinov2")
_TOWER_TYPES = ("llava", "llava_next", "video_llava", "llava_onevision")

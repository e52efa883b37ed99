"""Model inputs for a video, as each family's video processor makes them, without torchvision.

transformers 5's video processors (``video_processing_*.py``) run on torchvision; here each
one's steps are redone with the checkpoint's PIL image processor or PIL + numpy, with the
settings of the directory's ``video_preprocessor_config.json`` where it has one, else the
video processor's class defaults. Frames are resized by PIL (the image processors' backend),
not by torchvision's tensor resize, so pixels can differ from transformers' video path in
the last bits of the interpolation; counts and layouts are the processors'.

- Video-LLaVA (``VideoLlavaVideoProcessor``): each frame resized to shortest edge 224
  (bicubic), centre-cropped to 224, rescaled, CLIP-normalised: the image processor's own
  steps, so frames go through the checkpoint's image processor. ``pixel_values_videos``
  (1, F, 3, 224, 224); ``<video>`` × F·((224/14)² + 1): the port keeps each frame's CLS
  (``VideoLlavaProcessor.replace_video_token``; ``get_video_features`` drops nothing).
- Qwen2-VL / Qwen2.5-VL (``Qwen2VLVideoProcessor``): each frame resized by ``smart_resize``
  within the video pixel limits (class defaults 128·28² .. 768·28²), normalised, frames
  grouped in temporal pairs (an odd count padded with the last frame, as ``patchify``), each
  pair patchified. A frame goes through the image processor (same resize and normalisation;
  its patches repeat the frame over the pair), and a pair's patches take frame 0's half from
  one frame and frame 1's from the next, so a frame repeated twice gives the image
  processor's patches bit for bit. ``video_grid_thw`` (1, 3) = (ceil(F/2), h, w);
  ``<|vision_start|><|video_pad|><|vision_end|>`` with t·h·w / merge² pads;
  Qwen2.5-VL also ``second_per_grid_ts`` = temporal_patch_size / sampled fps (24 when the
  source gives no frame rate, transformers' ``VideoMetadata.sampled_fps``).
- LLaVA-OneVision (``LlavaOnevisionVideoProcessor``): each frame resized to 384 × 384
  (bicubic; here the tower's image size unless the video config names one), rescaled,
  CLIP-normalised; no AnyRes crops. ``pixel_values_videos`` (1, F, 3, S, S); ``<video>`` ×
  F·P + 1: P pooled tokens per frame (the model's ``apply_pooling``: 196 at 384 px) and one
  newline per video (``get_video_features``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fpcost.pruner.adapters.common import config_token_id
from fpcost.pruner.adapters.llava_onevision import _pooled_sources
from fpcost.pruner.errors import PruningError
from fpcost.pruner.video_frames import DEFAULT_FPS, Video

VIDEO_CONFIG = "video_preprocessor_config.json"
DEFAULT_NUM_FRAMES = 8  # Video-LLaVA's 8; Qwen / OneVision unless the video config says
# Qwen2VLVideoProcessor.size (min / max pixels per frame)
QWEN_VIDEO_MIN_PIXELS, QWEN_VIDEO_MAX_PIXELS = 128 * 28 * 28, 768 * 28 * 28
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OPENAI_CLIP_MEAN / STD of transformers
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def read_video_config(directory: Path) -> dict:
    """The directory's ``video_preprocessor_config.json`` ({} when there is none)."""
    path = Path(directory) / VIDEO_CONFIG
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PruningError(f"--model {directory}: {VIDEO_CONFIG} is not readable JSON "
                           f"({exc})") from exc
    if not isinstance(data, dict):
        raise PruningError(f"--model {directory}: {VIDEO_CONFIG} is not a JSON object")
    return data


def default_num_frames(video_config: dict) -> int:
    """The checkpoint's ``num_frames`` when its video config sets one, else 8."""
    value = video_config.get("num_frames")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else DEFAULT_NUM_FRAMES


def qwen_video_pixel_limits(video_config: dict) -> tuple[int, int]:
    """(min_pixels, max_pixels) a Qwen video frame is resized within."""
    size = video_config.get("size") or {}
    low = video_config.get("min_pixels") or size.get("shortest_edge") or QWEN_VIDEO_MIN_PIXELS
    high = video_config.get("max_pixels") or size.get("longest_edge") or QWEN_VIDEO_MAX_PIXELS
    return int(low), int(high)


def _placeholder(model, tokenizer, prompt: str) -> str:
    """The tokenizer's token for the model's video token id; refused when ``prompt`` holds
    the image placeholder (an image token with no image would reach the model)."""
    token_id = config_token_id(model, "video_token_id", "video_token_index")
    token = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(token, str):
        raise PruningError(f"the tokenizer has no token for the model's video token id {token_id}")
    image = tokenizer.convert_ids_to_tokens(config_token_id(model, "image_token_id",
                                                            "image_token_index"))
    if isinstance(image, str) and image in prompt:
        raise PruningError(f"--prompt holds the image placeholder {image}; with --video give "
                           f"the video's ({token}) or none")
    return token


def _with_video(prompt: str, token: str, wrapped: str, count: int) -> str:
    """``prompt`` with its one video placeholder (prepended as ``wrapped`` if absent)
    expanded to ``count`` placeholders."""
    text = prompt if token in prompt else f"{wrapped}\n{prompt}"
    if text.count(token) != 1:
        raise PruningError(f"--prompt holds {text.count(token)} {token} placeholders; "
                           "give one video")
    return text.replace(token, token * count)


def _normalised(frame: Image.Image, size: tuple[int, int], mean, std) -> np.ndarray:
    """(3, H, W) float32: ``frame`` resized to ``size`` (width, height; bicubic), / 255,
    minus mean over std (per channel)."""
    pixels = np.asarray(frame.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return pixels.transpose(2, 0, 1)


def _video_llava(model, processor, video: Video, prompt: str, config: dict) -> dict:
    keys = ("size", "crop_size", "image_mean", "image_std")
    overrides = {key: config[key] for key in keys if key in config}
    frames = processor.image_processor(images=list(video.frames), return_tensors="pt",
                                       return_legacy_image_output=False,
                                       **overrides)["pixel_values"]  # (F, 3, H, W)
    patch = model.config.vision_config.patch_size
    per_frame = (frames.shape[-2] // patch) * (frames.shape[-1] // patch) + 1  # CLS kept
    token = _placeholder(model, processor.tokenizer, prompt)
    text = _with_video(prompt, token, token, len(video.frames) * per_frame)
    return {**processor.tokenizer(text, return_tensors="pt"), "pixel_values_videos": frames[None]}


def qwen_video_patches(image_processor, frames, pixel_limits: tuple[int, int]):
    """(patches (t·h·w, C·T·P·P), grid (t, h, w)) of ``frames`` as Qwen2VLVideoProcessor
    lays them out (module doc)."""
    low, high = pixel_limits
    size = {"shortest_edge": low, "longest_edge": high}
    temporal = image_processor.temporal_patch_size
    frames = list(frames) + [frames[-1]] * (-len(frames) % temporal)  # pad to whole groups
    halves, grid = [], None
    for frame in frames:
        out = image_processor(images=[frame], size=size, return_tensors="pt")
        grid = out["image_grid_thw"][0].tolist()  # [1, h, w]
        patches = out["pixel_values"]  # (h·w, C·T·P·P), the frame repeated over T
        num, patch = patches.shape[0], image_processor.patch_size
        halves.append(patches.view(num, -1, temporal, patch, patch)[:, :, 0])  # (h·w, C, P, P)
    groups = [torch.stack(halves[i:i + temporal], dim=2)  # (h·w, C, T, P, P)
              for i in range(0, len(halves), temporal)]
    patches = torch.cat([g.reshape(g.shape[0], -1) for g in groups])  # (t·h·w, C·T·P·P)
    return patches, (len(groups), grid[1], grid[2])


def _qwen(model, processor, video: Video, prompt: str, config: dict) -> dict:
    images = processor.image_processor
    patches, grid = qwen_video_patches(images, video.frames, qwen_video_pixel_limits(config))
    count = grid[0] * grid[1] * grid[2] // images.merge_size**2
    token = _placeholder(model, processor.tokenizer, prompt)
    wrapped = processor.image_prompt.replace(processor.image_token, token)
    text = _with_video(prompt, token, wrapped, count)
    batch = {**processor.tokenizer(text, return_tensors="pt"), "pixel_values_videos": patches,
             "video_grid_thw": torch.tensor([grid])}
    if model.config.model_type == "qwen2_5_vl":
        fps = video.sampled_fps or DEFAULT_FPS
        batch["second_per_grid_ts"] = torch.tensor([images.temporal_patch_size / fps])
    return batch


def _onevision(model, processor, video: Video, prompt: str, config: dict) -> dict:
    vision = model.config.vision_config
    size = config.get("size") or {}
    side = (int(size.get("width", vision.image_size)), int(size.get("height", vision.image_size)))
    mean, std = config.get("image_mean", CLIP_MEAN), config.get("image_std", CLIP_STD)
    frames = np.stack([_normalised(f, side, mean, std) for f in video.frames])  # (F, 3, H, W)
    num_patches = (side[1] // vision.patch_size) * (side[0] // vision.patch_size)
    per_frame = int(_pooled_sources(model, num_patches).numel())
    token = _placeholder(model, processor.tokenizer, prompt)
    text = _with_video(prompt, token, token, len(video.frames) * per_frame + 1)  # + newline
    return {**processor.tokenizer(text, return_tensors="pt"),
            "pixel_values_videos": torch.from_numpy(frames)[None]}


BUILDERS = {"video_llava": _video_llava, "qwen2_vl": _qwen, "qwen2_5_vl": _qwen,
            "llava_onevision": _onevision}


def video_batch(model, processor, model_type: str, video: Video, prompt: str,
                video_config: dict) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and the video tensors ``generate_pruned`` takes."""
    builder = BUILDERS.get(model_type)
    if builder is None:
        raise PruningError(f"--video: {model_type} checkpoints take images only; videos run "
                           f"on {', '.join(sorted(set(BUILDERS)))}")
    return builder(model, processor, video, prompt, video_config)


class VideoLlavaTextProcessor:
    """``processor(images=..., text=..., return_tensors="pt")`` for Video-LLaVA checkpoints:
    transformers 5 cannot build ``VideoLlavaProcessor`` without torchvision (its video
    processor slot), so this pairs the directory's tokenizer with its
    ``VideoLlavaImageProcessor``. Each ``<image>`` becomes (H/p)·(W/p) placeholders, plus the
    CLS unless the strategy is "default" (``VideoLlavaProcessor.replace_image_token``)."""

    def __init__(self, tokenizer, image_processor, model):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model = model
        token_id = config_token_id(model, "image_token_id", "image_token_index")
        self.image_token = tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(self.image_token, str):
            raise PruningError(f"the tokenizer has no token for the model's image token id "
                               f"{token_id}")

    def __call__(self, images, text: str, return_tensors: str = "pt") -> dict:
        images = list(images) if isinstance(images, list | tuple) else [images]
        pixels = self.image_processor(images=images, return_tensors="pt",
                                      return_legacy_image_output=False)["pixel_values"]  # (N, 3, H, W)
        patch = self.model.config.vision_config.patch_size
        count = (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch)
        if self.model.config.vision_feature_select_strategy != "default":
            count += 1  # "full" keeps the CLS
        pieces = text.split(self.image_token)
        if len(pieces) - 1 != len(images):
            raise PruningError(f"the prompt holds {len(pieces) - 1} {self.image_token} tokens "
                               f"for {len(images)} images")
        expanded = pieces[0] + "".join(self.image_token * count + p for p in pieces[1:])
        return {**self.tokenizer(expanded, return_tensors=return_tensors),
                "pixel_values": pixels}


def load_video_llava_processor(directory: Path, model) -> VideoLlavaTextProcessor:
    """The directory's tokenizer and ``VideoLlavaImageProcessor`` (preprocessor_config.json)."""
    from transformers import AutoTokenizer, VideoLlavaImageProcessor

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        images = VideoLlavaImageProcessor.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        text = str(exc).strip()
        raise PruningError(
            f"--model {directory}: no tokenizer / preprocessor_config.json in the directory "
            f"(save them with save_pretrained next to the model): "
            f"{text.splitlines()[0] if text else type(exc).__name__}") from exc
    return VideoLlavaTextProcessor(tokenizer, images, model)

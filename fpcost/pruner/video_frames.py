"""A video for ``fpcost generate --video``: an animated image or a directory of frames.

transformers' video processors decode files with torchvision / PyAV and need torchvision to
run at all (absent here), so videos come in as what PIL reads: an animated GIF, WebP or PNG
(APNG), or a directory of frame images taken in name order. ``read_video(path, num_frames)``
samples ``num_frames`` of them uniformly, as ``BaseVideoProcessor.sample_frames`` does
(indices ``arange(0, total, total / num_frames)`` truncated to integers), and returns RGB PIL
frames and the sampled frame rate (Qwen2.5-VL's ``second_per_grid_ts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageSequence, UnidentifiedImageError

from fpcost.costmodel.workload import MAX_FRAMES  # the cost model's bound on --frames
from fpcost.pruner.errors import PruningError
from fpcost.pruner.inputs import check_pixel_count, open_image

# transformers' VideoMetadata.sampled_fps when the source has no frame rate (a directory)
DEFAULT_FPS = 24.0
MS_PER_S = 1000.0  # GIF / WebP / APNG frame durations are in milliseconds


@dataclass(frozen=True)
class Video:
    """Sampled RGB frames (all one size), how many the source held, and the sampled frames
    per second (None when the source gives no frame durations)."""

    frames: tuple[Image.Image, ...]
    num_source_frames: int
    sampled_fps: float | None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every frame."""
        return self.frames[0].size


def sample_indices(total: int, num_frames: int) -> list[int]:
    """``num_frames`` indices spread uniformly over ``total`` frames, as transformers'
    ``BaseVideoProcessor.sample_frames``: ``torch.arange(0, total, total / num_frames).int()``."""
    if not 1 <= num_frames <= total:
        raise PruningError(f"--frames {num_frames}: the video has {total} frame(s); "
                           f"give 1 to {total}")
    return torch.arange(0, total, total / num_frames).int().tolist()[:num_frames]


def _directory_frames(path: Path, num_frames: int) -> tuple[list[Image.Image], int, None]:
    """The sampled frames of a directory (only those are decoded), its frame count; no fps."""
    names = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not names:
        raise PruningError(f"VIDEO {path}: an empty directory (give frame images, taken in "
                           "name order, or an animated GIF / WebP / PNG)")
    picked = [names[i] for i in sample_indices(len(names), num_frames)]
    return [open_image(name) for name in picked], len(names), None  # one-line errors


def _animated_frames(path: Path, num_frames: int) -> tuple[list[Image.Image], int, float | None]:
    """The sampled frames of an animated image (only those are kept, as RGB), its frame
    count and frame rate (None unless every frame states its duration)."""
    try:
        with Image.open(path) as source:
            count = getattr(source, "n_frames", 1)
            if count < 2:
                raise PruningError(
                    f"VIDEO {path}: a still image, not a video (give an animated GIF / WebP "
                    "/ PNG or a directory of frames, or drop --video for an image)")
            check_pixel_count(source.size, path)
            wanted = set(sample_indices(count, num_frames))
            frames, durations_ms = [], []
            for index, frame in enumerate(ImageSequence.Iterator(source)):
                if index in wanted:
                    frames.append(frame.convert("RGB"))
                durations_ms.append(frame.info.get("duration"))
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as exc:
        raise PruningError(f"VIDEO {path}: not a readable animated image or directory "
                           f"of frames ({exc})") from exc
    known = all(isinstance(d, int | float) and d > 0 for d in durations_ms)
    return frames, count, (count * MS_PER_S / sum(durations_ms) if known else None)


def read_video(path: Path | str, num_frames: int) -> Video:
    """``num_frames`` frames of ``path`` (module doc), RGB, sampled uniformly."""
    path = Path(path)
    if isinstance(num_frames, bool) or not 1 <= num_frames <= MAX_FRAMES:
        raise PruningError(f"--frames {num_frames}: give 1 to {MAX_FRAMES} frames")
    if path.is_dir():
        frames, total, fps = _directory_frames(path, num_frames)
    elif path.is_file():
        frames, total, fps = _animated_frames(path, num_frames)
    else:
        raise PruningError(f"VIDEO {path}: no such file or directory")
    sizes = {frame.size for frame in frames}
    if len(sizes) > 1:
        raise PruningError(f"VIDEO {path}: frames of different sizes "
                           f"({', '.join(f'{w}x{h}' for w, h in sorted(sizes))}); a video's "
                           "frames share one size")
    sampled_fps = None if fps is None else num_frames / total * fps
    return Video(tuple(frame.convert("RGB") for frame in frames), total, sampled_fps)

"""Videos for ``fpcost generate --video``: frames read and sampled (video_frames.py) and Qwen's
temporal-pair patches built from the PIL image processor (video_inputs.py), by hand."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from fpcost.pruner.errors import PruningError
from fpcost.pruner.video_frames import read_video, sample_indices
from fpcost.pruner.video_inputs import default_num_frames, qwen_video_patches, qwen_video_pixel_limits


def frames(count: int, height: int = 30, width: int = 40, seed: int = 0) -> list[Image.Image]:
    """``count`` random RGB frames, frame i's red channel at a distinct level (i * 20)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        pixels = (rng.random((height, width, 3)) * 255).astype("uint8")
        pixels[..., 0] = i * 20
        out.append(Image.fromarray(pixels))
    return out


def save_apng(path, images, duration_ms: int = 100):
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path


def test_sample_indices_spread_as_transformers_samples():
    # BaseVideoProcessor.sample_frames: torch.arange(0, total, total / num_frames).int()
    assert sample_indices(10, 4) == [0, 2, 5, 7]
    assert sample_indices(8, 8) == list(range(8))
    assert sample_indices(9, 1) == [0]
    for total in range(1, 40):
        for num in range(1, total + 1):
            got = sample_indices(total, num)
            assert len(got) == num and got == sorted(set(got)) and got[-1] < total


def test_an_animated_png_is_sampled_in_order(tmp_path):
    path = save_apng(tmp_path / "clip.png", frames(10), duration_ms=50)  # 20 fps
    video = read_video(path, 4)
    assert video.num_source_frames == 10 and video.size == (40, 30)
    assert [f.getpixel((0, 0))[0] for f in video.frames] == [0, 40, 100, 140]  # frames 0 2 5 7
    assert video.sampled_fps == pytest.approx(4 / 10 * 20)


def test_a_directory_of_frames_is_read_in_name_order(tmp_path):
    for i, frame in enumerate(frames(3)):
        frame.save(tmp_path / f"f{2 - i:02d}.png")  # f02 = frame 0, f01 = frame 1, f00 = 2
    video = read_video(tmp_path, 3)
    assert [f.getpixel((0, 0))[0] for f in video.frames] == [40, 20, 0]
    assert video.sampled_fps is None  # no frame rate in a directory


@pytest.mark.parametrize("num_frames, message", [
    (0, "--frames 0: give 1 to"),
    (11, "--frames 11: the video has 10 frame(s); give 1 to 10"),
])
def test_bad_frame_counts(tmp_path, num_frames, message):
    path = save_apng(tmp_path / "clip.png", frames(10))
    with pytest.raises(PruningError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_video(path, num_frames)


def test_bad_videos_are_named(tmp_path):
    frames(1)[0].save(tmp_path / "still.png")
    with pytest.raises(PruningError, match="a still image, not a video"):
        read_video(tmp_path / "still.png", 1)
    (tmp_path / "junk.gif").write_bytes(b"GIF89a not really")
    with pytest.raises(PruningError, match="not a readable animated image"):
        read_video(tmp_path / "junk.gif", 1)
    with pytest.raises(PruningError, match="no such file or directory"):
        read_video(tmp_path / "missing.gif", 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PruningError, match="an empty directory"):
        read_video(tmp_path / "empty", 1)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    frames(1)[0].save(mixed / "a.png")
    frames(1, height=20)[0].save(mixed / "b.png")
    with pytest.raises(PruningError, match="frames of different sizes"):
        read_video(mixed, 2)
    (mixed / "b.png").write_bytes(b"not a png")
    with pytest.raises(PruningError, match="cannot read image .*b.png"):
        read_video(mixed, 2)


def test_video_config_settings():
    assert default_num_frames({}) == 8 and default_num_frames({"num_frames": 16}) == 16
    assert default_num_frames({"num_frames": True}) == 8
    assert qwen_video_pixel_limits({}) == (128 * 28 * 28, 768 * 28 * 28)
    assert qwen_video_pixel_limits({"size": {"shortest_edge": 10, "longest_edge": 20}}) == (10, 20)
    assert qwen_video_pixel_limits({"min_pixels": 5, "max_pixels": 6}) == (5, 6)


LIMITS = (4 * 28 * 28, 64 * 28 * 28)


def test_a_frame_repeated_twice_gives_the_image_processors_patches_bit_for_bit():
    images = Qwen2VLImageProcessorPil(min_pixels=LIMITS[0], max_pixels=LIMITS[1])
    frame = frames(1, 60, 90)[0]
    patches, grid = qwen_video_patches(images, [frame, frame], LIMITS)
    own = images(images=[frame], return_tensors="pt")
    assert grid == (1, 4, 6) and own["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert patches.dtype == own["pixel_values"].dtype
    assert torch.equal(patches, own["pixel_values"])


def test_pairs_take_one_frame_each_and_an_odd_count_repeats_the_last():
    images = Qwen2VLImageProcessorPil(min_pixels=LIMITS[0], max_pixels=LIMITS[1])
    clip = frames(3, 60, 90)
    patches, grid = qwen_video_patches(images, clip, LIMITS)
    assert grid == (2, 4, 6) and patches.shape == (2 * 24, 3 * 2 * 14 * 14)
    # (t·h·w, C, T, P, P): pair 0 = frames 0, 1; pair 1 = frame 2 twice (patchify's padding)
    split = patches.view(2, 24, 3, 2, 14, 14)
    alone = [images(images=[f], return_tensors="pt")["pixel_values"].view(24, 3, 2, 14, 14)[:, :, 0]
             for f in clip]
    assert torch.equal(split[0, :, :, 0], alone[0]) and torch.equal(split[0, :, :, 1], alone[1])
    assert torch.equal(split[1, :, :, 0], alone[2]) and torch.equal(split[1, :, :, 1], alone[2])


def _video_processor_patchify(video: torch.Tensor, patch: int = 14, merge: int = 2,
                              temporal: int = 2) -> torch.Tensor:
    """Qwen2VLVideoProcessor.patchify's layout, restated: (F, C, H, W) -> (t·h·w, C·T·P·P)."""
    num, channels, height, width = video.shape
    grid_t, grid_h, grid_w = num // temporal, height // patch, width // patch
    view = video.view(grid_t, temporal, channels, grid_h // merge, merge, patch,
                      grid_w // merge, merge, patch)
    # (t, h/m, w/m, m, m, C, T, P, P)
    return view.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(grid_t * grid_h * grid_w, -1)


def test_the_layout_is_the_video_processors():
    images = Qwen2VLImageProcessorPil(min_pixels=LIMITS[0], max_pixels=LIMITS[1])
    clip = frames(4, 60, 90)
    patches, grid = qwen_video_patches(images, clip, LIMITS)
    mean = torch.tensor(images.image_mean).view(3, 1, 1)
    std = torch.tensor(images.image_std).view(3, 1, 1)
    # smart_resize(60, 90) within LIMITS -> 56 x 84; PIL bicubic as the image processor
    video = torch.stack([
        (torch.from_numpy(np.asarray(f.resize((84, 56), Image.Resampling.BICUBIC), np.float32))
         .permute(2, 0, 1) / 255 - mean) / std
        for f in clip])  # (4, 3, 56, 84)
    assert grid == (2, 4, 6)
    torch.testing.assert_close(patches, _video_processor_patchify(video), atol=1e-5, rtol=0)

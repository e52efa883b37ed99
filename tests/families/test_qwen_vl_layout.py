"""Qwen2-VL / Qwen2.5-VL visual-token layout: hand counts, and transformers' own image
processor (the PIL one: the fast one needs torchvision) and window index."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies_qwen import qwen_grids

from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.families.qwen_vl_layout import (
    VisionGrid,
    full_attention_seqlens,
    image_grid,
    num_temporal_patches,
    smart_resize,
    video_grid,
    window_attention_seqlens,
)

# --- hand counts ------------------------------------------------------------------------


def test_1280x720_gives_1196_tokens():
    # 720 / 28 = 25.7 → 26 · 28 = 728; 1280 / 28 = 45.7 → 46 · 28 = 1288 (area within limits)
    assert smart_resize(720, 1280) == (728, 1288)
    grid = image_grid(720, 1280)
    assert grid == VisionGrid(1, 52, 92)
    assert grid.num_patches == 4784 and grid.num_merged_tokens() == 1196


def test_rounding_is_pythons_round_half_to_even():
    # 42 / 28 = 1.5 → round → 2 (even); 70 / 28 = 2.5 → round → 2 (even), not 3
    assert smart_resize(42, 2800) == (56, 2800)
    assert smart_resize(70, 2800) == (56, 2800)


def test_min_and_max_pixels_rescale_the_image():
    # 28 x 28 = 784 px < 3136: beta = sqrt(3136 / 784) = 2, so 56 x 56
    assert smart_resize(28, 28) == (56, 56)
    # 4000 x 4000 > max 1003520 (transformers' own default): beta = sqrt(16e6 / 1003520)
    # = 3.993; 4000 / beta = 1001.8 = 35.8 · 28, floored to 35 · 28 = 980
    assert smart_resize(4000, 4000, max_pixels=1003520) == (980, 980)


def test_aspect_ratio_above_200_is_refused_naming_the_size():
    with pytest.raises(WorkloadError, match=r"image size 201x1 .*aspect ratio above 200"):
        smart_resize(1, 201)
    assert smart_resize(1, 200) == (28, 812)  # exactly 200 is accepted


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "28"])
def test_bad_sizes_and_limits_are_refused(bad):
    with pytest.raises(WorkloadError):
        smart_resize(bad, 100)
    with pytest.raises(WorkloadError, match="--min-pixels"):
        smart_resize(100, 100, min_pixels=bad)


def test_min_above_max_is_refused():
    with pytest.raises(WorkloadError, match="--min-pixels 5000 is larger than --max-pixels 4000"):
        smart_resize(100, 100, min_pixels=5000, max_pixels=4000)


def test_video_pads_odd_frame_counts_with_the_last_frame():
    # Qwen2VLVideoProcessor.patchify repeats the last frame up to a multiple of 2
    assert [num_temporal_patches(f) for f in (1, 2, 3, 8, 9)] == [1, 1, 2, 4, 5]
    grid = video_grid(9, 224, 224)
    assert grid == VisionGrid(5, 16, 16) and grid.num_merged_tokens() == 5 * 64
    with pytest.raises(WorkloadError, match="--frames 0"):
        num_temporal_patches(0)


def test_window_layout_by_hand():
    # 1280x720: 52 x 92 patches = 26 x 46 merged units; windows of 4 x 4 units:
    # rows 4,4,4,4,4,4,2 and columns 4 x 11, 2 → 6·11 full windows of 64 patches, 6 right-edge
    # windows of 4·2·4 = 32, 11 bottom windows of 2·4·4 = 32 and one corner of 2·2·4 = 16.
    seqlens = window_attention_seqlens([image_grid(720, 1280)], window_size=112)
    assert len(seqlens) == 7 * 12
    assert sorted(seqlens) == sorted([64] * 66 + [32] * 6 + [32] * 11 + [16])
    assert seqlens[11] == 32 and seqlens[-1] == 16  # row-major: end of the first row, corner
    assert sum(seqlens) == 4784


def test_full_attention_is_per_temporal_slice():
    grids = [VisionGrid(1, 4, 6), VisionGrid(3, 2, 2)]
    assert full_attention_seqlens(grids) == [24, 4, 4, 4]


def test_the_family_modules_load_without_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            "import fpcost.costmodel.families.qwen_vl_ops, fpcost.costmodel.families.qwen_vl_params\n"
            "import fpcost.costmodel.families.qwen_vl_presets\n"
            "print(sorted(m for m in ('pandas', 'click', 'rich') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- against transformers -----------------------------------------------------------------

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    Qwen2VLImageProcessorPil,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    smart_resize as hf_smart_resize,
)
from transformers.vision_utils import (  # noqa: E402
    get_vision_cu_seqlens,
    get_vision_window_index,
)

LIMITS = [(3136, 12845056), (3136, 1003520), (56 * 56 * 4, 28 * 28 * 256), (784, 784 * 20),
          (100_000, 200_000)]


def _within_aspect(size):
    w, h = size
    return max(w, h) / min(w, h) <= 200


sizes = st.tuples(st.integers(1, 1100), st.integers(1, 1100)).filter(_within_aspect)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=sizes, limits=st.sampled_from(LIMITS))
def test_grid_equals_the_pil_image_processor(size, limits):
    """Real preprocessing of a blank image: image_grid_thw and the merged-token count."""
    width, height = size
    min_pixels, max_pixels = limits
    processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    out = processor(images=Image.new("RGB", (width, height)), return_tensors="np")
    t, h, w = (int(v) for v in out["image_grid_thw"][0])
    grid = image_grid(height, width, min_pixels, max_pixels)
    assert (grid.t, grid.h, grid.w) == (t, h, w)
    assert grid.num_patches == out["pixel_values"].shape[0]
    assert grid.num_merged_tokens() == t * h * w // 4


@settings(max_examples=300, deadline=None)
@given(size=st.tuples(st.integers(1, 60_000), st.integers(1, 60_000)),
       limits=st.sampled_from(LIMITS))
def test_sizes_up_to_60000_px_match_transformers_rule(size, limits):
    """Large sizes (no pixels allocated): the processor's patch count and its smart_resize,
    including its refusal of aspect ratios above 200."""
    width, height = size
    min_pixels, max_pixels = limits
    if max(size) / min(size) > 200:
        with pytest.raises(ValueError):
            hf_smart_resize(height, width, 28, min_pixels, max_pixels)
        with pytest.raises(WorkloadError, match=f"{width}x{height}"):
            smart_resize(height, width, 28, min_pixels, max_pixels)
        return
    assert smart_resize(height, width, 28, min_pixels, max_pixels) == hf_smart_resize(
        height, width, 28, min_pixels, max_pixels)
    processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    assert image_grid(height, width, min_pixels, max_pixels).num_patches == (
        processor.get_number_of_image_patches(height, width, {}))


@settings(max_examples=60, deadline=None)
@given(grids=qwen_grids, window_size=st.sampled_from([56, 112, 140, 224]))
def test_window_seqlens_equal_get_vision_window_index(grids, window_size):
    grid_thw = torch.tensor([[g.t, g.h, g.w] for g in grids])
    _, cu = get_vision_window_index(grid_thw, spatial_merge_size=2, window_size=window_size,
                                    patch_size=14)
    assert window_attention_seqlens(grids, window_size) == torch.diff(cu).tolist()
    cu_full = get_vision_cu_seqlens(grid_thw)
    assert full_attention_seqlens(grids) == torch.diff(cu_full).tolist()


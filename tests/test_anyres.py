"""LLaVA-NeXT AnyRes: fpcost's arithmetic against transformers' own helper functions, for
many image sizes; the CLI's --image-size; bad sizes."""

import itertools
import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings

from fpcost.cli.main import main
from fpcost.costmodel.anyres import anyres_layout, default_image_size, parse_image_size
from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.pipeline import visual_layout
from fpcost.costmodel.presets import LLAVA_NEXT_PINPOINTS, PRESETS

from .strategies import image_sizes

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers.models.llava_next import modeling_llava_next as hf  # noqa: E402
from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor  # noqa: E402

PINS = [list(p) for p in LLAVA_NEXT_PINPOINTS]  # llava-v1.6 [height, width] pairs
CROP, PATCH = 336, 14
SIDE = CROP // PATCH  # 24 patches per crop side
SIDES = [1, 2, 13, 100, 224, 335, 336, 337, 500, 640, 672, 673, 800, 1000, 1008, 1024, 1344,
         2000, 4000]


def transformers_model_count(width: int, height: int) -> tuple[int, int]:
    """(crops the tower runs, visual tokens) as LlavaNextModel computes them: the crop count
    of get_image_features, the grid of pack_image_features after unpad_image, one newline per
    row, the base image's 576 tokens ("default" strategy: CLS dropped)."""
    crops = hf.image_size_to_num_patches([height, width], PINS, CROP)
    rows, cols = hf.get_anyres_image_grid_shape([height, width], PINS, CROP)
    grid = torch.empty(1, rows * SIDE, cols * SIDE, device="meta")  # (C, H, W)
    unpadded = hf.unpad_image(grid, [height, width])
    h, w = unpadded.shape[1:]
    return crops, SIDE * SIDE + h * w + h


def transformers_processor_count(width: int, height: int) -> int:
    """The processor's placeholder count: _get_number_of_features, minus the CLS it adds
    back for the "default" strategy (replace_image_token)."""
    fake = SimpleNamespace(image_processor=SimpleNamespace(image_grid_pinpoints=PINS),
                           patch_size=PATCH, num_additional_image_tokens=1)
    fake._get_unpadded_features = lambda *a: LlavaNextProcessor._get_unpadded_features(fake, *a)
    return LlavaNextProcessor._get_number_of_features(fake, height, width, CROP, CROP) - 1


def ours(width, height):
    layout = anyres_layout(width, height, LLAVA_NEXT_PINPOINTS, CROP, PATCH)
    return layout.num_crops, layout.num_visual_tokens


@pytest.mark.parametrize("width, height", list(itertools.product(SIDES, SIDES)))
def test_grid_of_sizes_matches_transformers(width, height):
    crops, tokens = transformers_model_count(width, height)
    assert ours(width, height) == (crops, tokens)
    assert transformers_processor_count(width, height) == tokens


@settings(max_examples=300, deadline=None)
@given(size=image_sizes)
def test_random_sizes_match_transformers(size):
    width, height = size
    assert ours(width, height) == transformers_model_count(width, height)


def test_1344x336():
    # best resolution 336 x 1008 (h x w): 1 x 3 crops + base; grid 24 x 72 unpadded to 18 rows
    layout = anyres_layout(1344, 336, LLAVA_NEXT_PINPOINTS, CROP, PATCH)
    assert (layout.best_height, layout.best_width, layout.num_crops) == (336, 1008, 4)
    assert (layout.unpadded_rows, layout.unpadded_cols) == (18, 72)
    assert layout.num_visual_tokens == 576 + 18 * 72 + 18 == 1890
    assert transformers_model_count(1344, 336) == (4, 1890)


def test_cli_image_size_gives_the_transformers_count(capsys):
    """Must-show: `fpcost estimate --model llava-next-7b --image-size 1344x336`."""
    code = main(["estimate", "--model", "llava-next-7b", "--image-size", "1344x336", "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    crops, tokens = transformers_model_count(1344, 336)
    assert code == 0 and data["workload"]["num_visual_tokens"] == tokens
    assert data["workload"]["num_vision_images_per_sample"] == crops
    # the tower runs every crop: 4 × 577 token rows through q_proj
    code = main(["estimate", "--model", "llava-next-7b", "--image-size", "1344x336", "--breakdown",
                 "--stage", "vision", "--format", "json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["operators"]}
    assert rows["q_proj"]["act_read_bytes"] == 24 * 4 * 577 * 1024 * 2
    # the table view prints the count too
    main(["estimate", "--model", "llava-next-7b", "--image-size", "1344x336"])
    assert f"{tokens} visual" in capsys.readouterr().out


def test_default_size_is_the_largest_pinpoint():
    assert default_image_size(LLAVA_NEXT_PINPOINTS) == (672, 672)
    # without an image size: the nominal 5 x 576 the issue and the LLaVA-NeXT release quote
    layout = visual_layout(PRESETS["llava-next-7b"])
    assert layout.num_visual_tokens == PRESETS["llava-next-7b"].default_num_visual_tokens == 2880
    assert layout.num_images == 5
    # with the size given: transformers' exact count, unpadding and 48 newline tokens included
    exact = visual_layout(PRESETS["llava-next-7b"], (672, 672))
    assert transformers_model_count(672, 672) == (5, 2928) == (exact.num_images, exact.num_visual_tokens)
    assert layout.num_projected_tokens == exact.num_projected_tokens == 5 * 576  # before unpadding


@pytest.mark.parametrize("text", ["0x336", "336x0", "-5x10", "12.5x336", "336", "axb", "336x336x3",
                                  "", "1e3x336"])
def test_bad_sizes(text):
    with pytest.raises(WorkloadError) as info:
        parse_image_size(text)
    assert "\n" not in str(info.value)


def test_parse():
    assert parse_image_size("1344x336") == (1344, 336)
    assert parse_image_size(" 640 X 480 ") == (640, 480)

"""LLaVA-OneVision adapter: keep-all equals plain generate (AnyRes, the max-N shrink, several
images per sample, videos); pruning keeps fewer, counted over the positions the LLM receives.

Tiny model and image sizes: tiny_onevision.py (image 0 not shrunk, image 1 shrunk)."""

import pytest
import torch
from tiny_models import (
    IMAGE_TOKEN_ID,
    NUM_PATCHES,
    VIDEO_TOKEN_ID,
    StridePruner,
    left_padded,
    pixel_values,
    prompt,
)
from tiny_onevision import (
    OV_CROPS,
    OV_NEWLINES,
    OV_PACKED,
    OV_POOLED,
    OV_SIZES,
    OV_VISUAL,
    tiny_llava_onevision,
)

from fpcost.pruner.adapters import KeepAll, PruningError, generate_pruned
from fpcost.pruner.adapters.llava_next import NEWLINE
from fpcost.pruner.adapters.llava_onevision import dominant_sources, packed_sources
from fpcost.pruner.adapters.stages import StageClock
from fpcost.pruner.methods import get_pruner

GREEDY = {"max_new_tokens": 5, "do_sample": False}
FRAMES = 3


@pytest.fixture(scope="module")
def model():
    return tiny_llava_onevision(seed=0)


def _images(batch, sizes=OV_SIZES):
    ids, mask = left_padded(
        [
            prompt(OV_PACKED[0], [1, 5, 6], [7, 8]),
            prompt(OV_PACKED[1], [1, 9], [10, 11, 12, 13, 14]),
        ][:batch]
    )
    return {"input_ids": ids, "attention_mask": mask,
            "pixel_values": pixel_values(batch, 8, 5), "image_sizes": sizes[:batch]}


def _videos(batch):
    tokens = FRAMES * OV_POOLED + 1
    ids, mask = left_padded(
        [prompt(tokens, [1, 5, 6], [7, 8], VIDEO_TOKEN_ID),
         prompt(tokens, [1, 9], [10, 11, 12, 13, 14], VIDEO_TOKEN_ID)][:batch]
    )
    return {"input_ids": ids, "attention_mask": mask,
            "pixel_values_videos": pixel_values(batch, 9, FRAMES)}


def _plain(model, inputs):
    out = model.generate(**inputs, **GREEDY)
    return out[:, inputs["input_ids"].shape[1] :]


def test_tiny_sizes_pack_as_documented(model):
    inputs = _images(2)
    with torch.no_grad():
        packed = model.model.get_image_features(inputs["pixel_values"], OV_SIZES).pooler_output
    assert [p.shape[0] for p in packed] == OV_PACKED
    sources, shrunk = packed_sources(model, OV_CROPS, NUM_PATCHES, OV_SIZES)
    assert shrunk == [False, True]
    assert [s.numel() for s in sources] == OV_PACKED
    assert [int((s == NEWLINE).sum()) for s in sources] == OV_NEWLINES


def test_unshrunk_source_map_reproduces_the_models_packing(model):
    inputs = _images(1)
    with torch.no_grad():
        packed = model.model.get_image_features(
            inputs["pixel_values"], OV_SIZES[:1]).pooler_output[0]
        layer = model.model.vision_tower(
            inputs["pixel_values"][0, :3], output_hidden_states=True).hidden_states[-1]
        projected = model.model.multi_modal_projector(layer).flatten(0, 1)  # (3 * 16, D)
    sources = packed_sources(model, OV_CROPS[:1], NUM_PATCHES, OV_SIZES[:1])[0][0]
    visual = sources != NEWLINE
    torch.testing.assert_close(projected[sources[visual]], packed[visual], rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 6, 6, 4), (27, 27, 14, 14), (5, 9, 3, 4), (4, 4, 2, 2)])
def test_dominant_source_has_the_largest_bilinear_weight(shape):
    """Resizing the one-hot map of every source bilinearly gives each source's weight at each
    target position; the dominant source is the heaviest (ties: either of the tied ones)."""
    h, w, rows, cols = shape
    one_hot = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    weights = torch.nn.functional.interpolate(one_hot, size=(rows, cols), mode="bilinear")
    weights = weights[:, 0].flatten(1)  # (h * w, rows * cols)
    dominant = dominant_sources(torch.arange(h * w).view(h, w), rows, cols).flatten()
    best = weights.max(dim=0).values
    assert torch.equal(weights[dominant, torch.arange(rows * cols)], best)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("budget", [None, 1000])
def test_keep_all_equals_plain_generate_on_images(model, batch, budget):
    inputs = _images(batch)
    result = generate_pruned(model, inputs, KeepAll(), budget=budget, **GREEDY)
    assert torch.equal(result.sequences, _plain(model, inputs))
    assert result.num_kept == result.num_tokens == OV_PACKED[:batch]


def test_keep_all_with_several_images_in_one_sample(model):
    """batch_num_images [2, 1]: sample 0's two images get the base crop and one newline each."""
    single = NUM_PATCHES + 1
    ids, mask = left_padded([
        prompt(single, [1, 5], [6]) + prompt(single, [7], [8, 9]),
        prompt(OV_PACKED[1], [1, 9], [10, 11]),
    ])
    sizes = torch.tensor([[10, 50], [30, 20], [56, 40]])
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_values(3, 4, 5),
              "image_sizes": sizes, "batch_num_images": torch.tensor([2, 1])}
    result = generate_pruned(model, inputs, KeepAll(), **GREEDY)
    assert torch.equal(result.sequences, _plain(model, inputs))
    assert result.num_tokens_per_unit == [[single, single], [OV_PACKED[1]]]
    pruned = generate_pruned(model, inputs, StridePruner((2,)), **GREEDY)
    # stride 2 keeps the even patches: 8 of each base; of the shrunk image's dominant sources
    # (columns 1, 3, 4, 6 of the crop grid: patch columns 1, 3, 0, 2) two columns of 6 rows
    assert pruned.num_kept_per_unit == [[8 + 1, 8 + 1], [8 + 12 + 6]]


@pytest.mark.parametrize("batch", [1, 2])
def test_keep_all_equals_plain_generate_on_videos(model, batch):
    inputs = _videos(batch)
    result = generate_pruned(model, inputs, KeepAll(), **GREEDY)
    assert torch.equal(result.sequences, _plain(model, inputs))
    assert result.num_kept == result.num_tokens == [FRAMES * OV_POOLED + 1] * batch


def test_keep_all_with_an_image_and_a_video(model):
    ids, mask = left_padded([
        prompt(OV_PACKED[1], [1, 5, 6], [7, 8]),
        prompt(FRAMES * OV_POOLED + 1, [1, 9], [10, 11, 12], VIDEO_TOKEN_ID),
    ])
    inputs = {"input_ids": ids, "attention_mask": mask,
              "pixel_values": pixel_values(1, 8, 5), "image_sizes": OV_SIZES[1:],
              "pixel_values_videos": pixel_values(1, 9, FRAMES)}
    result = generate_pruned(model, inputs, KeepAll(), **GREEDY)
    assert torch.equal(result.sequences, _plain(model, inputs))
    assert result.num_tokens == [OV_PACKED[1], FRAMES * OV_POOLED + 1]


def test_pruned_images_keep_the_hand_counted_positions(model):
    """StridePruner((2, 3)): crop i keeps every 2nd or 3rd patch. Image 0 (not shrunk, crops
    0-2, strides 2, 3, 2): base 8, unpadded rows 1-2 of crops 1 and 2 keep 2 + 4 -> 14 + 2
    newlines. Image 1 (shrunk 8 x 6 -> 6 x 4, crops 3-7, strides 3, 2, 3, 2, 3): base 6; the
    dominant sources are rows 0, 2, 3, 4, 6, 7 and columns 1, 3, 4, 6 of the 8 x 8 crop grid,
    of which crop 5's patches 0 and 12 and crop 7's 0 and 12 are kept -> 10 + 6 newlines."""
    inputs = _images(2)
    result = generate_pruned(model, inputs, StridePruner((2, 3)), **GREEDY)
    assert result.num_tokens == OV_PACKED
    assert result.num_kept == [16, 16]
    assert (result.input_ids == IMAGE_TOKEN_ID).sum(dim=1).tolist() == [16, 16]
    assert result.input_length < inputs["input_ids"].shape[1]


@pytest.mark.parametrize("budget", [1, 10, 32, 40])
def test_budget_is_exact_over_the_positions_the_llm_receives(model, budget):
    result = generate_pruned(model, _images(2), StridePruner((2, 3)), budget=budget, **GREEDY)
    expected = [min(budget, v) + n for v, n in zip(OV_VISUAL, OV_NEWLINES, strict=True)]
    assert result.num_kept == expected
    assert (result.input_ids == IMAGE_TOKEN_ID).sum(dim=1).tolist() == expected


def test_pruned_videos_keep_the_dominant_sources_of_kept_tokens(model):
    """4 x 4 frames pool to 2 x 2, whose dominant sources are patches 5, 7, 13, 15: stride 2
    keeps none of them, stride 3 keeps 15. Video 0 = frames 0-2 (strides 2, 3, 2) -> 1 + 1
    newline; video 1 = frames 3-5 (3, 2, 3) -> 2 + 1."""
    result = generate_pruned(model, _videos(2), StridePruner((2, 3)), **GREEDY)
    assert result.num_kept == [2, 3]
    assert (result.input_ids == VIDEO_TOKEN_ID).sum(dim=1).tolist() == [2, 3]
    assert result.sequences.shape == (2, 5)


def test_freepruner_on_the_siglip_tower_keeps_fewer(model):
    inputs = _images(2)
    result = generate_pruned(model, inputs, get_pruner("freepruner"), **GREEDY)
    assert all(0 < k < n for k, n in zip(result.num_kept, result.num_tokens, strict=True))
    budgeted = generate_pruned(model, inputs, get_pruner("freepruner"), budget=12, **GREEDY)
    assert budgeted.num_kept == [12 + n for n in OV_NEWLINES]
    video = generate_pruned(model, _videos(2), get_pruner("freepruner"), **GREEDY)
    assert all(0 < k <= n for k, n in zip(video.num_kept, video.num_tokens, strict=True))


def test_stage_clock_times_each_stage(model):
    clock = StageClock()
    generate_pruned(model, _images(1), KeepAll(), stage_clock=clock, **GREEDY)
    assert set(clock.times_s) == {"vision", "projector", "llm"}
    assert all(t > 0 for t in clock.times_s.values())


def test_bad_inputs_raise(model):
    inputs = _images(1)
    del inputs["image_sizes"]
    with pytest.raises(PruningError, match="image_sizes"):
        generate_pruned(model, inputs, KeepAll())
    with pytest.raises(PruningError, match="budget"):
        generate_pruned(model, _images(1), KeepAll(), budget=0)
    inputs = _images(1)
    del inputs["pixel_values"], inputs["image_sizes"]
    with pytest.raises(PruningError, match="pixel_values or pixel_values_videos"):
        generate_pruned(model, inputs, KeepAll())
    with pytest.raises(PruningError, match="budget applies to LLaVA-OneVision images"):
        generate_pruned(model, _videos(1), KeepAll(), budget=4)

    class Merging(KeepAll):
        def encode_and_select(self, vision_model, pixels):
            out = super().encode_and_select(vision_model, pixels)
            out.merged_features = [torch.zeros(16, 32)] * pixels.shape[0]
            out.feature_layer = -1
            return out

    with pytest.raises(PruningError, match="merging pruners"):
        generate_pruned(model, _images(1), Merging())


@pytest.fixture(scope="module")
def released_geometry():
    """The released models' geometry (SigLIP at 384 px, 14 px patches: 729 tokens per crop;
    pinpoints up to 2304 px; anyres_max_9) with tiny widths and depth."""
    from transformers import SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                num_attention_heads=2, image_size=384, patch_size=14,
                                vision_use_head=False)
    return tiny_llava_onevision(seed=0, vision_config=vision, image_grid_pinpoints=None,
                                vision_aspect_ratio="anyres_max_9")


@pytest.mark.parametrize("height, width", [(720, 1280), (2000, 2200), (300, 2304),
                                           (1080, 1920), (100, 100), (4000, 500)])
def test_packed_counts_match_the_cost_model_at_released_geometry(released_geometry, height, width):
    """The adapter's packed positions (the model's own packing) and the cost model's
    llava_onevision layout agree, shrink (2000 x 2200, 1080 x 1920) or not."""
    from fpcost.costmodel.families.llava_onevision import DEFAULT_PINPOINTS, onevision_layout
    from fpcost.pruner.adapters.llava_onevision import num_crops

    sizes = torch.tensor([[height, width]])
    counts = num_crops(released_geometry, sizes, None)
    (sources,), (shrunk,) = packed_sources(released_geometry, counts, 729, sizes)
    layout = onevision_layout(width, height, DEFAULT_PINPOINTS, 384, 14, 9)
    assert counts == [layout.anyres.num_crops]
    assert sources.numel() == layout.num_visual_tokens
    assert shrunk == ((layout.rows, layout.cols)
                      != (layout.anyres.unpadded_rows, layout.anyres.unpadded_cols))


def test_keep_all_equals_plain_generate_through_the_max_9_shrink(released_geometry):
    """1080 x 1920: 3 x 5 crops + base; the unpadded 75 x 135 grid (r = 1.24) is shrunk to
    60 x 108: 729 + 60 * 108 + 60 newlines."""
    sizes = torch.tensor([[1080, 1920]])
    length = 729 + 60 * 108 + 60
    ids, mask = left_padded([prompt(length, [1, 5], [6, 7])])
    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": ids, "attention_mask": mask, "image_sizes": sizes,
              "pixel_values": torch.randn((1, 16, 3, 384, 384), generator=generator)}
    result = generate_pruned(released_geometry, inputs, KeepAll(), max_new_tokens=3,
                             do_sample=False)
    plain = released_geometry.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert torch.equal(result.sequences, plain[:, ids.shape[1]:])
    assert result.num_tokens == [length]

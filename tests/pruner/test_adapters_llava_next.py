"""LLaVA-NeXT adapter: a budget exact after unpadding; keep-all equals plain generate.

Tiny AnyRes: 28 px crops of 4 x 4 patches, grids 1x2, 2x1, 2x2. Image sizes (H, W):
- (10, 50): 1x2 grid -> 3 crops; unpadding keeps 2 of 4 patch rows: 16 base + 2 x 8 + 2
  newlines = 34 packed tokens, 32 of them visual.
- (56, 40): 2x2 grid -> 5 crops; unpadding keeps 6 of 8 patch columns: 16 + 8 x 6 + 8
  newlines = 72 packed tokens, 64 visual.
"""

import pytest
import torch
from tiny_models import (
    IMAGE_TOKEN_ID,
    NUM_PATCHES,
    StridePruner,
    left_padded,
    pixel_values,
    prompt,
    tiny_llava_next,
)

from fpcost.pruner.adapters import KeepAll, PruningError, generate_pruned
from fpcost.pruner.adapters.llava_next import NEWLINE, packed_sources

GREEDY = {"max_new_tokens": 5, "do_sample": False}
SIZES = torch.tensor([[10, 50], [56, 40]])
PACKED, VISUAL, NEWLINES = [34, 72], [32, 64], [2, 8]


@pytest.fixture(scope="module")
def model():
    return tiny_llava_next(seed=0)


def _inputs(batch, sizes=SIZES):
    ids, mask = left_padded(
        [
            prompt(PACKED[0], [1, 5, 6], [7, 8]),
            prompt(PACKED[1], [1, 9], [10, 11, 12, 13, 14]),
        ][:batch]
    )
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixel_values(batch, 8, 5),
        "image_sizes": sizes[:batch],
    }


def _plain(model, inputs):
    out = model.generate(**inputs, **GREEDY)
    return out[:, inputs["input_ids"].shape[1] :]


def test_tiny_sizes_pack_as_documented(model):
    inputs = _inputs(2)
    with torch.no_grad():
        packed = model.model.get_image_features(inputs["pixel_values"], SIZES).pooler_output
    assert [p.shape[0] for p in packed] == PACKED


def test_packed_source_map_reproduces_the_models_packing(model):
    """Gathering the projected crop tokens through the map gives the model's own packed features."""
    inputs = _inputs(2)
    crops = torch.cat(
        [inputs["pixel_values"][0, :3], inputs["pixel_values"][1, :5]]
    )  # (8, 3, 28, 28)
    with torch.no_grad():
        packed = model.model.get_image_features(inputs["pixel_values"], SIZES).pooler_output
        layer = model.model.vision_tower(crops, output_hidden_states=True).hidden_states[-2][:, 1:]
        projected = model.model.multi_modal_projector(layer).flatten(0, 1)  # (8 * 16, D)
    for sources, expected in zip(
        packed_sources(model, [3, 5], NUM_PATCHES, SIZES), packed, strict=True
    ):
        assert int((sources == NEWLINE).sum()) == expected.shape[0] - int(
            (sources != NEWLINE).sum()
        )
        visual = sources != NEWLINE
        torch.testing.assert_close(projected[sources[visual]], expected[visual], rtol=0, atol=1e-6)
        torch.testing.assert_close(
            expected[~visual], model.model.image_newline.expand(int((~visual).sum()), -1)
        )


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("budget", [None, 1000])
def test_keep_all_equals_plain_generate(model, batch, budget):
    inputs = _inputs(batch)
    result = generate_pruned(model, inputs, KeepAll(), budget=budget, **GREEDY)
    assert torch.equal(result.sequences, _plain(model, inputs))
    assert result.num_kept == result.num_tokens == PACKED[:batch]


def test_keep_all_with_two_images_of_one_size(model):
    inputs = _inputs(2, sizes=torch.tensor([[10, 50], [10, 50]]))
    inputs["input_ids"], inputs["attention_mask"] = left_padded(
        [prompt(PACKED[0], [1, 5, 6], [7, 8]), prompt(PACKED[0], [1, 9], [10, 11, 12, 13, 14])]
    )
    result = generate_pruned(model, inputs, KeepAll(), **GREEDY)
    assert torch.equal(result.sequences, _plain(model, inputs))


@pytest.mark.parametrize("budget", [1, 10, 32, 40])
def test_budget_is_exact_after_unpadding(model, budget):
    inputs = _inputs(2)
    result = generate_pruned(model, inputs, StridePruner((2, 3)), budget=budget, **GREEDY)
    expected = [min(budget, v) + n for v, n in zip(VISUAL, NEWLINES, strict=True)]
    assert result.num_kept == expected
    assert (result.input_ids == IMAGE_TOKEN_ID).sum(dim=1).tolist() == expected
    assert result.sequences.shape == (2, 5)
    assert result.input_length < inputs["input_ids"].shape[1]


def test_without_budget_the_pruners_survivors_are_kept(model):
    # image 0, crops 0..2 with strides 2, 3, 2: base keeps 8; unpadding keeps patch rows 1-2
    # (indices 4..11) of crops 1 and 2, where strides 3 and 2 keep 2 and 4 -> 14 + 2 newlines
    result = generate_pruned(model, _inputs(1), StridePruner((2, 3)), **GREEDY)
    assert result.num_kept == [16]


def test_budget_truncates_by_score_and_fills_by_score(model):
    """StridePruner scores favour low patch indices: a budget below the kept count keeps
    the kept tokens with the best scores; above it, fills with the best unkept ones."""
    from fpcost.pruner.adapters.llava_next import choose_positions

    sources = torch.tensor([0, 1, 2, NEWLINE, 3, 4, 5, NEWLINE])
    kept = torch.tensor([False, True, False, True, False, True])
    scores = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    assert choose_positions(sources, kept, scores, None).tolist() == [1, 3, 4, 6, 7]
    assert choose_positions(sources, kept, scores, 2).tolist() == [1, 3, 4, 7]
    assert choose_positions(sources, kept, scores, 4).tolist() == [0, 1, 3, 4, 6, 7]
    assert choose_positions(sources, kept, torch.zeros(6), 4).tolist() == [0, 1, 3, 4, 6, 7]


@pytest.mark.parametrize("budget", [0, -3, 2.5, True])
def test_bad_budget_raises(model, budget):
    with pytest.raises(PruningError, match="budget"):
        generate_pruned(model, _inputs(1), KeepAll(), budget=budget)


def test_missing_image_sizes_and_merging_pruners_raise(model):
    inputs = _inputs(1)
    del inputs["image_sizes"]
    with pytest.raises(PruningError, match="image_sizes"):
        generate_pruned(model, inputs, KeepAll())

    class Merging(KeepAll):
        def encode_and_select(self, vision_model, pixels):
            out = super().encode_and_select(vision_model, pixels)
            out.merged_features = [torch.zeros(16, 32)] * pixels.shape[0]
            out.feature_layer = -2
            return out

    with pytest.raises(PruningError, match="merging pruners"):
        generate_pruned(model, _inputs(1), Merging())


@pytest.mark.parametrize("budget", [1, 3, 5, 8, 12])
def test_freepruner_budget_over_packed_positions_is_the_cli_rule(budget):
    """With every position surviving packing, the adapter's budget keeps exactly what
    ``fpcost prune --budget`` (selection.select_from_entries) keeps: one rule everywhere."""
    from fpcost.pruner.adapters.llava_next import choose_positions
    from fpcost.pruner.budget import admission, select_from_entries

    generator = torch.Generator().manual_seed(budget)
    pivot_entry = torch.randint(1, 6, (1, 12), generator=generator)
    comp_entry = torch.randint(1, 9, (1, 12), generator=generator)
    scores = torch.rand(1, 12, generator=generator)
    cli = select_from_entries(pivot_entry, comp_entry, scores, k=3, budget=budget)
    assert cli.complementary[0].numel() > 0 or budget == cli.pivotal[0].numel()
    sources = torch.tensor([*range(6), NEWLINE, *range(6, 12), NEWLINE])  # 2 rows of 6
    kept = torch.zeros(12, dtype=torch.bool)
    positions = choose_positions(
        sources, kept, scores[0], budget, admission(pivot_entry, comp_entry)[0]
    )
    picked = sources[positions]
    assert sorted(picked[picked != NEWLINE].tolist()) == cli.kept[0].tolist()

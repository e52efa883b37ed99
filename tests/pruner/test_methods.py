"""The pruners behind ``get_pruner`` (methods.py, baselines.py) on tiny random encoders."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import TINY_ENCODER
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

from fpcost.pruner.api import EncoderOutput
from fpcost.pruner.baselines import resolve_count, uniform_grid_indices
from fpcost.pruner.errors import PruningError
from fpcost.pruner.methods import METHODS, get_pruner, method_parameters

# 56 px / 7 px patches: an 8 x 8 grid of 64 patch tokens, 4 layers
TINY = TINY_ENCODER
NUM_PATCHES = 64


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return CLIPVisionModel(CLIPVisionConfig(**TINY)).eval()


@pytest.fixture(scope="module")
def siglip():
    torch.manual_seed(0)
    return SiglipVisionModel(SiglipVisionConfig(**TINY)).eval()


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(2))


def _check_selection(out: EncoderOutput, batch: int):
    selection = out.selection
    assert selection.num_patches == NUM_PATCHES
    assert len(selection.kept) == batch
    for kept in selection.kept:
        values = kept.tolist()
        assert values == sorted(set(values)) and all(0 <= i < NUM_PATCHES for i in values)
        assert 1 <= len(values) <= NUM_PATCHES
    assert out.selection_time_s is not None and out.selection_time_s >= 0


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_clip_and_siglip(method, clip, siglip, pixels):
    for model in (clip, siglip):
        params = {"k": 4} if method == "freepruner" else {}
        out = get_pruner(method, **params).encode_and_select(model, pixels)
        _check_selection(out, 3)
        # the hooks change nothing in the encoder's output
        with torch.no_grad():
            plain = model(pixels, output_hidden_states=True).hidden_states
        for got, want in zip(out.hidden_states, plain, strict=True):
            torch.testing.assert_close(got, want)


def test_keep_all_keeps_everything(clip, pixels):
    out = get_pruner("keep-all").encode_and_select(clip, pixels)
    assert [k.tolist() for k in out.selection.kept] == [list(range(NUM_PATCHES))] * 3


def test_freepruner_reports_its_parts(clip, pixels):
    one_layer = {"pivotal_start_layer": -3, "pivotal_end_layer": -2}
    out = get_pruner("freepruner", k=4, **one_layer).encode_and_select(clip, pixels)
    for kept, pivotal, comp in zip(
        out.selection.kept, out.selection.pivotal, out.selection.complementary, strict=True
    ):
        assert set(pivotal.tolist()) | set(comp.tolist()) == set(kept.tolist())
        assert len(pivotal) == 4  # top-4 of the one pivotal layer (1 of 4)
    assert out.selection.scores.shape == (3, NUM_PATCHES)
    # the default: a union over layers 0 and 1 (range(4)[-4:-2]), k = round(0.25 * 64) = 16
    out = get_pruner("freepruner").encode_and_select(clip, pixels)
    assert out.selection.settings["pivotal_layers"] == [0, 1]
    assert out.selection.settings["k"] == 16
    assert out.selection.settings["complementary_layer"] == 2
    assert all(16 <= len(p) <= 32 for p in out.selection.pivotal)


@pytest.mark.parametrize("method", ["random", "uniform", "cls", "prumerge+"])
def test_counts_and_ratios_are_exact(method, clip, pixels):
    assert (
        get_pruner(method, count=10).encode_and_select(clip, pixels).selection.num_kept == [10] * 3
    )
    assert (
        get_pruner(method, ratio=0.25).encode_and_select(clip, pixels).selection.num_kept
        == [16] * 3
    )


def test_freepruner_budget_and_ratio(clip, pixels):
    assert (
        get_pruner("freepruner", k=4, budget=20).encode_and_select(clip, pixels).selection.num_kept
        == [20] * 3
    )
    assert (
        get_pruner("freepruner", k=4, ratio=0.5).encode_and_select(clip, pixels).selection.num_kept
        == [32] * 3
    )


@pytest.mark.parametrize("method", ["random", "uniform", "cls"])
def test_baselines_match_freepruner_count_by_default(method, clip, pixels):
    reference = get_pruner("freepruner").encode_and_select(clip, pixels).selection.num_kept
    assert get_pruner(method).encode_and_select(clip, pixels).selection.num_kept == reference


def test_random_is_seeded(clip, pixels):
    def draw(seed):
        return [
            k.tolist()
            for k in get_pruner("random", count=10, seed=seed)
            .encode_and_select(clip, pixels)
            .selection.kept
        ]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_cls_uses_cls_attention(clip, siglip, pixels):
    out = get_pruner("cls", count=5).encode_and_select(clip, pixels)
    scores = out.selection.scores
    for b, kept in enumerate(out.selection.kept):
        top = scores[b].topk(5).indices.sort().values
        assert kept.tolist() == top.tolist()
    # SigLIP has no CLS token: scores are the mean attention received
    assert (
        get_pruner("cls", count=5).encode_and_select(siglip, pixels).selection.num_kept == [5] * 3
    )


def test_prumerge_plus_merges_features(clip, pixels):
    out = get_pruner("prumerge+").encode_and_select(clip, pixels)
    assert out.feature_layer == -2
    features = out.hidden_states[-2][:, 1:]  # (B, N, D) without CLS
    for b, (kept, merged) in enumerate(zip(out.selection.kept, out.merged_features, strict=True)):
        assert merged.shape == (kept.numel(), 32)
        assert not torch.allclose(merged, features[b, kept])  # merging moved the features
    unmerged = get_pruner("prumerge+", merge=False).encode_and_select(clip, pixels)
    assert unmerged.merged_features is None
    assert [k.tolist() for k in unmerged.selection.kept] == [k.tolist() for k in out.selection.kept]


def test_prumerge_plus_without_neighbours_is_a_plain_gather(clip, pixels):
    out = get_pruner("prumerge+", num_neighbors=0).encode_and_select(clip, pixels)
    features = out.hidden_states[-2][:, 1:]
    for b, kept in enumerate(out.selection.kept):
        torch.testing.assert_close(out.merged_features[b], features[b, kept])


@pytest.mark.parametrize(
    "name, params, message",
    [
        (
            "nope",
            {},
            r"unknown method 'nope'; valid: freepruner, random, uniform, cls, prumerge\+, keep-all",
        ),
        (
            "random",
            {"k": 3},
            r"unknown parameter\(s\) for method 'random': k; valid: ratio, count, seed",
        ),
        ("random", {"ratio": 1.5}, r"ratio \(1.5\) must be in \(0, 1\]"),
        ("uniform", {"ratio": 0.0}, r"ratio \(0.0\) must be in \(0, 1\]"),
        ("cls", {"count": 0}, r"count \(0\) must be an integer >= 1"),
        ("random", {"ratio": 0.5, "count": 3}, r"not both"),
        ("freepruner", {"ratio": 2.0}, r"ratio \(2.0\) must be in \(0, 1\]"),
        ("freepruner", {"ratio": 0.5, "budget": 3}, r"ratio \(0.5\) or a budget \(3\), not both"),
        ("freepruner", {"k": -1}, r"k \(-1\) must be an integer >= 1"),
        ("prumerge+", {"ratio": 1.01}, r"ratio \(1.01\) must be in \(0, 1\]"),
    ],
)
def test_parameter_errors(name, params, message):
    with pytest.raises(PruningError, match=message):
        get_pruner(name, **params)


def test_count_above_patch_count_is_an_error(clip, pixels):
    with pytest.raises(PruningError, match=r"count \(65\) must be in 1..64"):
        get_pruner("uniform", count=65).encode_and_select(clip, pixels)
    with pytest.raises(
        PruningError, match=r"budget \(65\) exceeds the number of patch tokens \(64\)"
    ):
        get_pruner("freepruner", budget=65).encode_and_select(clip, pixels)


def test_none_parameters_mean_defaults():
    assert get_pruner("random", ratio=None, count=None, seed=None).match is not None
    assert "budget" in method_parameters("freepruner") and "ratio" in method_parameters(
        "freepruner"
    )


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(1, 30), data=st.data())
def test_uniform_grid_is_exact_and_spread(rows, cols, data):
    count = data.draw(st.integers(1, rows * cols))
    indices = uniform_grid_indices(rows, cols, count)
    values = indices.tolist()
    assert values == sorted(set(values)) and len(values) == count
    assert all(0 <= i < rows * cols for i in values)
    if count >= 4 and rows == cols >= 4:  # spread on square grids: every half gets some
        r, c = indices // cols, indices % cols
        assert (r < rows / 2).any() and (r >= rows / 2).any()
        assert (c < cols / 2).any() and (c >= cols / 2).any()


def test_uniform_half_grid_is_a_lattice():
    indices = uniform_grid_indices(24, 24, 144)  # every other row and column
    r, c = indices // 24, indices % 24
    assert sorted(set(r.tolist())) == list(range(1, 24, 2))
    assert sorted(set(c.tolist())) == list(range(1, 24, 2))


def test_resolve_count():
    assert resolve_count(576, ratio=0.5) == 288
    assert resolve_count(576, ratio=1e-6) == 1
    assert resolve_count(576, count=576) == 576


@pytest.mark.parametrize(
    "params",
    [
        {"pivotal_start_layer": 0, "k": 3},  # pivotal 0..1, complementary 2 (rows only)
        {"k": 5, "budget": 40},  # a budget past the adaptive count: every row computed
        {"k": 5, "budget": 6},
        {"direction": "column", "budget": 20},
        {"head_reduce": "max", "include_cls": True, "k_ratio": 0.3},
        {"pivotal_start_layer": 1, "pivotal_end_layer": 4, "complementary_layer": 1},
    ],
)
@pytest.mark.parametrize("model", ["clip", "siglip"])
def test_freepruner_from_qk_equals_the_reference_on_whole_maps(model, params, request, pixels):
    """The fused q/k path (methods.FreePruner) selects exactly what the reference rule
    (selection.select_freepruner) selects from eager-equivalent whole maps."""
    from fpcost.pruner.capture import AttentionCapture
    from fpcost.pruner.selection import FreePrunerConfig, select_freepruner

    encoder = request.getfixturevalue(model)
    config = FreePrunerConfig(**params)
    num_prefix = 1 if model == "clip" else 0
    with torch.no_grad(), AttentionCapture(encoder, head_reduce=config.head_reduce) as capture:
        encoder(pixels)
    full = select_freepruner(capture.maps, config, 4, num_prefix)
    for complete in (False, True):
        pruner = get_pruner("freepruner", config=config, complete_rows=complete)
        out = pruner.encode_and_select(encoder, pixels)
        for field in ("kept", "pivotal", "complementary", "filled"):
            assert [t.tolist() for t in getattr(out.selection, field)] == [
                t.tolist() for t in getattr(full, field)
            ], field
        if complete or config.direction == "column":
            assert torch.equal(out.selection.admission, full.admission)

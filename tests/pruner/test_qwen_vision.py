"""freePruner and the baselines on tiny random Qwen2-VL / Qwen2.5-VL towers (qwen_vision.py,
qwen_capture.py): one pass, features = the merger output, scores = the attention each layer
really computes (images, temporal slices and windows apart), merged-token granularity."""

import sys

import pytest
import torch
from qwen_tiny import picture, processed, qwen_model, visual

from fpcost.pruner.errors import PruningError
from fpcost.pruner.methods import get_pruner, select_from_scores
from fpcost.pruner.qwen_capture import (
    ImageAttention,
    QwenQKCapture,
    find_qwen_attention_layers,
)
from fpcost.pruner.qwen_vision import select_merged, window_order, windowed_layers
from fpcost.pruner.selection import FreePrunerConfig

KINDS = ("qwen2_vl", "qwen2_5_vl")


@pytest.fixture(scope="module", params=KINDS)
def tower(request):
    return visual(qwen_model(request.param))


@pytest.fixture(scope="module")
def two_images():
    """Two images of different sizes and aspect ratios: grids (1, 12, 16) and (1, 8, 6)."""
    return [picture(170, 230, seed=1), picture(110, 80, seed=2)]


def test_keep_all_features_equal_the_tower_bit_for_bit(tower, two_images):
    pixels, grid = processed(two_images)
    got = select_merged(get_pruner("keep-all"), tower, pixels, grid)
    with torch.no_grad():
        expected = tower(pixels, grid_thw=grid).pooler_output
    assert torch.equal(torch.cat(got.features), expected)
    counts = [int(t * h * w) // 4 for t, h, w in grid.tolist()]
    assert got.num_merged == counts
    assert [k.tolist() for k in got.kept] == [list(range(n)) for n in counts]
    assert got.selection is None


def test_freepruner_keeps_a_sorted_deterministic_subset(tower, two_images):
    pixels, grid = processed(two_images)
    first = select_merged(get_pruner("freepruner"), tower, pixels, grid)
    again = select_merged(get_pruner("freepruner"), tower, pixels, grid)
    for kept, again_kept, n in zip(first.kept, again.kept, first.num_merged, strict=True):
        assert torch.equal(kept, again_kept)
        assert 1 <= kept.numel() <= n
        assert kept.dtype == torch.int64
        assert torch.equal(kept, kept.unique())  # sorted, unique
        assert 0 <= int(kept.min()) and int(kept.max()) < n
    assert sum(k.numel() for k in first.kept) < sum(first.num_merged)
    raw = first.selection
    assert raw.num_kept == [k.numel() for k in first.kept]
    assert first.selection_time_s > 0
    # pivotal ∪ complementary ∪ filled = kept, disjoint
    for b, kept in enumerate(first.kept):
        parts = torch.cat([raw.pivotal[b], raw.complementary[b], raw.filled[b]])
        assert torch.equal(parts.sort().values, kept)


def test_features_come_from_the_pruned_pass(tower, two_images):
    pixels, grid = processed(two_images)
    got = select_merged(get_pruner("freepruner"), tower, pixels, grid)
    with torch.no_grad():
        expected = tower(pixels, grid_thw=grid).pooler_output
    assert torch.equal(torch.cat(got.features), expected)


def test_batch_of_two_sizes_selects_as_each_alone(tower, two_images):
    pixels, grid = processed(two_images)
    together = select_merged(get_pruner("freepruner"), tower, pixels, grid)
    for i, image in enumerate(two_images):
        alone = select_merged(get_pruner("freepruner"), tower, *processed([image]))
        assert torch.equal(alone.kept[0], together.kept[i])
        assert torch.allclose(alone.features[0], together.features[i], atol=1e-5)


# --- scores against a reference computed from the layer's own inputs -------------------------

def _reference(tower, pixels, grid, layer):
    """Block ``layer``'s head-averaged attention (S, S) in tower order, recomputed in float64
    from the attention module's own inputs with an explicit block-diagonal mask, checked to
    reproduce the module's output; and the tower order of merged tokens (the original index
    at each tower position), read off the merger's output before and after its reordering."""
    module = tower.blocks[layer].attn
    seen = {}
    handles = [
        module.register_forward_pre_hook(lambda m, a, kw: seen.update(x=a[0], kw=kw),
                                         with_kwargs=True),
        module.register_forward_hook(lambda m, a, out: seen.update(out=out)),
        tower.merger.register_forward_hook(lambda m, a, out: seen.update(merged=out)),
    ]
    try:
        with torch.no_grad():
            pooled = tower(pixels, grid_thw=grid).pooler_output
    finally:
        for handle in handles:
            handle.remove()
    x, cu = seen["x"], seen["kw"]["cu_seqlens"].tolist()
    cos, sin = seen["kw"]["position_embeddings"]
    tokens, heads = x.shape[0], module.num_heads
    with torch.no_grad():
        q, k, v = module.qkv(x).reshape(tokens, 3, heads, -1).permute(1, 0, 2, 3)
        rotary = sys.modules[type(module).__module__].apply_rotary_pos_emb_vision
        q, k = rotary(q, k, cos, sin)  # transformers' own function
        segment = torch.zeros(tokens, dtype=torch.int64)
        for i, (a, b) in enumerate(zip(cu[:-1], cu[1:], strict=True)):
            segment[a:b] = i
        same = segment[:, None] == segment[None, :]  # (S, S) the layer's block diagonal
        logits = torch.einsum("shd,thd->hst", q.double(), k.double()) * module.scaling
        probs = torch.softmax(logits.masked_fill(~same, float("-inf")), dim=-1)  # (H, S, S)
        out = torch.einsum("hst,thd->shd", probs, v.double()).reshape(tokens, -1)
        assert torch.allclose(module.proj(out.float()), seen["out"], atol=1e-5)
        distance = torch.cdist(seen["merged"].double(), pooled.double())  # (M, M)
        order = distance.argmin(dim=1)  # tower position j holds original token order[j]
        assert torch.equal(pooled[order], seen["merged"])  # an exact permutation
        assert torch.equal(order.sort().values, torch.arange(order.numel()))
    return probs.mean(dim=0), order, cu  # (S, S), (M,)


def _captured(tower, pixels, grid, layers):
    found = find_qwen_attention_layers(tower)
    with QwenQKCapture(found, layers) as capture, torch.no_grad():
        tower(pixels, grid_thw=grid)
    return capture, found


def _video_and_image(two_images):
    """A 4-frame video as the tower takes it (t = 2 temporal patches of 8 x 12 patches, random
    pixels: the video processor needs torchvision) packed before an image."""
    image_pixels, image_grid = processed(two_images[1:])
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(2 * 8 * 12, image_pixels.shape[1], generator=generator)
    return torch.cat([video, image_pixels]), torch.cat([torch.tensor([[2, 8, 12]]), image_grid])


@pytest.mark.parametrize("inputs", ["images", "video"])
@pytest.mark.parametrize("kind", KINDS)
def test_scores_equal_the_layers_attention_including_windows(kind, inputs, two_images):
    tower = visual(qwen_model(kind))
    pixels, grid = processed(two_images) if inputs == "images" else _video_and_image(two_images)
    layers = range(len(tower.blocks))
    capture, found = _captured(tower, pixels, grid, layers)
    order = window_order(tower, grid)
    windowed = windowed_layers(tower, len(found))
    assert windowed == ([] if kind == "qwen2_vl" else [0, 1, 3, 4])
    for layer in layers:
        attn, reference_order, cu = _reference(tower, pixels, grid, layer)
        if order is not None:
            assert torch.equal(order, reference_order)
        slices = int(grid[:, 0].sum())  # a video attends within each temporal slice
        assert len(cu) - 1 > slices if layer in windowed else len(cu) - 1 == slices
        start = merged_start = 0
        for t, h, w in grid.tolist():
            n_patches, m = t * h * w, t * h * w // 4
            local = reference_order[merged_start:merged_start + m] - merged_start
            image = attn[start:start + n_patches, start:start + n_patches]  # (S_i, S_i)
            assert torch.allclose(attn[start:start + n_patches].sum(), torch.tensor(
                float(n_patches), dtype=torch.float64))  # nothing attends across images
            per_patch = image.sum(dim=0) - image.diagonal()
            expected = torch.empty(m, dtype=torch.float64)
            expected[local] = per_patch.view(m, 4).mean(dim=1)
            position = torch.argsort(local)
            pooled = image.view(m, 4, m, 4).mean(dim=(1, 3))  # tower order
            expected_map = pooled[position][:, position]  # original order both ways

            got = ImageAttention(capture.qk, capture.segments, found, start,
                                 start + n_patches, local, 4)
            assert torch.allclose(got.degrees(layer).double(), expected, atol=1e-5)
            assert torch.allclose(got.map(layer).double(), expected_map, atol=1e-6)
            rows = torch.tensor([m - 1, 0, m // 2])
            assert torch.allclose(got.rows(layer, rows).double(), expected_map[rows], atol=1e-6)
            if t > 1:  # nothing crosses temporal slices: token 0's row ends with its slice
                assert torch.all(got.rows(layer, torch.tensor([0]))[0, m // t:] == 0)
            start += n_patches
            merged_start += m


@pytest.mark.parametrize(("kind", "direction"), [(kind, "row") for kind in KINDS]
                         + [("qwen2_5_vl", "column")])
def test_selection_equals_the_rule_on_reference_maps(kind, direction, two_images):
    tower = visual(qwen_model(kind))
    pixels, grid = processed(two_images[:1])
    config = FreePrunerConfig(direction=direction)
    num_layers = len(tower.blocks)
    maps = {layer: _reference(tower, pixels, grid, layer) for layer in
            config.layers_needed(num_layers)}
    _, order, _ = maps[config.layers_needed(num_layers)[0]]
    m = order.numel()
    position = torch.argsort(order)

    def merged_map(layer):
        attn = maps[layer][0]
        return attn.view(m, 4, m, 4).mean(dim=(1, 3))[position][:, position].float()

    def degrees(layer):
        attn = maps[layer][0]
        out = torch.empty(m)
        out[order] = (attn.sum(dim=0) - attn.diagonal()).view(m, 4).mean(dim=1).float()
        return out

    comp = config.layers_needed(num_layers)[-1]
    degree = torch.stack([degrees(layer) for layer in config.pivotal_layers(num_layers)])[:, None]
    vectors = merged_map(comp) if direction == "row" else merged_map(comp).T  # column p as row p
    expected = select_from_scores(
        config, degree, lambda rows: vectors[None] if rows is None else vectors[rows][None])
    got = select_merged(get_pruner("freepruner", direction=direction), tower, pixels, grid)
    assert torch.equal(got.kept[0], expected.kept[0])
    assert torch.equal(got.selection.pivotal[0], expected.pivotal[0])


def test_two_by_two_pooling_by_hand():
    """One head of width 1, q = 1 and k = log(weight): every patch row is weight / sum. Two
    merged tokens of 4 patches with weights 1 and 2 (sum 12) in one segment: each patch
    receives 8·w/12 minus its own w/12, i.e. 7/12 and 14/12; each merged row is 1/12, 2/12
    per key patch. With the tower order reversed (window order), both swap places."""
    class Layer:
        num_heads, scale = 1, 1.0

    weights = torch.tensor([1.0] * 4 + [2.0] * 4)
    q, k = torch.ones(8, 1), weights.log()[:, None]
    segments = {0: torch.tensor([0, 8])}
    plain = ImageAttention({0: (q, k)}, segments, [Layer()], 0, 8, torch.arange(2), 4)
    assert torch.allclose(plain.degrees(0), torch.tensor([7 / 12, 14 / 12]))
    assert torch.allclose(plain.map(0), torch.tensor([[1 / 12, 2 / 12], [1 / 12, 2 / 12]]))
    swapped = ImageAttention({0: (q, k)}, segments, [Layer()], 0, 8, torch.tensor([1, 0]), 4)
    assert torch.allclose(swapped.degrees(0), torch.tensor([14 / 12, 7 / 12]))
    assert torch.allclose(swapped.map(0), torch.tensor([[2 / 12, 1 / 12], [2 / 12, 1 / 12]]))
    # two windows of one merged token each: nothing crosses, each row is its own window
    windows = {0: torch.tensor([0, 4, 8])}
    apart = ImageAttention({0: (q, k)}, windows, [Layer()], 0, 8, torch.arange(2), 4)
    assert torch.allclose(apart.degrees(0), torch.tensor([3 / 4, 3 / 4]))
    assert torch.allclose(apart.map(0), torch.tensor([[1 / 4, 0.0], [0.0, 1 / 4]]))


# --- the baselines, budgets and refusals ---------------------------------------------------

def test_baselines_and_budgets_on_merged_tokens(tower, two_images):
    pixels, grid = processed(two_images)
    free = select_merged(get_pruner("freepruner"), tower, pixels, grid)
    for name in ("random", "uniform"):
        matched = select_merged(get_pruner(name), tower, pixels, grid)
        assert [k.numel() for k in matched.kept] == [k.numel() for k in free.kept]
        counted = select_merged(get_pruner(name, count=5), tower, pixels, grid)
        assert [k.numel() for k in counted.kept] == [5, 5]
        ratio = select_merged(get_pruner(name, ratio=0.5), tower, pixels, grid)
        assert [k.numel() for k in ratio.kept] == [round(n / 2) for n in free.num_merged]
    seeded = [select_merged(get_pruner("random", count=7, seed=3), tower, pixels, grid).kept
              for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*seeded, strict=True))
    budget = select_merged(get_pruner("freepruner", budget=10), tower, pixels, grid)
    assert [k.numel() for k in budget.kept] == [10, 10]
    uniform = select_merged(get_pruner("uniform", count=4), tower, *processed(two_images[1:]))
    # grid (1, 8, 6): 4 x 3 merged tokens; the 3 x 2 lattice at rows 0, 2, 3 and columns
    # 0, 2 (merged raster 0, 2, 6, 8, 9, 11) thinned evenly to 4 (positions 0, 2, 3, 5)
    assert uniform.kept[0].tolist() == [0, 6, 8, 11]


@pytest.mark.parametrize("name", ["cls", "prumerge+"])
def test_methods_needing_a_cls_token_are_refused(tower, two_images, name):
    with pytest.raises(PruningError, match="no CLS token; valid there: freepruner"):
        select_merged(get_pruner(name), tower, *processed(two_images[:1]))


def test_bad_layers_and_budgets_are_refused(tower, two_images):
    pixels, grid = processed(two_images[1:])  # 12 merged tokens
    with pytest.raises(PruningError, match="complementary_layer .99. is out of range"):
        select_merged(get_pruner("freepruner", complementary_layer=99), tower, pixels, grid)
    with pytest.raises(PruningError, match="select no layer"):
        select_merged(get_pruner("freepruner", pivotal_start_layer=-1, pivotal_end_layer=-2),
                      tower, pixels, grid)
    with pytest.raises(PruningError, match="--budget 13 exceeds the image's 12 merged tokens"):
        select_merged(get_pruner("freepruner", budget=13), tower, pixels, grid)
    with pytest.raises(PruningError, match="grid_thw describes"):
        select_merged(get_pruner("freepruner"), tower, pixels[:-4], grid)


def test_hooks_come_off(tower, two_images):
    select_merged(get_pruner("freepruner"), tower, *processed(two_images[:1]))
    for module in tower.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_qwen2_5_vl_default_layers_are_windowed():
    """The released Qwen2.5-VL tower (32 blocks, full attention at 7, 15, 23, 31): the paper's
    default layers -4, -3 (pivotal) and -2 (complementary) are blocks 28, 29, 30, windowed."""
    from transformers import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VisionTransformerPretrainedModel,
    )

    config = Qwen2_5_VLVisionConfig()
    assert (config.depth, list(config.fullatt_block_indexes)) == (32, [7, 15, 23, 31])
    with torch.device("meta"):
        released = Qwen2_5_VisionTransformerPretrainedModel(config)
    defaults = FreePrunerConfig()
    assert defaults.layers_needed(32) == (28, 29, 30)
    assert set(defaults.layers_needed(32)) <= set(windowed_layers(released, 32))
    assert len(find_qwen_attention_layers(released)) == 32


def test_windows_other_than_transformers_are_refused(two_images):
    """The scores are mapped back with get_vision_window_index's order: a windowed layer whose
    captured segments differ from its windows (another transformers version) is an error."""
    tower = visual(qwen_model("qwen2_5_vl"))
    _, grid = processed(two_images[:1])
    assert window_order(tower, grid, {2: torch.tensor([0, 5])}) is not None  # 2: full attention
    with pytest.raises(PruningError, match="vision block 0 attended within other windows"):
        window_order(tower, grid, {0: torch.tensor([0, 5])})

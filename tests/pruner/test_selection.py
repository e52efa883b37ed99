"""freePruner's selection rules (selection.py): hand-computed cases and hypothesis invariants."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies_pruner import attention_case, attention_rows, freepruner_config

from fpcost.pruner.errors import PruningError
from fpcost.pruner.selection import (
    FreePrunerConfig,
    aggregate_heads,
    apply_budget,
    complementary_mask,
    contribution_degree,
    iqr_outlier_mask,
    quartiles,
    select_freepruner,
    top_k_mask,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _select(case, config):
    return select_freepruner(case.maps, config, case.num_layers, case.num_prefix)


def _as_sets(selection):
    return [
        (set(k.tolist()), set(p.tolist()), set(c.tolist()), set(f.tolist()))
        for k, p, c, f in zip(
            selection.kept,
            selection.pivotal,
            selection.complementary,
            selection.filled,
            strict=True,
        )
    ]


# --- hand-computed ---------------------------------------------------------------------------


def test_contribution_degree_by_hand():
    attn = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]])  # (1, 3, 3)
    # column sums 0.8, 1.1, 1.1 minus the diagonal 0.5, 0.6, 0.6
    torch.testing.assert_close(contribution_degree(attn, 0), torch.tensor([[0.3, 0.5, 0.5]]))
    # with a CLS token (index 0) left out of rows and columns: patches 1, 2
    # rows 1..2, columns 1..2: sums 0.8, 0.9 minus diagonal 0.6, 0.6
    torch.testing.assert_close(contribution_degree(attn, 1), torch.tensor([[0.2, 0.3]]))
    # CLS row taking part: columns 1..2 summed over all rows: 1.1, 1.1 minus 0.6, 0.6
    torch.testing.assert_close(
        contribution_degree(attn, 1, include_cls=True), torch.tensor([[0.5, 0.5]])
    )


def test_top_k_breaks_ties_towards_lower_index():
    scores = torch.tensor([[0.3, 0.5, 0.5, 0.1]])
    assert top_k_mask(scores, 1).nonzero()[:, 1].tolist() == [1]
    assert top_k_mask(scores, 2).nonzero()[:, 1].tolist() == [1, 2]
    assert top_k_mask(scores, 9).all()


def test_iqr_rule_by_hand():
    row = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])  # Q1 = Q3 = 0: the fence is 0
    assert iqr_outlier_mask(row).nonzero()[:, 1].tolist() == [4]
    row = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])  # Q1 2, Q3 4, fence 7
    assert iqr_outlier_mask(row).nonzero()[:, 1].tolist() == [4]
    assert not iqr_outlier_mask(row, factor=60.0).any()  # fence 124


def test_small_selection_by_hand():
    # 1 CLS + 4 patches; everyone attends to patch 2 in the pivotal layer, so it is pivotal;
    # its row in the complementary layer singles out patch 0.
    pivotal_layer = torch.full((1, 5, 5), 0.05)
    pivotal_layer[0, :, 3] = 0.8  # token 3 = patch 2
    comp_layer = torch.full((1, 5, 5), 0.1)
    comp_layer[0, 3] = torch.tensor([0.1, 0.6, 0.1, 0.1, 0.1])  # patch 2's row: patch 0 stands out
    maps = {0: pivotal_layer, 1: comp_layer}
    config = FreePrunerConfig(
        pivotal_start_layer=0, pivotal_end_layer=1, k=1, complementary_layer=1
    )
    selection = select_freepruner(maps, config, num_layers=2, num_prefix_tokens=1)
    assert selection.kept[0].tolist() == [0, 2]
    assert selection.pivotal[0].tolist() == [2]
    assert selection.complementary[0].tolist() == [0]
    assert selection.filled[0].tolist() == []
    assert selection.num_patches == 4


def test_aggregate_heads():
    attn = torch.tensor([[[[0.2, 0.8]], [[0.6, 0.4]]]])  # (1, 2 heads, 1, 2)
    torch.testing.assert_close(aggregate_heads(attn, "mean"), torch.tensor([[[0.4, 0.6]]]))
    torch.testing.assert_close(aggregate_heads(attn, "max"), torch.tensor([[[0.6, 0.8]]]))


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, message",
    [
        ({"k": 0}, r"k \(0\) must be an integer >= 1"),
        ({"k_ratio": 0.0}, r"k_ratio \(0.0\) must be a number in \(0, 1\]"),
        ({"k_ratio": 1.5}, r"k_ratio"),
        ({"direction": "diagonal"}, r"direction \('diagonal'\) must be one of row, column"),
        ({"head_reduce": "sum"}, r"head_reduce \('sum'\) must be one of mean, max"),
        ({"iqr_factor": float("nan")}, r"iqr_factor"),
        ({"min_keep": 0}, r"min_keep \(0\) must be >= 1"),
        ({"budget": 0}, r"budget \(0\) must be >= 1"),
    ],
)
def test_config_errors(params, message):
    with pytest.raises(PruningError, match=message):
        FreePrunerConfig(**params)


def test_layer_errors():
    with pytest.raises(
        PruningError, match=r"complementary_layer \(-13\) is out of range for a 12-layer"
    ):
        FreePrunerConfig(complementary_layer=-13).layers_needed(12)
    with pytest.raises(PruningError, match=r"pivotal layers \[5:3\] select no layer"):
        FreePrunerConfig(pivotal_start_layer=5, pivotal_end_layer=3).pivotal_layers(12)
    # the defaults: pivotal 8-9 and complementary 10 of a 12-layer encoder (20-21 and 22 of
    # CLIP-L's 24); 0-1 and 2 of a 4-layer one
    assert FreePrunerConfig().layers_needed(12) == (8, 9, 10)
    assert FreePrunerConfig().layers_needed(24) == (20, 21, 22)
    assert FreePrunerConfig().layers_needed(4) == (0, 1, 2)


def test_k_is_relative_to_the_patch_count():
    config = FreePrunerConfig(k_ratio=0.25)
    assert [config.resolve_k(n) for n in (576, 256, 64, 3, 1)] == [144, 64, 16, 1, 1]
    assert FreePrunerConfig(k=192).resolve_k(576) == 192  # an absolute k overrides
    assert FreePrunerConfig(k=900).resolve_k(576) == 576
    settings = FreePrunerConfig(k_ratio=0.25).settings(num_layers=24, num_patches=576)
    assert settings["pivotal_layers"] == [20, 21] and settings["k"] == 144
    assert settings["complementary_layer"] == 22 and settings["direction"] == "row"


def test_nan_attention_is_a_clear_error():
    maps = {i: torch.full((2, 5, 5), 0.2) for i in range(4)}
    maps[1][1, 2, 3] = float("nan")
    with pytest.raises(
        PruningError, match=r"attention at encoder layer 1 is not finite .* sample 1"
    ):
        select_freepruner(maps, FreePrunerConfig(), num_layers=4, num_prefix_tokens=1)


def test_budget_above_patch_count_is_an_error():
    maps = {i: torch.full((1, 5, 5), 0.2) for i in range(4)}
    with pytest.raises(
        PruningError, match=r"budget \(5\) exceeds the number of patch tokens \(4\)"
    ):
        select_freepruner(maps, FreePrunerConfig(budget=5), num_layers=4, num_prefix_tokens=1)


def test_missing_layer_is_an_error():
    maps = {0: torch.full((1, 5, 5), 0.2)}
    with pytest.raises(PruningError, match="not captured"):
        select_freepruner(maps, FreePrunerConfig(), num_layers=4, num_prefix_tokens=1)


# --- invariants ------------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_selection_invariants(data):
    case = data.draw(attention_case())
    config = data.draw(freepruner_config(case))
    selection = _select(case, config)
    n = case.num_patches
    assert selection.num_patches == n
    assert len(selection.kept) == case.batch
    for kept, (kept_set, pivotal, comp, filled) in zip(
        selection.kept, _as_sets(selection), strict=True
    ):
        values = kept.tolist()
        assert values == sorted(set(values))  # sorted, unique
        assert all(0 <= i < n for i in values)  # patch indices only: a CLS token is never selected
        assert kept.dtype == torch.int64
        assert 1 <= len(values) <= n
        assert pivotal <= kept_set
        assert pivotal | comp | filled == kept_set
        assert not (pivotal & comp) and not (pivotal & filled) and not (comp & filled)
        if config.budget is not None:
            assert len(values) == config.budget
        else:
            assert len(values) >= min(config.min_keep, n)
            if config.min_keep == 1:
                assert not filled  # adaptive: kept = pivotal ∪ complementary exactly


@SETTINGS
@given(st.data())
def test_deterministic(data):
    case = data.draw(attention_case())
    config = data.draw(freepruner_config(case))
    assert _as_sets(_select(case, config)) == _as_sets(_select(case, config))


@SETTINGS
@given(st.data())
def test_per_sample_independent_of_batch(data):
    # tie-free inputs: on uniform maps every score ties exactly in exact arithmetic, and the
    # float reductions of a (B, ...) batch and of one sample round differently by an ulp,
    # which decides the tie (found by hypothesis: uniform 3x3 maps, budget 1, {0} vs {1})
    case = data.draw(attention_case(regimes=("random", "onehot"), dtype=torch.float64))
    config = data.draw(freepruner_config(case))
    together = _as_sets(_select(case, config))
    for b in range(case.batch):
        alone = {layer: m[b : b + 1] for layer, m in case.maps.items()}
        single = select_freepruner(alone, config, case.num_layers, case.num_prefix)
        assert _as_sets(single)[0] == together[b]


@SETTINGS
@given(st.data())
def test_cls_takes_no_part_unless_asked(data):
    # tie-free inputs: on near-uniform maps, dropping the CLS rows and columns changes the
    # float summation order, which may flip a near-tie (found by hypothesis on "uniform")
    case = data.draw(attention_case(regimes=("random", "onehot"), dtype=torch.float64))
    config = data.draw(freepruner_config(case))
    if case.num_prefix == 0 or config.include_cls:
        return
    without_cls = {layer: m[:, 1:, 1:] for layer, m in case.maps.items()}
    stripped = select_freepruner(without_cls, config, case.num_layers, 0)
    assert _as_sets(stripped) == _as_sets(_select(case, config))


@SETTINGS
@given(st.data())
def test_permutation_equivariant(data):
    # tie-free inputs: continuous random maps in float64
    case = data.draw(attention_case(regimes=("random",), dtype=torch.float64))
    config = data.draw(freepruner_config(case))
    n, p = case.num_patches, case.num_prefix
    perm = torch.tensor(
        data.draw(st.permutations(range(n)))
    )  # new position j holds old token perm[j]
    order = torch.cat([torch.arange(p), p + perm])  # prefix tokens stay first
    permuted = {layer: m[:, order][:, :, order] for layer, m in case.maps.items()}
    original = _select(case, config)
    moved = select_freepruner(permuted, config, case.num_layers, p)
    for field in ("kept", "pivotal", "complementary", "filled"):
        for before, after in zip(getattr(original, field), getattr(moved, field), strict=True):
            assert sorted(perm[after].tolist()) == before.tolist()


def _reference(case, config):
    """Algorithm 1 written out literally on whole maps: union of per-layer top-k, then the
    union of the outliers of the pivotal tokens' vectors (no entries, no budget)."""
    layers = config.pivotal_layers(case.num_layers)
    comp_layer = config.complementary_layer % case.num_layers
    k = config.resolve_k(case.num_patches)
    pivotal = torch.zeros(case.batch, case.num_patches, dtype=torch.bool)
    for layer in layers:
        r = contribution_degree(case.maps[layer], case.num_prefix, config.include_cls)
        pivotal |= top_k_mask(r, k)
    comp = complementary_mask(
        case.maps[comp_layer], pivotal, case.num_prefix, config.include_cls,
        config.iqr_factor, config.direction,
    )
    return pivotal, comp & ~pivotal


@SETTINGS
@given(st.data())
def test_adaptive_selection_is_algorithm_1(data):
    case = data.draw(attention_case())
    config = data.draw(freepruner_config(case, with_budget=False))
    config = FreePrunerConfig(**{**config.__dict__, "min_keep": 1})
    pivotal, comp = _reference(case, config)
    selection = _select(case, config)
    for b in range(case.batch):
        assert selection.pivotal[b].tolist() == pivotal[b].nonzero().squeeze(-1).tolist()
        assert selection.complementary[b].tolist() == comp[b].nonzero().squeeze(-1).tolist()


@SETTINGS
@given(st.data())
def test_union_over_one_layer_is_the_single_layer_selection(data):
    case = data.draw(attention_case())
    config = data.draw(freepruner_config(case, with_budget=False))
    layer = data.draw(st.integers(0, case.num_layers - 1))
    one = FreePrunerConfig(**{**config.__dict__, "pivotal_start_layer": layer,
                              "pivotal_end_layer": layer + 1, "min_keep": 1})
    k = one.resolve_k(case.num_patches)
    top = top_k_mask(contribution_degree(case.maps[layer], case.num_prefix, one.include_cls), k)
    selection = _select(case, one)
    for b in range(case.batch):
        assert selection.pivotal[b].tolist() == top[b].nonzero().squeeze(-1).tolist()
    # and the union over several layers holds every one of them
    union = _select(case, FreePrunerConfig(**{**one.__dict__, "pivotal_start_layer": 0,
                                               "pivotal_end_layer": case.num_layers}))
    for b in range(case.batch):
        assert set(selection.pivotal[b].tolist()) <= set(union.pivotal[b].tolist())


@SETTINGS
@given(st.data())
def test_fixed_budget_keeps_both_kinds(data):
    """A budget returns exactly that many tokens, all pivotal or complementary (never filler):
    the adaptive selection at the k where its count reaches the budget, completed from the
    next k. So complementary tokens are kept whenever the budget exceeds the pivotal count,
    and a budget equal to an adaptive count gives that adaptive selection."""
    case = data.draw(attention_case())
    config = data.draw(freepruner_config(case, with_budget=True))
    fixed = _select(case, config)
    for b, (kept, pivotal, comp, filled) in enumerate(_as_sets(fixed)):
        assert len(kept) == config.budget
        assert not filled and pivotal | comp == kept
        if config.budget > len(pivotal):
            assert comp
        # nested: kept(k') ⊆ budget selection ⊆ kept(k' + 1) for the adaptive selections
        entry = fixed.admission[b] // 2
        last = int(entry[fixed.kept[b]].max())
        below = _select(case, FreePrunerConfig(**{**config.__dict__, "budget": None,
                                                  "k": max(1, last - 1), "min_keep": 1}))
        at = _select(case, FreePrunerConfig(**{**config.__dict__, "budget": None, "k": last,
                                               "min_keep": 1}))
        if last > 1:
            assert set(below.kept[b].tolist()) <= kept
        assert kept <= set(at.kept[b].tolist())
    # a budget equal to an adaptive count reproduces that adaptive selection
    adaptive = _select(case, FreePrunerConfig(**{**config.__dict__, "budget": None,
                                                 "min_keep": 1}))
    for b in range(case.batch):
        count = adaptive.num_kept[b]
        same = select_freepruner(
            {layer: m[b : b + 1] for layer, m in case.maps.items()},
            FreePrunerConfig(**{**config.__dict__, "budget": count}),
            case.num_layers, case.num_prefix,
        )
        # the same tokens (labels follow the smallest k giving that count)
        assert _as_sets(same)[0][0] == _as_sets(adaptive)[b][0]


@settings(max_examples=150, deadline=None)
@given(attention_rows())
def test_quartiles_equal_numpy_percentile(rows):
    q1, q3 = quartiles(rows)
    expected = np.percentile(rows.double().numpy(), [25, 75], axis=-1)
    np.testing.assert_array_equal(q1.numpy(), expected[0])
    np.testing.assert_array_equal(q3.numpy(), expected[1])
    factor = 1.5
    fence = expected[1] + factor * (expected[1] - expected[0])
    np.testing.assert_array_equal(
        iqr_outlier_mask(rows, factor).numpy(), rows.double().numpy() > fence[:, None]
    )


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_apply_budget_counts(data):
    batch = data.draw(st.integers(1, 3))
    n = data.draw(st.integers(1, 20))
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    kept = torch.rand(batch, n, generator=generator) < 0.5
    pivotal = kept & (torch.rand(batch, n, generator=generator) < 0.5)
    scores = torch.randint(0, 3, (batch, n), generator=generator).float()  # many ties
    count = torch.tensor([data.draw(st.integers(0, n)) for _ in range(batch)])
    chosen = apply_budget(kept, pivotal, scores, count)
    assert chosen.sum(dim=-1).tolist() == count.tolist()

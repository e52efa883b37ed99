"""Token pruners behind one interface (api.py's ``TokenPruner``), built by name.

``get_pruner(name, **params)`` with name one of ``METHODS``:

- ``freepruner``: the paper's method (scoring.py, selection.py, budget.py), params =
  ``FreePrunerConfig`` fields plus ``ratio`` (a fixed budget as a fraction of the patch
  count, filled by the same nested rule as ``budget``) and ``complete_rows``. Its
  ``Selection.settings`` holds the resolved settings a results file records.
- ``random`` (``seed``), ``uniform``, ``cls`` (``layer``): take ``ratio`` or ``count``; with
  neither they keep, per image, as many tokens as freePruner (default config) keeps on the
  same image, so that comparisons are at equal token count.
- ``prumerge+``: adaptive (IQR) count plus spatial samples, with merging; ``ratio`` /
  ``count`` fix the count instead. Its ``EncoderOutput.merged_features`` carries the merged
  features of the kept tokens.
- ``keep-all``: every patch token (the identity).

Every pruner runs the encoder once, SDPA kept, with ``QKCapture`` hooks only on the layers it
reads (driver.py), and reports ``selection_time_s`` (capture + scoring + choosing).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields, replace

import torch

from fpcost.pruner.api import Selection
from fpcost.pruner.baselines import (
    cls_attention_scores,
    merge_by_key_similarity,
    prumerge_plus_masks,
    random_indices,
    resolve_count,
    top_count_indices,
    uniform_grid_indices,
)
from fpcost.pruner.budget import (
    admission,
    budget_entry,
    complementary_entry,
    pivotal_entry,
    select_from_entries,
)
from fpcost.pruner.driver import EncoderRun, _all_indices, _Pruner
from fpcost.pruner.errors import PruningError
from fpcost.pruner.scoring import attention_rows, contribution_degrees
from fpcost.pruner.selection import (
    FreePrunerConfig,
    apply_budget,
    check_finite,
    outlier_matrix,
    outlier_vectors,
    resolve_layer,
)


class FreePruner(_Pruner):
    """freePruner (paper §3.2–3.3): pivotal ∪ complementary tokens, adaptive count, or a fixed
    budget (``ratio`` of the patch count or ``budget`` tokens) filled by the same rule.

    From the captured q and k it computes, after the forward pass: the contribution degrees
    of every pivotal layer in one chunked pass (``scoring.contribution_degrees``), then only
    the complementary layer's rows of the pivotal tokens (direction "row"; "column" needs the
    whole map). ``complete_rows``: compute the rows of every patch, so that
    ``Selection.admission`` orders *every* budget exactly (LLaVA-NeXT sets it: its budget
    is chosen over packed positions after the pruner ran); without it, rows go as far as
    the adaptive k or the pruner's own budget needs."""

    name = "freepruner"

    def __init__(
        self,
        config: FreePrunerConfig | None = None,
        ratio: float | None = None,
        complete_rows: bool = False,
        **params,
    ):
        self.config = config if config is not None else FreePrunerConfig(**params)
        if config is not None and params:
            raise PruningError(f"give a config or parameters ({', '.join(params)}), not both")
        if ratio is not None:
            if not 0 < ratio <= 1:
                raise PruningError(f"ratio ({ratio}) must be in (0, 1]")
            if self.config.budget is not None:
                raise PruningError(
                    f"give a ratio ({ratio}) or a budget ({self.config.budget}), not both"
                )
        self.ratio = ratio
        self.complete_rows = complete_rows
        self.head_reduce = self.config.head_reduce

    def with_complete_rows(self) -> FreePruner:
        """The same pruner, computing every complementary row (see the class docstring)."""
        return FreePruner(self.config, ratio=self.ratio, complete_rows=True)

    def capture_layers(self, num_layers: int) -> tuple[int, ...]:
        return self.config.layers_needed(num_layers)

    def resolved_config(self, num_patches: int) -> FreePrunerConfig:
        if self.ratio is None:
            return self.config
        return replace(self.config, budget=resolve_count(num_patches, ratio=self.ratio))

    def choose(self, run: EncoderRun):
        config = self.resolved_config(run.num_patches)
        p, n = run.num_prefix_tokens, run.num_patches
        pivotal_layers = config.pivotal_layers(run.num_layers)
        comp_layer = resolve_layer(config.complementary_layer, run.num_layers, "complementary_layer")
        heads, scale = run.geometry(pivotal_layers[0])
        q = torch.cat([run.qk[layer][0] for layer in pivotal_layers])  # (L·B, T, H·D)
        k = torch.cat([run.qk[layer][1] for layer in pivotal_layers])
        degrees = contribution_degrees(
            q, k, heads, scale, p, config.include_cls, config.head_reduce
        ).view(len(pivotal_layers), run.batch, n)  # (L, B, N)
        for i, layer in enumerate(pivotal_layers):
            check_finite(degrees[i], layer)
        comp_q, comp_k = run.qk[comp_layer]
        comp_heads, comp_scale = run.geometry(comp_layer)

        def vectors(rows: torch.Tensor | None) -> torch.Tensor:
            """(B, R, T') the complementary layer's vectors of patch rows ``rows`` (R,);
            None: every patch, from the whole map."""
            if rows is None:
                return outlier_vectors(
                    run.map(comp_layer), torch.arange(n), p, config.direction, config.include_cls
                )  # (B, N, T'), every patch's vector
            attn = attention_rows(
                comp_q, comp_k, p + rows, comp_heads, comp_scale, config.head_reduce
            )  # (B, R, T)
            check_finite(attn, comp_layer)
            return attn if config.include_cls else attn[:, :, p:]

        selection = select_from_scores(config, degrees, vectors, self.complete_rows)
        selection.settings = config.settings(run.num_layers, n)
        return selection, None, None


def select_from_scores(
    config: FreePrunerConfig,
    degrees: torch.Tensor,
    vectors: Callable[[torch.Tensor | None], torch.Tensor],
    complete_rows: bool = False,
) -> Selection:
    """freePruner's choice (pivotal ∪ complementary, adaptive or a fixed budget) from the
    pivotal layers' contribution degrees ``degrees`` (L, B, N), checked finite, and
    ``vectors(rows)``: the complementary layer's attention vectors (B, R, T') of the token
    rows ``rows`` (R,) (rows A[p, :] or columns A[:, p] as ``config.direction`` says; the
    last N entries are the tokens), or of every token in order when ``rows`` is None.
    Tokens are whatever the caller scores: patches (``FreePruner``) or merged tokens
    (``qwen_vision``). Only the rows the adaptive k or the budget needs are asked for; every
    row for "column" or ``complete_rows``. ``settings`` is left to the caller."""
    n = degrees.shape[-1]
    pivot_entry = pivotal_entry(degrees)  # (B, N)
    scores = degrees.mean(dim=0)  # (B, N)
    k_value = config.resolve_k(n)

    def entries(depth: int) -> torch.Tensor:
        """Complementary entries, exact for every k <= depth (rows of P(depth))."""
        if config.direction == "column" or depth >= n:
            rows, found = torch.arange(n), vectors(None)  # (B, N, T')
        else:
            rows = (pivot_entry <= depth).any(dim=0).nonzero().squeeze(-1)  # (R,)
            found = vectors(rows)  # (B, R, T')
        outliers = outlier_matrix(found, n, config.iqr_factor)  # (B, R, N)
        return complementary_entry(outliers, pivot_entry[:, rows])  # (B, N)

    depth = n if complete_rows else k_value
    comp_entry = entries(depth)
    if config.budget is not None and depth < n:
        if config.budget > n:
            raise PruningError(
                f"budget ({config.budget}) exceeds the number of patch tokens ({n})"
            )
        needed = int(
            budget_entry(admission(pivot_entry, comp_entry), scores, config.budget).max()
        )
        if needed > depth:  # the budget reaches past the rows computed: compute them all
            comp_entry = entries(n)
    return select_from_entries(
        pivot_entry, comp_entry, scores, k_value, config.budget, config.min_keep
    )


class _CountedBaseline(_Pruner):
    """A baseline keeping a ratio, a count, or (neither given) freePruner's count per image."""

    def __init__(self, ratio: float | None = None, count: int | None = None):
        if ratio is not None and count is not None:
            raise PruningError(f"give a ratio ({ratio}) or a count ({count}), not both")
        if ratio is not None and not 0 < ratio <= 1:
            raise PruningError(f"ratio ({ratio}) must be in (0, 1]")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise PruningError(f"count ({count!r}) must be an integer >= 1")
        self.ratio, self.count = ratio, count
        self.match = FreePrunerConfig() if ratio is None and count is None else None

    def own_layers(self, num_layers: int) -> tuple[int, ...]:
        return ()

    def capture_layers(self, num_layers: int) -> tuple[int, ...]:
        match = self.match.layers_needed(num_layers) if self.match is not None else ()
        return tuple(sorted({*self.own_layers(num_layers), *match}))

    def counts(self, run: EncoderRun) -> list[int]:
        """Tokens to keep per sample."""
        if self.match is not None:
            return FreePruner(self.match).choose(run)[0].num_kept
        return [resolve_count(run.num_patches, self.ratio, self.count)] * run.batch


class RandomPruner(_CountedBaseline):
    """Uniformly random tokens, reproducible from ``seed`` (one generator per call)."""

    name = "random"

    def __init__(self, ratio: float | None = None, count: int | None = None, seed: int = 0):
        super().__init__(ratio, count)
        self.seed = seed

    def choose(self, run: EncoderRun):
        generator = torch.Generator().manual_seed(self.seed)
        kept = [random_indices(run.num_patches, n, generator) for n in self.counts(run)]
        return Selection(kept=kept, num_patches=run.num_patches, pivotal=kept), None, None


class UniformPruner(_CountedBaseline):
    """A spatially uniform grid of tokens."""

    name = "uniform"

    def choose(self, run: EncoderRun):
        kept = [uniform_grid_indices(run.rows, run.cols, n) for n in self.counts(run)]
        return Selection(kept=kept, num_patches=run.num_patches, pivotal=kept), None, None


class ClsPruner(_CountedBaseline):
    """Top-k by CLS attention at ``layer`` (default -2, the layer LLaVA reads features from);
    without a CLS token, by mean attention received."""

    name = "cls"

    def __init__(self, ratio: float | None = None, count: int | None = None, layer: int = -2):
        super().__init__(ratio, count)
        self.layer = layer

    def own_layers(self, num_layers: int) -> tuple[int, ...]:
        return (resolve_layer(self.layer, num_layers, "layer"),)

    def choose(self, run: EncoderRun):
        layer = resolve_layer(self.layer, run.num_layers, "layer")
        scores = cls_attention_scores(run.map(layer), run.num_prefix_tokens)  # (B, N)
        counts = self.counts(run)
        kept = [top_count_indices(scores[b : b + 1], n)[0] for b, n in enumerate(counts)]
        return (
            Selection(kept=kept, num_patches=run.num_patches, pivotal=kept, scores=scores),
            None,
            None,
        )


class PruMergePlusPruner(_Pruner):
    """PruMerge+ with merging. ``layer`` (default -1: the reference reads the last layer's
    q/k) gives the CLS attention and the keys; features come from ``feature_layer`` (-2,
    LLaVA's). ``ratio`` / ``count`` replace the adaptive count (truncate or fill by rank:
    outliers, spatial samples, then the rest, each by CLS attention)."""

    name = "prumerge+"

    def __init__(
        self,
        ratio: float | None = None,
        count: int | None = None,
        layer: int = -1,
        feature_layer: int = -2,
        iqr_factor: float = 1.5,
        spatial_factor: float = 3.0,
        num_neighbors: int = 32,
        merge: bool = True,
    ):
        if ratio is not None and count is not None:
            raise PruningError(f"give a ratio ({ratio}) or a count ({count}), not both")
        if ratio is not None and not 0 < ratio <= 1:
            raise PruningError(f"ratio ({ratio}) must be in (0, 1]")
        if count is not None and count < 1:
            raise PruningError(f"count ({count}) must be >= 1")
        if spatial_factor < 0 or num_neighbors < 0 or iqr_factor < 0:
            raise PruningError(
                f"spatial_factor ({spatial_factor}), num_neighbors ({num_neighbors}) and "
                f"iqr_factor ({iqr_factor}) must be >= 0"
            )
        self.ratio, self.count = ratio, count
        self.layer, self.feature_layer = layer, feature_layer
        self.iqr_factor, self.spatial_factor = iqr_factor, spatial_factor
        self.num_neighbors, self.merge = num_neighbors, merge

    def capture_layers(self, num_layers: int) -> tuple[int, ...]:
        return (resolve_layer(self.layer, num_layers, "layer"),)

    def choose(self, run: EncoderRun):
        layer = resolve_layer(self.layer, run.num_layers, "layer")
        p = run.num_prefix_tokens
        outliers, spatial, scores = prumerge_plus_masks(
            run.map(layer), p, run.rows, run.cols, self.iqr_factor, self.spatial_factor
        )
        kept = outliers | spatial  # (B, N)
        if self.ratio is not None or self.count is not None:
            target = resolve_count(run.num_patches, self.ratio, self.count)
            kept = apply_budget(kept, outliers, scores, torch.full((run.batch,), target))
        indices = [row.nonzero().squeeze(-1) for row in kept]
        selection = Selection(
            kept=indices, num_patches=run.num_patches, pivotal=indices, scores=scores
        )
        if not self.merge:
            return selection, None, None
        if not -len(run.hidden_states) <= self.feature_layer < len(run.hidden_states):
            raise PruningError(
                f"feature_layer ({self.feature_layer}) is out of "
                f"range for {len(run.hidden_states)} hidden states"
            )
        features = run.hidden_states[self.feature_layer][:, p:]  # (B, N, D)
        keys = run.keys[layer][:, p:]  # (B, N, H * D)
        merged = merge_by_key_similarity(features, keys, scores, indices, self.num_neighbors)
        return selection, merged, self.feature_layer


class KeepAllPruner(_Pruner):
    """Every patch token; no hooks. Equal to the unpruned model by construction."""

    name = "keep-all"

    def choose(self, run: EncoderRun):
        kept = _all_indices(run.num_patches, run.batch)
        return Selection(kept=kept, num_patches=run.num_patches, pivotal=kept), None, None


PRUNERS: dict[str, type[_Pruner]] = {
    cls.name: cls
    for cls in (
        FreePruner,
        RandomPruner,
        UniformPruner,
        ClsPruner,
        PruMergePlusPruner,
        KeepAllPruner,
    )
}
METHODS = tuple(PRUNERS)


def method_parameters(name: str) -> tuple[str, ...]:
    """The keyword parameters ``get_pruner(name, ...)`` accepts."""
    cls = PRUNERS[name]
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]
    if cls is FreePruner:
        params += [f.name for f in fields(FreePrunerConfig)]
    return tuple(params)


def get_pruner(name: str, **params) -> _Pruner:
    """A pruner by method name; parameters given as None are left at their defaults."""
    if name not in PRUNERS:
        raise PruningError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    params = {key: value for key, value in params.items() if value is not None}
    valid = method_parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise PruningError(
            f"unknown parameter(s) for method {name!r}: "
            f"{', '.join(unknown)}; valid: {', '.join(valid) or 'none'}"
        )
    return PRUNERS[name](**params)

"""Token pruners behind one interface (api.py's ``TokenPruner``), built by name.

``get_pruner(name, **params)`` with name one of ``METHODS``:

- ``freepruner``: the paper's method (selection.py), params = ``FreePrunerConfig`` fields
  plus ``ratio`` (a fixed budget as a fraction of the patch count).
- ``random`` (``seed``), ``uniform``, ``cls`` (``layer``): take ``ratio`` or ``count``; with
  neither they keep, per image, as many tokens as freePruner (default config) keeps on the
  same image, so that comparisons are at equal token count.
- ``prumerge+``: adaptive (IQR) count plus spatial samples, with merging; ``ratio`` /
  ``count`` fix the count instead. Its ``EncoderOutput.merged_features`` carries the merged
  features of the kept tokens.
- ``keep-all``: every patch token (the identity).

Every pruner runs the encoder once, SDPA kept, with ``AttentionCapture`` hooks only on the
layers it reads, and reports ``selection_time_s`` (capture + scoring + choosing).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from fpcost.pruner.api import EncoderOutput, Selection
from fpcost.pruner.baselines import (
    cls_attention_scores,
    merge_by_key_similarity,
    prumerge_plus_masks,
    random_indices,
    resolve_count,
    top_count_indices,
    uniform_grid_indices,
)
from fpcost.pruner.capture import AttentionCapture, find_attention_layers
from fpcost.pruner.errors import PruningError
from fpcost.pruner.selection import (
    FreePrunerConfig,
    apply_budget,
    pivotal_tokens,
    resolve_layer,
    select_freepruner,
)


@dataclass
class EncoderRun:
    """What one encoder pass gives a selection rule: captured maps and keys by resolved layer
    (each (B, T, T) / (B, T, H * D)), all hidden states, and the token geometry."""

    maps: dict[int, torch.Tensor]
    keys: dict[int, torch.Tensor]
    hidden_states: tuple[torch.Tensor, ...]
    num_layers: int
    num_prefix_tokens: int
    rows: int
    cols: int

    @property
    def num_patches(self) -> int:
        return self.rows * self.cols

    @property
    def batch(self) -> int:
        return int(self.hidden_states[-1].shape[0])


def _patch_grid(vision_model: nn.Module, pixel_values: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) of patch tokens the encoder makes from (B, C, H, W) pixels."""
    patch = getattr(getattr(vision_model, "config", None), "patch_size", None)
    if isinstance(patch, (tuple, list)):
        patch_h, patch_w = patch
    elif isinstance(patch, int):
        patch_h = patch_w = patch
    else:
        raise PruningError(
            f"{type(vision_model).__name__} has no config.patch_size; cannot count patches"
        )
    return pixel_values.shape[-2] // patch_h, pixel_values.shape[-1] // patch_w


def _all_indices(num: int, batch: int) -> list[torch.Tensor]:
    return [torch.arange(num) for _ in range(batch)]


class _Pruner:
    """Shared driver: run the encoder once with the needed hooks, then ``choose``."""

    name = ""
    head_reduce = "mean"
    keep_keys = False

    def capture_layers(self, num_layers: int) -> tuple[int, ...]:
        return ()

    def query_rows(self, num_layers: int, num_patches: int):
        """Optional ``AttentionCapture.query_rows`` callback (None: full maps)."""
        return None

    def choose(self, run: EncoderRun) -> tuple[Selection, list[torch.Tensor] | None, int | None]:
        raise NotImplementedError

    def encode_and_select(
        self, vision_model: nn.Module, pixel_values: torch.Tensor
    ) -> EncoderOutput:
        if pixel_values.ndim != 4:
            raise PruningError(
                f"pixel_values must be (B, C, H, W); got shape {tuple(pixel_values.shape)}"
            )
        rows, cols = _patch_grid(vision_model, pixel_values)
        maps: dict[int, torch.Tensor] = {}
        keys: dict[int, torch.Tensor] = {}
        hook_s, num_layers = 0.0, 0
        with torch.no_grad():
            layers: tuple[int, ...] = ()
            attention_layers = None
            if type(self).capture_layers is not _Pruner.capture_layers:
                attention_layers = find_attention_layers(vision_model)
                num_layers = len(attention_layers)
                layers = self.capture_layers(num_layers)
            if layers:
                capture = AttentionCapture(
                    vision_model,
                    layers,
                    self.head_reduce,
                    self.keep_keys,
                    query_rows=self.query_rows(num_layers, rows * cols),
                    attention_layers=attention_layers,
                )
                with capture:
                    outputs = vision_model(pixel_values, output_hidden_states=True)
                maps, keys, hook_s = capture.maps, capture.keys, capture.elapsed_s
            else:
                outputs = vision_model(pixel_values, output_hidden_states=True)
            hidden_states = tuple(outputs.hidden_states)
            num_prefix = int(hidden_states[-1].shape[1]) - rows * cols
            if num_prefix < 0:
                raise PruningError(
                    f"encoder emits {hidden_states[-1].shape[1]} "
                    f"tokens, fewer than its {rows}x{cols} patches"
                )
            run = EncoderRun(maps, keys, hidden_states, num_layers, num_prefix, rows, cols)
            start = time.perf_counter()
            selection, merged, feature_layer = self.choose(run)
            selection_time_s = hook_s + time.perf_counter() - start
        return EncoderOutput(
            hidden_states,
            selection,
            merged_features=merged,
            feature_layer=feature_layer,
            selection_time_s=selection_time_s,
        )


class FreePruner(_Pruner):
    """freePruner (paper §3.2–3.3): pivotal ∪ complementary tokens, adaptive count."""

    name = "freepruner"

    def __init__(
        self, config: FreePrunerConfig | None = None, ratio: float | None = None, **params
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
        self.head_reduce = self.config.head_reduce

    def capture_layers(self, num_layers: int) -> tuple[int, ...]:
        return self.config.layers_needed(num_layers)

    def query_rows(self, num_layers: int, num_patches: int):
        """The complementary layer reads only pivotal rows: when every pivotal layer runs
        before it, compute just those rows (about a third of the map at the defaults)."""
        pivotal_layers = self.config.pivotal_layers(num_layers)
        comp_layer = resolve_layer(
            self.config.complementary_layer, num_layers, "complementary_layer"
        )
        if comp_layer <= max(pivotal_layers):
            return None
        config = self.config

        def rows(layer: int, maps: dict[int, torch.Tensor]) -> torch.Tensor | None:
            if layer != comp_layer or any(p not in maps for p in pivotal_layers):
                return None
            num_prefix = maps[pivotal_layers[0]].shape[-1] - num_patches
            pivotal, _ = pivotal_tokens(maps, config, num_layers, num_prefix)  # (B, N)
            return num_prefix + pivotal.any(dim=0).nonzero().squeeze(-1)  # (R,) token rows

        return rows

    def choose(self, run: EncoderRun):
        config = self.config
        if self.ratio is not None:
            config = replace(config, budget=resolve_count(run.num_patches, ratio=self.ratio))
        return (
            select_freepruner(run.maps, config, run.num_layers, run.num_prefix_tokens),
            None,
            None,
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
            return select_freepruner(
                run.maps, self.match, run.num_layers, run.num_prefix_tokens
            ).num_kept
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
        scores = cls_attention_scores(run.maps[layer], run.num_prefix_tokens)  # (B, N)
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
    keep_keys = True

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
            run.maps[layer], p, run.rows, run.cols, self.iqr_factor, self.spatial_factor
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

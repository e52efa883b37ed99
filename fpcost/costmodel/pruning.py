"""What freePruner's token selection reads (paper §3.2–3.3, Algorithm 1): ``SelectionSpec``,
its defaults, their anchoring, and the settings a results file records. Its cost, the
``selection`` stage, is built from these by ``selection_cost``.

The defaults mirror ``fpcost.pruner.selection.FreePrunerConfig``: pivotal layers L_s..L =
range(L)[-4:-2] (a union over two layers), complementary layer -2 (the one LLaVA reads),
k = 0.25 × the patch count, i.e. 144 for LLaVA-1.5's 576 tokens — the setting that keeps
50% of the tokens on real photographs at 224 and 336 px within a 5% overhead budget
(docs/pruning.md). A results file
records the settings it was made with (``settings``), which override these.
``DEFAULT_SELECTION`` is those defaults as fpcost prune / generate run them: moved with the
hidden state the LLM reads (``anchored_selection``; LLaVA-OneVision: pivotal 23, 24 /
complementary 25 of 26).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import WorkloadError


@dataclass(frozen=True)
class SelectionSpec:
    """What freePruner's selection reads. ``selection_layers``: encoder layers whose attention
    maps are recomputed (pivotal layers L_s..L and the penultimate one; negative = from the
    end); ``complementary_layer``: the layer whose rows give the complementary tokens;
    ``k``: top tokens per pivotal layer."""

    selection_layers: tuple[int, ...] = (-4, -3, -2)
    complementary_layer: int = -2
    # k: an absolute count, or (None) round(k_ratio x the tower's patches), at least 1 —
    # FreePrunerConfig's rule: 144 of LLaVA-1.5's 576 tokens, 64 of a Video-LLaVA frame's 256
    k: int | None = None
    k_ratio: float = 0.25
    pivotal: tuple[int, ...] | None = None  # explicit pivotal layers (may hold the complementary)
    # "row": complementary tokens from the pivotal tokens' rows A[p, :] (Alg. 1; only those
    # rows are computed); "column": from their columns A[:, p] (§3.3's prose; every row of
    # the complementary layer's map is needed)
    direction: str = "row"
    # True: freePruner's default layers, which a family moves with the hidden state its LLM
    # reads (``anchored_selection``), as fpcost.pruner does (pruner/anchoring.py); layers a
    # user gives are taken as given
    anchored: bool = False

    def __post_init__(self) -> None:
        for name, layers in (("selection_layers", self.selection_layers),
                             ("pivotal layers", () if self.pivotal is None else self.pivotal)):
            if not isinstance(layers, tuple) or not all(_is_int(i) for i in layers) or (
                    name == "selection_layers" and not layers):
                raise WorkloadError(f"{name} {layers!r} must be a non-empty tuple of integer "
                                    "layer indices")
        if not _is_int(self.complementary_layer):
            raise WorkloadError(f"complementary layer {self.complementary_layer!r} must be an "
                                "integer layer index")
        if self.k is not None and (not _is_int(self.k) or self.k < 1):
            raise WorkloadError(f"selection k = {self.k!r} must be an integer ≥ 1")
        if isinstance(self.k_ratio, bool) or not isinstance(self.k_ratio, (int, float)) or not (
                0 < self.k_ratio <= 1):
            raise WorkloadError(f"selection k_ratio = {self.k_ratio!r} must be a number in (0, 1]")
        if self.direction not in DIRECTIONS:
            raise WorkloadError(f"selection direction {self.direction!r} is unknown; valid: "
                                f"{', '.join(DIRECTIONS)}")

    def resolved_k(self, num_patches: int) -> int:
        """Pivotal tokens per layer for a tower of ``num_patches`` patch tokens."""
        return self.k if self.k is not None else max(1, round(self.k_ratio * num_patches))

    @classmethod
    def from_layers(cls, pivotal: tuple[int, ...], complementary_layer: int, k: int,
                    direction: str = "row") -> SelectionSpec:
        """A selection with its pivotal layers given (a union over layers, which may include
        the complementary layer itself, as a results file's ``settings`` records it)."""
        pivotal = tuple(pivotal)
        return cls(pivotal + (complementary_layer,), complementary_layer, k=k, pivotal=pivotal,
                   direction=direction)

    def resolved_layers(self, num_layers: int) -> tuple[int, ...]:
        """Selection layers as sorted, unique, non-negative indices of a ``num_layers`` tower."""
        return tuple(sorted({_resolve(i, num_layers) for i in self.selection_layers}))

    def complementary_layer_resolved(self, num_layers: int) -> int:
        return _resolve(self.complementary_layer, num_layers)

    def pivotal_layers(self, num_layers: int) -> tuple[int, ...]:
        if self.pivotal is not None:
            return tuple(sorted({_resolve(i, num_layers) for i in self.pivotal}))
        complementary = self.complementary_layer_resolved(num_layers)
        return tuple(i for i in self.resolved_layers(num_layers) if i != complementary)


DIRECTIONS = ("row", "column")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


DEFAULT_SELECTION = SelectionSpec(anchored=True)  # what fpcost prune / generate run by default
REFERENCE_FEATURE_LAYER = -2  # the hidden state LLaVA-1.5 reads, to which the defaults refer


def anchored_selection(selection: SelectionSpec, num_layers: int,
                       feature_layer: int) -> SelectionSpec:
    """``selection`` with its default layers moved to the hidden state ``feature_layer`` that
    the LLM reads from an encoder of ``num_layers`` layers (``hidden_states`` holds the
    embeddings, then each layer's output), as fpcost.pruner's ``anchored_layers`` moves them:
    the complementary layer is the one whose output the LLM reads, the pivotal layers the two
    before it. LLaVA-1.5 (-2 of 24) keeps -4, -3 / -2; LLaVA-OneVision (-1 of 26) gets -3, -2
    / -1 (layers 23, 24 / 25). Unchanged unless ``selection.anchored``, or where the read
    layer leaves fewer than two layers before it."""
    if not selection.anchored or not -(num_layers + 1) <= feature_layer <= num_layers:
        return selection
    producing = feature_layer % (num_layers + 1) - 1  # the encoder layer whose output is read
    shift = producing - REFERENCE_FEATURE_LAYER % (num_layers + 1) + 1
    if producing < 2 or shift == 0:
        return selection
    pivotal = range(num_layers)[max(-4 + shift, -num_layers):-2 + shift]  # FreePrunerConfig's
    complementary = -2 + shift
    return replace(selection, selection_layers=tuple(i - num_layers for i in pivotal)
                   + (complementary,), complementary_layer=complementary, pivotal=None,
                   anchored=False)


def _resolve(index: int, num_layers: int) -> int:
    if not -num_layers <= index < num_layers:
        raise WorkloadError(
            f"selection layer {index} is out of range for a {num_layers}-layer vision tower; "
            f"valid: {-num_layers}..{num_layers - 1}"
        )
    return index % num_layers


# Methods of ``fpcost prune`` whose selection needs no attention map: nothing to cost.
FREE_METHODS = ("random", "uniform", "keep-all")
# Methods whose selection reads attention in their own way; their cost is not modelled.
UNMODELLED_METHODS = ("cls", "prumerge+")
# freePruner's defaults before results files recorded their ``settings`` (fpcost.pruner's
# FreePrunerConfig then): pivotal layers range(L)[-3:-2], complementary -2, k = 192.
LEGACY_PARAMS = {"pivotal_start_layer": -3, "pivotal_end_layer": -2, "complementary_layer": -2,
                 "k": 192}


@dataclass(frozen=True)
class FileSelection:
    """How a results file's selection is costed: ``spec`` (None: the selection stage is
    left out) and a one-line ``description`` saying where the settings came from."""

    spec: SelectionSpec | None
    description: str


def selection_from_file(method: str | None, params: dict, settings: dict | None,
                        num_layers: int, num_tokens: int, where: str = "results file",
                        windowed_layers: tuple[int, ...] = ()) -> FileSelection:
    """The selection a results file was made with, for a vision tower of ``num_layers``
    layers (``num_tokens``: the file's patch tokens per image, for a fractional k).

    freePruner: the file's ``settings`` (``pivotal_layers``: resolved layer indices, ``k``,
    ``complementary_layer``) when present, else its ``params`` (``pivotal_start_layer``,
    ``pivotal_end_layer``, ``complementary_layer``, ``k``) over the defaults fpcost prune
    used before it recorded settings. random / uniform / keep-all: no selection cost. cls /
    prumerge+: their selection cost is not modelled (left out, and said so).
    ``windowed_layers``: the model's layers that attend within windows (Qwen2.5-VL); the
    description names those the selection reads, and the file's own ``windowed_layers``
    (what the pruned tower windowed) where they differ: the cost is this model's."""
    method = method or "freepruner"
    if method in FREE_METHODS:
        return FileSelection(None, f"{method}: reads no attention map, no selection cost")
    if method in UNMODELLED_METHODS:
        return FileSelection(None, f"{method}: selection cost not modelled (left out)")
    if method != "freepruner":
        raise WorkloadError(f"{where}: method {method!r} is unknown; valid: freepruner, "
                            f"{', '.join(FREE_METHODS + UNMODELLED_METHODS)}")
    if settings is not None and "pivotal_layers" in settings:
        layers = settings["pivotal_layers"]
        if not isinstance(layers, list) or not layers or not all(_is_int(i) for i in layers):
            raise WorkloadError(f"{where}: settings.pivotal_layers = {_brief(layers)} must be a "
                                "non-empty list of integer layer indices")
        k = _file_k(settings.get("k", params.get("k", LEGACY_PARAMS["k"])), num_tokens, where)
        complementary = _file_int(settings, params, "complementary_layer", where)
        direction = settings.get("direction", "row")
        if direction not in DIRECTIONS:
            raise WorkloadError(f"{where}: settings.direction = {_brief(direction)} is unknown; "
                                f"valid: {', '.join(DIRECTIONS)}")
        source = "the file's settings"
    else:
        start = _file_int({}, params, "pivotal_start_layer", where)
        end = _file_int({}, params, "pivotal_end_layer", where)
        layers = list(range(num_layers)[start:end])
        if not layers:
            raise WorkloadError(f"{where}: pivotal layers range({num_layers})[{start}:{end}] is "
                                "empty for this vision tower")
        k = _file_k(params.get("k", LEGACY_PARAMS["k"]), num_tokens, where)
        complementary = _file_int({}, params, "complementary_layer", where)
        direction = "row"
        source = "the file's params" if params else "fpcost prune's defaults (no settings in the file)"
    for index in (*layers, complementary):
        if not -num_layers <= index < num_layers:
            raise WorkloadError(f"{where}: selection layer {index} is out of range for this "
                                f"model's {num_layers}-layer vision tower")
    spec = SelectionSpec.from_layers(tuple(layers), complementary, k, direction)
    resolved = spec.pivotal_layers(num_layers)
    read = spec.resolved_layers(num_layers)
    windows = ": every layer has the same cost"
    if windowed_layers or (settings or {}).get("windowed_layers"):
        here = [i for i in read if i in windowed_layers]
        windows = f"; windowed here: {','.join(map(str, here)) or 'none'}"
        recorded = (settings or {}).get("windowed_layers")
        if recorded is not None and (not isinstance(recorded, list) or not all(
                _is_int(i) for i in recorded)):
            raise WorkloadError(f"{where}: settings.windowed_layers = {_brief(recorded)} must be "
                                "a list of integer layer indices")
        if recorded is not None and sorted(recorded) != here:
            windows += f" (the file's tower: {','.join(map(str, recorded)) or 'none'})"
    return FileSelection(spec, f"freepruner, from {source}: pivotal layers "
                               f"{','.join(map(str, resolved))}, complementary layer "
                               f"{spec.complementary_layer_resolved(num_layers)} ({direction}s), "
                               f"k = {k} (the file's layer indices, read in this model's "
                               f"{num_layers}-layer tower{windows})")


def _file_int(settings: dict, params: dict, key: str, where: str) -> int:
    value = settings.get(key, params.get(key, LEGACY_PARAMS[key]))
    if not _is_int(value):
        raise WorkloadError(f"{where}: {key} = {_brief(value)} must be an integer layer index")
    return value


def _file_k(value, num_tokens: int, where: str) -> int:
    """k as an integer ≥ 1, or a fraction in (0, 1] of the image's patch tokens."""
    if _is_int(value) and value >= 1:
        return value
    if isinstance(value, float) and 0 < value <= 1:
        return max(1, round(value * num_tokens))
    raise WorkloadError(f"{where}: k = {_brief(value)} must be an integer ≥ 1 or a fraction "
                        "in (0, 1] of the patch tokens")


def _brief(value) -> str:
    if _is_int(value) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

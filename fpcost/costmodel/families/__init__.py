"""Model families: one module per family knows everything fpcost needs about it, behind the
small protocol ``ModelFamily``; nothing outside a family module tests a family's name.

A family is chosen from the Hugging Face ``model_type`` of a ``config.json``
(``family_for_config``) and, for a spec already built, from its ``ModelSpec.kind``
(``family_of``). What a family provides:

- ``read_config(data, name, origin)``: the ``ModelSpec`` of a parsed config.json;
- ``check_spec(spec)``: its own consistency checks, run by ``ModelSpec.__post_init__``;
- ``visual_layout(spec, image_size, num_frames, pixel_limits)``: per sample, the images
  (frames, crops) the tower runs, tokens per image, visual tokens the LLM receives, tokens
  projected (``pixel_limits``: a dynamic-resolution family's (min_pixels, max_pixels));
- ``vision_ops`` / ``selection_ops`` / ``projector_ops``: the operators of the ``vision``,
  ``selection`` and ``projector`` stages; ``decoder_ops``: the LLM's, for one pass;
- ``effective_selection`` / ``selection_scored_tokens`` / ``pruned_projected_tokens``: the
  selection as the family's pruner runs it (anchored layers), the tokens it scores per unit,
  and the tokens the projector runs on once pruned (as the family's pruner adapter runs it);
- ``parameter_counts(spec)``: parameters of each part and their ``total``;
- for the memory estimate and the CLI: ``vision_residual_elements`` (the tower's residual
  stream per sample), ``tower_depth`` and ``num_layers_run`` (the encoder layers selection
  indices count, and those executed), ``uses_image_size`` / ``image_size_note`` (whether
  ``--image-size`` changes anything, and why not), ``uses_pixel_limits`` (whether
  ``--min-pixels`` / ``--max-pixels`` do), ``costs_selection`` / ``selection_note``
  (whether freePruner's selection is costed, and what the report says when it is not),
  ``tokens_unit`` (what one unit of a results file's tokens is).

Token counts and batch sizes given to the operator builders may be Python ints or numpy
int64 arrays (a sweep builds a whole grid at once): arrays in, arrays out, so a count is
used in arithmetic, never in an ``if``; weights are loaded once per forward pass, so a
weight term never scales with the batch. The stage
assembly that calls these methods is ``pipeline.stage_ops``, shared by ``estimate`` and
``sweep``. Adding a family: subclass ``ModelFamily`` in a new module, ``register`` an
instance, import the module at the bottom of this file (README: "Adding a model").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..layout import NO_VISION, VisualLayout
from ..llm import decoder_ops as llama_decoder_ops

if TYPE_CHECKING:  # only for annotations: pipeline imports this package
    from ..llm import DecoderPass
    from ..ops import Op
    from ..pipeline import PipelineSettings
    from ..pruning import SelectionSpec
    from ..spec import ModelSpec


class ModelFamily:
    """The protocol of a model family, with the defaults of a text-only Llama-family LLM
    (no vision side). ``name`` is the ``ModelSpec.kind`` a family's specs carry;
    ``model_types`` the ``config.json`` ``model_type`` values it reads."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    has_vision: bool = False
    uses_image_size: bool = False  # whether the image size changes the visual tokens
    uses_pixel_limits: bool = False  # whether min/max pixels (dynamic resolution) do
    costs_selection: bool = True  # False: pruning runs no selection stage (left out)

    # --- reading --------------------------------------------------------------------------
    def read_config(self, data: dict, name: str, origin: str) -> ModelSpec:
        raise NotImplementedError

    def check_spec(self, spec: ModelSpec) -> None:
        """Raise ``ConfigError`` if ``spec`` is not a valid model of this family."""

    # --- the vision side ------------------------------------------------------------------
    def visual_layout(self, spec: ModelSpec, image_size: tuple[int, int] | None = None,
                      num_frames: int | None = None,
                      pixel_limits: tuple[int | None, int | None] | None = None) -> VisualLayout:
        """The unpruned vision side of one sample for an image of ``image_size`` (width,
        height; None: the family's default) and, for video, ``num_frames`` frames;
        ``pixel_limits`` (min_pixels, max_pixels) matter where ``uses_pixel_limits``."""
        return NO_VISION

    def vision_ops(self, spec: ModelSpec, layout: VisualLayout, settings: PipelineSettings,
                   batch_size) -> list[Op]:
        return []

    def selection_ops(self, spec: ModelSpec, layout: VisualLayout, settings: PipelineSettings,
                      num_images) -> list[Op]:
        """freePruner's selection over ``num_images`` images (0 where nothing is pruned)."""
        return []

    def projector_ops(self, spec: ModelSpec, layout: VisualLayout, settings: PipelineSettings,
                      num_tokens) -> list[Op]:
        """The projector over ``num_tokens`` visual tokens (all samples)."""
        return []

    def effective_selection(self, spec: ModelSpec, selection: SelectionSpec | None
                            ) -> SelectionSpec | None:
        """The selection as the family's pruner runs it (e.g. default layers anchored to the
        layer the LLM reads); None stays None."""
        return selection

    def windowed_layers(self, spec: ModelSpec) -> tuple[int, ...]:
        """Tower layers that attend within windows (Qwen2.5-VL), whose maps a selection
        computes window by window."""
        return ()

    def selection_scored_tokens(self, spec: ModelSpec, layout: VisualLayout) -> int:
        """Tokens per selection unit that freePruner scores (its k is a ratio of these)."""
        return 0

    def pruned_projected_tokens(self, spec: ModelSpec, layout: VisualLayout, num_visual_tokens):
        """Tokens per sample the projector runs on when the LLM receives ``num_visual_tokens``
        (< the unpruned count; int or int array): by default the kept ones (the pruner
        selects, then projects), never more than unpruned. a - (a - b)·(a > b) = min(a, b)."""
        projected = layout.num_projected_tokens
        return num_visual_tokens - (num_visual_tokens - projected) * (num_visual_tokens > projected)

    def tower_depth(self, spec: ModelSpec) -> int:
        """Encoder layers of the vision tower (selection layer indices count them)."""
        return 0

    def num_layers_run(self, spec: ModelSpec, settings: PipelineSettings) -> int:
        """Encoder layers executed under ``settings.vision_layers`` ("all" or "feature")."""
        return 0

    def selection_note(self, spec: ModelSpec) -> str:
        """Why no selection stage runs (for a family that does not cost it)."""
        return ""

    def image_size_note(self, spec: ModelSpec) -> str:
        """Why an image size changes nothing (for a family that does not use it)."""
        return "it has no vision tower"

    def vision_residual_elements(self, spec: ModelSpec, layout: VisualLayout) -> int:
        """Elements of the tower's residual stream per sample (memory.py's peak)."""
        return 0

    def tokens_unit(self, spec: ModelSpec, layout: VisualLayout) -> str:
        """What one image's visual tokens are, for messages about results files."""
        return ""

    # --- the LLM and the weights ----------------------------------------------------------
    def decoder_ops(self, spec: ModelSpec, settings: PipelineSettings,
                    step: DecoderPass) -> list[Op]:
        """The LLM's operators for one pass (prefill or decode steps)."""
        return llama_decoder_ops(spec.llm, settings.quant, step, settings.accounting,
                                 settings.flash_attention, settings.onchip_buffer_bytes)

    def parameter_counts(self, spec: ModelSpec) -> dict[str, int]:
        """Parameters of each part (``llm``, ``vision``, ``projector``, …), without total."""
        from ..params import llm_params

        return {"llm": llm_params(spec.llm)}


_BY_NAME: dict[str, ModelFamily] = {}
_BY_MODEL_TYPE: dict[str, ModelFamily] = {}
TEXT_ONLY = "llm"  # the family of a bare LLM config (no vision side)


def register(family: ModelFamily) -> ModelFamily:
    """Make ``family`` known by its ``name`` and each of its ``model_types``."""
    for key, table in [(family.name, _BY_NAME)] + [(t, _BY_MODEL_TYPE) for t in family.model_types]:
        if key in table:
            raise ValueError(f"model family {key!r} is registered twice")
        table[key] = family
    return family


def family_names() -> tuple[str, ...]:
    """Every registered family's ``name`` (the valid ``ModelSpec.kind`` values)."""
    return tuple(_BY_NAME)


def image_size_families() -> str:
    """The families whose visual tokens depend on the image size, for messages:
    "llava-next, llava-onevision, qwen2-vl, qwen2.5-vl" (the registry's names)."""
    return ", ".join(name for name, family in _BY_NAME.items() if family.uses_image_size)


def multimodal_model_types() -> tuple[str, ...]:
    """Every ``model_type`` of a config.json with a vision side that fpcost reads."""
    return tuple(_BY_MODEL_TYPE)


def family_named(kind: str) -> ModelFamily:
    if kind not in _BY_NAME:
        raise ConfigError(f"kind {kind!r} is unknown; valid: {', '.join(_BY_NAME)}")
    return _BY_NAME[kind]


def family_of(spec: ModelSpec) -> ModelFamily:
    """The family of a built spec."""
    return family_named(spec.kind)


def family_for_model_type(model_type: str) -> ModelFamily | None:
    return _BY_MODEL_TYPE.get(model_type)


def text_only_family() -> ModelFamily:
    return _BY_NAME[TEXT_ONLY]


# The families fpcost knows; each module registers itself on import.
# Import order is the order of the valid model types in messages.
from . import llama, llava, video_llava, llava_next, qwen_vl, llava_onevision  # noqa: E402,F401,I001

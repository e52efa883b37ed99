"""The cost model's Qwen-VL ``selection`` stage against what ``select_merged`` runs.

``FlopCounterMode`` counts the matmuls (2 FLOPs per multiply-add) and nothing else; the
towers run on SDPA, which a CPU build of torch does not count, so the tower's own pass counts
the same with or without the pruner's hooks, and select_merged's count less the tower's is
the selection's q·kᵀ matmuls: the pivotal layers' maps (within each temporal slice, or
window) and the complementary layer's pooled rows. With k = every merged token, all rows of
the complementary layer are computed, so the cost model's row count (its upper bound
min(pivotal layers × k, tokens)) is exact and the FLOPs must match to the FLOP.
"""

import pytest
from qwen_tiny import MAX_PIXELS, MIN_PIXELS, picture, processed, qwen_model, visual
from torch.utils.flop_counter import FlopCounterMode

from fpcost.costmodel.accounting import get_accounting
from fpcost.costmodel.families import family_for_model_type
from fpcost.costmodel.families.qwen_vl import QWEN2_5_VL_FAMILY
from fpcost.costmodel.layout import VisualLayout
from fpcost.costmodel.pipeline import PipelineSettings
from fpcost.costmodel.pruning import DEFAULT_SELECTION, SelectionSpec
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.selection_cost import geometry_selection_ops
from fpcost.pruner.methods import get_pruner
from fpcost.pruner.qwen_vision import select_merged

KINDS = ("qwen2_vl", "qwen2_5_vl")
SIZE = (230, 170)  # width, height: a (1, 12, 16) patch grid, 48 merged tokens


def _flops(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def _tiny_spec_and_layout(model, image_size=SIZE):
    family = family_for_model_type(model.config.model_type)
    spec = family.read_config(model.config.to_dict(), "tiny", "a tiny test model")
    layout = family.visual_layout(spec, image_size, pixel_limits=(MIN_PIXELS, MAX_PIXELS))
    return family, spec, layout


def _model_selection_flops(family, spec, layout, selection: SelectionSpec) -> int:
    ops = geometry_selection_ops(family.selection_geometry(spec, layout), selection, 1,
                                 spec.vision.depth)
    return sum(op.count * op.tensor_flops for op in ops)


def _pruner_selection_flops(tower, pixels, grid, pruner) -> int:
    return _flops(lambda: select_merged(pruner, tower, pixels, grid)) - _flops(
        lambda: tower(pixels, grid_thw=grid))


@pytest.mark.parametrize("kind", KINDS)
def test_selection_tensor_flops_equal_the_pruners_matmuls(kind):
    model = qwen_model(kind)
    tower = visual(model)
    pixels, grid = processed([picture(SIZE[1], SIZE[0], seed=1)])
    family, spec, layout = _tiny_spec_and_layout(model)
    assert grid.tolist() == [[1, 12, 16]] and layout.num_visual_tokens == 48
    # the paper's default layers (-4, -3 / -2), k = all 48 merged tokens
    got = _pruner_selection_flops(tower, pixels, grid, get_pruner("freepruner", k=48))
    expected = _model_selection_flops(family, spec, layout, SelectionSpec(k=48))
    assert got == expected > 0


def test_selection_by_hand_qwen2_5_windows():
    """The tiny Qwen2.5-VL tower: 6 blocks, full attention at 2 and 5, windows of 4 × 4
    patches. Default layers: pivotal 2 (full: one 192-patch map) and 3 (windowed: 12 maps of
    16 patches), complementary 4 (windowed): the rows of all 48 merged tokens = 192 patch
    rows, each against its 16-patch window; 4 heads of 8."""
    model = qwen_model("qwen2_5_vl")
    family, spec, layout = _tiny_spec_and_layout(model)
    geometry = family.selection_geometry(spec, layout)
    assert geometry.windows == (16,) * 12 and geometry.segments == (192,)
    assert family.windowed_layers(spec) == (0, 1, 3, 4)
    ops = {op.name: op for op in geometry_selection_ops(geometry, SelectionSpec(k=48), 1, 6)}
    mac = 2 * 4 * 8  # FLOPs of one query-key pair over 4 heads of width 8
    assert ops["map_qk"].tensor_flops == mac * 192 * 192
    assert ops["window_map_qk"].tensor_flops == mac * 12 * 16 * 16
    assert ops["window_complementary_rows_qk"].tensor_flops == mac * 192 * 16
    assert ops["window_complementary_rows_pool"].act_write_bytes == 48 * 48 * 4  # (R, M) fp32
    assert ops["degree_pool"].count == 2 and ops["top_k"].vector_flops == 48 * 6  # ⌈log₂48⌉
    assert ops["iqr_threshold"].act_read_bytes == 48 * 48 * 4


def test_default_k_is_an_upper_bound_of_the_rows_computed():
    """With k = round(0.25 · 48) = 12 per pivotal layer the pruner computes the rows of the
    union of two top-12 sets (data-dependent, at most 24): the model charges 24."""
    model = qwen_model("qwen2_vl")
    tower = visual(model)
    pixels, grid = processed([picture(SIZE[1], SIZE[0], seed=1)])
    family, spec, layout = _tiny_spec_and_layout(model)
    got = _pruner_selection_flops(tower, pixels, grid, get_pruner("freepruner"))
    upper = _model_selection_flops(family, spec, layout, SelectionSpec())
    maps_only = 2 * (2 * 4 * 8 * 192 * 192)  # two pivotal maps; heads 4 of width 8
    assert maps_only + 2 * 4 * 8 * 12 * 4 * 192 <= got <= upper
    assert upper == maps_only + 2 * 4 * 8 * 24 * 4 * 192


def test_the_pipeline_costs_one_selection_per_image_or_video():
    """A video of 4 temporal slices is scored once (select_merged per grid row), its full
    layers per slice: the pipeline's num_images (samples × slices) is divided back."""
    spec = family_for_model_type("qwen2_5_vl").read_config(
        qwen_model("qwen2_5_vl").config.to_dict(), "tiny", "a tiny test model")
    video = QWEN2_5_VL_FAMILY.visual_layout(spec, SIZE, num_frames=7,
                                            pixel_limits=(MIN_PIXELS, MAX_PIXELS))
    assert video.num_images == 4 and isinstance(video, VisualLayout)
    settings = PipelineSettings(QuantPlan(), get_accounting("fpcost"), False, 0.0,
                                selection=DEFAULT_SELECTION)
    ops = QWEN2_5_VL_FAMILY.selection_ops(spec, video, settings, 2 * video.num_images)
    one = geometry_selection_ops(QWEN2_5_VL_FAMILY.selection_geometry(spec, video),
                                 DEFAULT_SELECTION, 2, spec.vision.depth)
    assert ops == one
    full = {op.name: op for op in one}["map_qk"]
    assert full.tensor_flops == 2 * (2 * 4 * 8) * 4 * 192 * 192  # 2 videos × 4 slices

"""Model families as plug-ins (issue 11): one module per family behind ``ModelFamily``,
chosen from the config's ``model_type``; nothing outside a family module tests a family's
name; a new family reaches estimate, sweep, parameter counts, memory and config reading
through the registry alone."""

import re
from dataclasses import replace
from pathlib import Path

import pytest

import fpcost
from fpcost.costmodel import families
from fpcost.costmodel.errors import ConfigError
from fpcost.costmodel.estimate import estimate
from fpcost.costmodel.families import ModelFamily, family_of
from fpcost.costmodel.families.llava import LlavaFamily
from fpcost.costmodel.hfconfig import spec_from_config
from fpcost.costmodel.layout import VisualLayout
from fpcost.costmodel.memory import weight_bytes_by_part
from fpcost.costmodel.params import parameter_counts
from fpcost.costmodel.pipeline import visual_layout
from fpcost.costmodel.presets import PRESETS, get_preset
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import ModelSpec
from fpcost.costmodel.sweep import TOTALS, sweep
from fpcost.costmodel.workload import Workload

from .test_hfconfig import LLAMA_3_8B, LLAVA_15_7B

ROOT = Path(fpcost.__file__).parent


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_its_family(name):
    spec = PRESETS[name]
    family = family_of(spec)
    assert family.name == spec.kind and family.has_vision
    assert family.visual_layout(spec) == visual_layout(spec)


@pytest.mark.parametrize("model_type, kind", [("llava", "llava"), ("video_llava", "video-llava"),
                                              ("llava_next", "llava-next")])
def test_the_model_type_chooses_the_family(model_type, kind):
    data = {**LLAVA_15_7B, "model_type": model_type}
    if model_type == "llava_next":
        data["image_grid_pinpoints"] = [[336, 672], [672, 336], [672, 672]]
    assert spec_from_config(data).kind == kind
    assert spec_from_config(LLAMA_3_8B).kind == "llm"


def test_a_kind_outside_the_registry_is_refused():
    valid = "valid: llm, llava, video-llava, llava-next"
    with pytest.raises(ConfigError, match=f"kind 'blip' is unknown; {valid}"):
        ModelSpec(name="x", kind="blip", llm=get_preset("llava-1.5-7b").llm)


# Outside the family modules no code branches on a family's name: no `kind == "..."`,
# `kind in (...)`, and no ViT `family == "..."` (a lookup in a registry or table is not a
# name test; the pruner's own inputs are its business).
NAME_TEST = re.compile(r"\.(kind|family)\s*(==|!=)|\.(kind|family)\s+(not\s+)?in\s*[(\[{]")


def test_nothing_outside_a_family_module_tests_a_familys_name():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(("costmodel/families/", "pruner/")) or relative == "files.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if NAME_TEST.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# --- a family added by registration alone ----------------------------------------------------

class TwoImageFamily(LlavaFamily):
    """A toy family: LLaVA-1.5 reading two images per sample (twice the tokens), with the
    images' tower weights shared; registered only inside the test."""

    name = "two-image-llava"
    model_types = ("two_image_llava",)

    def read_config(self, data, name, origin):
        spec = super().read_config(data, name, origin)
        return replace(spec, default_num_visual_tokens=2 * spec.default_num_visual_tokens)

    def visual_layout(self, spec, image_size=None, num_frames=None):
        visual = spec.default_num_visual_tokens
        return VisualLayout(2, spec.vision.num_positions, visual, visual)


@pytest.fixture
def two_image(monkeypatch):
    family = TwoImageFamily()
    monkeypatch.setitem(families._BY_NAME, family.name, family)
    monkeypatch.setitem(families._BY_MODEL_TYPE, family.model_types[0], family)
    return spec_from_config({**LLAVA_15_7B, "model_type": "two_image_llava"}, name="two")


def test_a_registered_family_reaches_every_part(two_image, a6000, monkeypatch):
    spec = two_image
    base = get_preset("llava-1.5-7b")
    assert spec.kind == "two-image-llava" and spec.default_num_visual_tokens == 1152
    assert parameter_counts(spec)["total"] == parameter_counts(base)["total"]
    assert weight_bytes_by_part(spec, QuantPlan(), QuantPlan()).keys() == {"llm", "vision", "projector"}
    # the tower runs twice the images of LLaVA-1.5 (exact: the count is a product)
    two = estimate(spec, Workload(1152, 40), a6000)
    one = estimate(base, Workload(576, 40), a6000)
    assert two.stage_totals("vision").flops == 2 * one.stage_totals("vision").flops
    # and the sweep, built by the same stage assembly, agrees row by row
    frame = sweep([spec], [a6000], [16, 4], keep_ratios=[0.25, 1.0], batch_sizes=[1, 2],
                  num_output_tokens=4)
    for row in frame.itertuples(index=False):
        result = estimate(spec, Workload(row.num_visual_tokens, 40, row.batch_size,
                                         num_output_tokens=4), a6000, QuantPlan.parse(row.quant))
        for stage in result.stages:
            for total in TOTALS:
                expected = getattr(result.stage_totals(stage), total)
                assert getattr(row, f"{stage}_{total}") == pytest.approx(expected, rel=1e-12)
    # a family's default protocol methods: a text-only family has no vision side
    assert ModelFamily().visual_layout(spec) == VisualLayout(0, 0, 0, 0)

"""``benchmarks/generate_checkpoint.py --family``: each mid-size checkpoint loads as
``fpcost generate`` loads it, and a 512 x 512 image expands to the visual-token count its
docstring and docs/generate-families.md state (and the cost model lays out the same)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fpcost.api import estimate
from fpcost.pruner.generate import load_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "generate_checkpoint.py"
# family: (image placeholder token id, visual tokens for a 512 x 512 image, estimate layout)
EXPECTED = {
    "qwen2_vl": (151, 256, dict(image_size=(512, 512), min_pixels=3136, max_pixels=448 * 448)),
    "qwen2_5_vl": (151, 256, dict(image_size=(512, 512), min_pixels=3136, max_pixels=448 * 448)),
    "llava_onevision": (100, 416, dict(image_size=(512, 512))),
}


def _script():
    spec = importlib.util.spec_from_file_location("generate_checkpoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_the_family_loads_and_lays_the_image_out_as_documented(family, tmp_path):
    _script().main([str(tmp_path / family), "--family", family])
    checkpoint = load_checkpoint(tmp_path / family)
    assert checkpoint.model_type == family
    token_id, num_visual, layout = EXPECTED[family]
    image = Image.fromarray((np.random.default_rng(0).random((512, 512, 3)) * 255).astype("uint8"))
    prompt = getattr(checkpoint.processor, "image_prompt", "<image>") + " w5 w6"
    batch = checkpoint.processor(images=image, text=prompt, return_tensors="pt")
    assert int((batch["input_ids"] == token_id).sum()) == num_visual
    modelled = estimate(model=str(tmp_path / family / "config.json"), hardware="a6000",
                        text_tokens=2, **layout).workload.num_visual_tokens
    assert modelled == num_visual
    assert sum(p.numel() for p in checkpoint.model.parameters()) > 30_000_000  # mid-size

"""The Qwen adapter with the real merged-token selector (``qwen_vision.select_merged``), not a
stand-in: keep-all equals plain ``generate`` at batch 1 and 2 (two image sizes, left
padding), and freePruner / random keep fewer merged tokens, each kept one at its original
M-RoPE position, on both tiny Qwen families."""

import pytest
import torch
from qwen_gen_models import BUILDERS, GRIDS, num_merged, type_ids
from qwen_gen_models import image_inputs as _inputs

from fpcost.pruner.adapters import generate_pruned
from fpcost.pruner.adapters.stages import StageClock
from fpcost.pruner.methods import KeepAllPruner, get_pruner

GREEDY = {"max_new_tokens": 4, "do_sample": False}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def model(request):
    return BUILDERS[request.param](seed=0)


@pytest.mark.parametrize("batch", [1, 2])
def test_keep_all_with_the_real_selector_equals_plain_generate(model, batch):
    inputs = _inputs(batch)
    plain = model.generate(**inputs, mm_token_type_ids=type_ids(inputs["input_ids"]), **GREEDY)
    result = generate_pruned(model, inputs, KeepAllPruner(), **GREEDY)
    assert torch.equal(result.sequences, plain[:, inputs["input_ids"].shape[1]:])
    assert result.num_kept == [num_merged(g) for g in GRIDS[:batch]]


@pytest.mark.parametrize("method", ["freepruner", "random"])
def test_pruning_with_the_real_selector_keeps_fewer(model, method):
    inputs = _inputs(2)
    clock = StageClock()
    # a budget: freePruner's adaptive count on Qwen2.5-VL's windowed default layers keeps
    # whole windows, i.e. every token of these small images (README, "Qwen2-VL / Qwen2.5-VL")
    pruner = get_pruner(method, ratio=0.5)
    result = generate_pruned(model, inputs, pruner, stage_clock=clock, **GREEDY)
    totals = [num_merged(g) for g in GRIDS]
    assert result.num_tokens == totals
    assert all(0 < kept < total for kept, total in zip(result.num_kept, totals, strict=True))
    assert result.sequences.shape == (2, GREEDY["max_new_tokens"])
    assert set(clock.times_s) == {"vision", "projector", "llm"}
    assert clock.selection_time_s is not None and clock.selection_time_s > 0


def test_fpcost_generate_with_the_real_selector(capsys, tmp_path):
    """``fpcost generate`` on a saved tiny Qwen2-VL checkpoint, no stand-in: keep-all answers
    as the unpruned run, freePruner at 0.5 keeps half the merged tokens."""
    import json

    import numpy as np
    from PIL import Image
    from test_cli_generate_qwen import MAX_PIXELS, MIN_PIXELS, PROMPT, tiny_tokenizer
    from transformers import Qwen2VLImageProcessorPil

    from tests.cli_helpers import run_cli

    directory = tmp_path / "checkpoint"
    BUILDERS["qwen2_vl"](seed=0).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS).save_pretrained(directory)
    pixels = (np.random.default_rng(0).random((112, 112, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(tmp_path / "image.png")
    for method, ratio in (("keep-all", []), ("freepruner", ["--ratio", "0.5"])):
        code, out, err = run_cli(capsys, "generate", tmp_path / "image.png", "--model", directory,
                                 "--prompt", PROMPT, "--method", method, *ratio,
                                 "--max-new-tokens", "3", "--repeats", "1", "--format", "json")
        assert code == 0, err
        unpruned, pruned = json.loads(out)["runs"]
        assert unpruned["num_visual_tokens"] == pruned["num_visual_tokens"] == 16
        if method == "keep-all":
            assert pruned["answer"] == unpruned["answer"] and pruned["num_kept"] == 16
        else:
            assert pruned["num_kept"] == 8

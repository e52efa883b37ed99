"""``fpcost generate`` on a tiny LLaVA saved with save_pretrained, with a processor built
locally (a WordLevel tokenizer, CLIPImageProcessorPil, LlavaProcessor): no hub."""

import csv
import io
import json
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import (
    GRID_PINPOINTS,
    IMAGE_SIZE,
    IMAGE_TOKEN_ID,
    NUM_PATCHES,
    PATCH_SIZE,
    VOCAB_SIZE,
    tiny_llava,
    tiny_llava_next,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessorPil,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from fpcost.costmodel.quant import QuantPlan
from fpcost.pruner.timing import cpu_name
from tests.cli_helpers import one_line_error, run_cli

SPECIAL = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<image>": IMAGE_TOKEN_ID}
PROMPT = "w5 w6 w7 w8"
STAGES = ("vision", "selection", "projector", "prefill", "decode")
RUN_KEYS = {"label", "method", "ratio", "answer", "num_visual_tokens", "num_kept",
            "num_prompt_tokens", "num_new_tokens", "ttft_s", "decode_s", "total_s",
            "measured_speedup", "measured_ttft_speedup", "predicted_total_s",
            "predicted_ttft_s", "predicted_speedup", "predicted_ttft_speedup",
            *(f"{stage}_s" for stage in STAGES), *(f"predicted_{stage}_s" for stage in STAGES),
            "other_s"}
FAST = ("--max-new-tokens", "4", "--repeats", "1", "--format", "json")


def tiny_processor() -> LlavaProcessor:
    """Words ``w<id>`` for every id not special; ``<image>`` expands to NUM_PATCHES tokens
    (28 px / 7 px patches; the CLS token is dropped by the default feature strategy)."""
    vocab = dict(SPECIAL)
    vocab.update({f"w{i}": i for i in range(VOCAB_SIZE) if i not in SPECIAL.values()})
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"},
    )
    images = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    directory = root / "tiny-llava"
    tiny_llava(seed=0).save_pretrained(directory)
    tiny_processor().save_pretrained(directory)
    pixels = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(root / "image.png")
    return directory, root / "image.png"


@pytest.fixture(scope="module")
def next_checkpoint(tmp_path_factory, checkpoint):
    """A tiny LLaVA-NeXT (AnyRes crops of 28 px) with a local LlavaNextProcessor."""
    directory = tmp_path_factory.mktemp("generate-next") / "tiny-llava-next"
    model = tiny_llava_next(seed=0)
    images = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=GRID_PINPOINTS,
    )
    processor = LlavaNextProcessor(
        image_processor=images, tokenizer=tiny_processor().tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory, checkpoint[1]




def _json_runs(capsys, *args):
    code, out, err = run_cli(capsys, "generate", *args)
    assert code == 0, err
    payload = json.loads(out)
    for run in payload["runs"]:
        assert set(run) == RUN_KEYS
    return payload


def test_the_processor_expands_the_image_token(checkpoint):
    directory, image = checkpoint
    batch = tiny_processor()(images=Image.open(image), text="<image>" + PROMPT, return_tensors="pt")
    assert int((batch["input_ids"] == IMAGE_TOKEN_ID).sum()) == NUM_PATCHES


def test_keep_all_gives_the_unpruned_answer(capsys, checkpoint):
    directory, image = checkpoint
    payload = _json_runs(capsys, image, "--model", directory, "--prompt", PROMPT,
                         "--method", "keep-all", *FAST)
    unpruned, kept = payload["runs"]
    assert unpruned["answer"] == kept["answer"] and unpruned["answer"].strip()
    assert unpruned["num_kept"] == kept["num_kept"] == NUM_PATCHES
    assert unpruned["num_prompt_tokens"] == kept["num_prompt_tokens"] == NUM_PATCHES + 4
    assert payload["prediction"] is None and kept["predicted_speedup"] is None


def test_freepruner_keeps_fewer_and_the_numbers_are_finite(capsys, checkpoint, tmp_path):
    from tests.test_calibration import this_cpu_profile

    profile = this_cpu_profile(tmp_path)
    directory, image = checkpoint
    threads = torch.get_num_threads()
    try:
        payload = _json_runs(capsys, image, "--model", directory, "--prompt", PROMPT,
                             "--ratio", "0.25", "--ratio", "0.5", "--profile", profile, *FAST)
    finally:
        torch.set_num_threads(threads)  # generate adopts the profile's thread count
    assert payload["prediction"] == {"profile": "this-cpu", "device": cpu_name(), "threads": 1}
    unpruned, quarter, half = payload["runs"]
    assert [r["num_kept"] for r in payload["runs"]] == [NUM_PATCHES, 4, 8]
    assert quarter["num_prompt_tokens"] == unpruned["num_prompt_tokens"] - 12
    for run in payload["runs"]:
        assert run["num_new_tokens"] == 4 and run["answer"].strip()
        for key in RUN_KEYS - {"label", "method", "ratio", "answer"}:
            assert math.isfinite(run[key]) and run[key] >= 0, (key, run[key])
    # fewer visual tokens: less predicted work, hence a predicted speedup above 1
    assert unpruned["predicted_speedup"] == 1.0
    assert quarter["predicted_speedup"] > half["predicted_speedup"] > 1.0
    for run in payload["runs"]:  # the predicted stages are the cost model's, summing as it does
        predicted = [run[f"predicted_{stage}_s"] for stage in STAGES]
        assert sum(predicted[:-1]) == pytest.approx(run["predicted_ttft_s"], rel=1e-9)
        assert sum(predicted) == pytest.approx(run["predicted_total_s"], rel=1e-9)
        assert run["predicted_decode_s"] > 0  # 3 decode steps
    assert unpruned["predicted_selection_s"] == 0.0 < quarter["predicted_selection_s"]
    # the float32 checkpoint is predicted at 32 bits throughout, tower and projector too
    from fpcost.api import estimate

    plan = QuantPlan.uniform(32)
    expected = estimate(model=str(directory), hardware=str(profile), quant=plan, vision_quant=plan,
                        visual_tokens=4, text_tokens=4, output_tokens=4)
    for stage in STAGES:
        expected_s = expected.stage_totals(stage).time_s
        assert quarter[f"predicted_{stage}_s"] == pytest.approx(expected_s, rel=1e-12), stage
    assert quarter["predicted_prefill_s"] < unpruned["predicted_prefill_s"]


@pytest.mark.parametrize("method", ["random", "cls"])
def test_the_prediction_follows_the_method(capsys, checkpoint, tmp_path, method):
    """random reads no attention map: no predicted selection; cls reads attention its own
    way, whose cost is not modelled: that run gets no prediction at all (not freePruner's)."""
    from tests.test_calibration import this_cpu_profile

    profile = this_cpu_profile(tmp_path)
    directory, image = checkpoint
    threads = torch.get_num_threads()
    try:
        payload = _json_runs(capsys, image, "--model", directory, "--prompt", PROMPT,
                             "--method", method, "--ratio", "0.25", "--profile", profile, *FAST)
    finally:
        torch.set_num_threads(threads)
    unpruned, pruned = payload["runs"]
    assert pruned["num_kept"] == 4 and unpruned["predicted_total_s"] > 0
    if method == "random":
        assert pruned["predicted_selection_s"] == 0.0
        assert pruned["predicted_speedup"] > 1.0
    else:
        assert pruned["predicted_total_s"] is None and pruned["predicted_selection_s"] is None
        assert pruned["predicted_speedup"] is None


def test_llava_next(capsys, next_checkpoint):
    directory, image = next_checkpoint
    payload = _json_runs(capsys, image, "--model", directory, "--prompt", PROMPT,
                         "--method", "keep-all", *FAST)
    unpruned, kept = payload["runs"]
    assert payload["model_type"] == "llava_next"
    assert unpruned["answer"] == kept["answer"] and kept["num_kept"] == unpruned["num_visual_tokens"]
    payload = _json_runs(capsys, image, "--model", directory, "--prompt", PROMPT,
                         "--ratio", "0.5", *FAST)
    unpruned, half = payload["runs"]
    assert half["num_visual_tokens"] == unpruned["num_visual_tokens"] > half["num_kept"] > 0


def test_table_output(capsys, checkpoint):
    directory, image = checkpoint
    code, out, err = run_cli(capsys, "generate", image, "--model", directory, "--prompt", PROMPT,
                             "--max-new-tokens", "2", "--repeats", "1")
    assert code == 0, err
    words = " ".join(out.split())
    assert "unpruned" in words and "freepruner" in words and "predicted: none" in words
    assert words.count("unpruned: '") == 1 and words.count("freepruner: '") == 1
    assert "stages (ms), measured and predicted" in words
    header = " ".join(out.replace("┃", " ").split())
    assert "vision selection projector prefill decode other TTFT total" in header
    assert words.count("│ measured │") == 2 and words.count("│ predicted │") == 2


SLEEP_S = 0.025


def _sleep(module, args):
    time.sleep(SLEEP_S)


@pytest.fixture
def slow_checkpoint(monkeypatch):
    """The checkpoint loaded with a SLEEP_S sleep before each projector and LLM forward, so
    that those stages outlast a loaded machine's noise in the tiny model; one intra-op
    thread (two threads on a busy 2-core machine stall for up to a second per call)."""
    from fpcost.pruner import generate as generate_module
    from fpcost.pruner.adapters.common import find_module

    load = generate_module.load_checkpoint

    def load_slowly(directory):
        checkpoint = load(directory)
        for name in ("multi_modal_projector", "language_model"):
            find_module(checkpoint.model, name).register_forward_pre_hook(_sleep)
        return checkpoint

    monkeypatch.setattr(generate_module, "load_checkpoint", load_slowly)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_stages_add_up_to_ttft_and_total(capsys, checkpoint, slow_checkpoint):
    directory, image = checkpoint
    payload = _json_runs(capsys, image, "--model", directory, "--prompt", PROMPT,
                         "--ratio", "0.5", "--max-new-tokens", "3", "--repeats", "3",
                         "--format", "json")
    unpruned, half = payload["runs"]
    assert unpruned["selection_s"] == 0.0 < half["selection_s"]
    for run in payload["runs"]:
        stages = {stage: run[f"{stage}_s"] for stage in STAGES}
        assert stages["vision"] > 0 and stages["decode"] > 0
        assert stages["projector"] >= SLEEP_S and stages["prefill"] >= SLEEP_S
        # a stage is part of one call: its median is at most that call's median
        assert stages["prefill"] <= run["ttft_s"]
        assert max(stages.values()) <= run["total_s"]
        before_decode = sum(stages.values()) - stages["decode"]
        assert before_decode == pytest.approx(run["ttft_s"], rel=0.3)
        assert sum(stages.values()) + run["other_s"] == pytest.approx(run["total_s"], rel=0.3)
        assert run["decode_s"] == stages["decode"]  # the old key, the decode stage


def test_one_round_adds_up_exactly(capsys, checkpoint):
    """With one round the medians are that round's times: the stages and "other" are the
    total run split up (or, if the TTFT run's prefill outlasted its whole LLM stage, a
    little more)."""
    directory, image = checkpoint
    payload = _json_runs(capsys, image, "--model", directory, "--prompt", PROMPT, *FAST)
    for run in payload["runs"]:
        parts = sum(run[f"{stage}_s"] for stage in STAGES) + run["other_s"]
        if run["other_s"] > 0:
            assert parts == pytest.approx(run["total_s"], rel=1e-9)
        else:
            assert parts >= run["total_s"]


def test_csv_output(capsys, checkpoint):
    directory, image = checkpoint
    code, out, err = run_cli(capsys, "generate", image, "--model", directory, "--prompt", PROMPT,
                             "--max-new-tokens", "2", "--repeats", "1", "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["label"] for row in rows] == ["unpruned", "freepruner"]
    assert set(rows[0]) == RUN_KEYS
    for row in rows:
        for stage in STAGES:
            assert float(row[f"{stage}_s"]) >= 0 and row[f"predicted_{stage}_s"] == ""


def test_a_gpu_profile_is_refused_on_a_cpu(capsys, checkpoint):
    if torch.cuda.is_available():
        pytest.skip("runs on a GPU here")
    directory, image = checkpoint
    code, _, err = run_cli(capsys, "generate", image, "--model", directory, "--prompt", PROMPT,
                           "--profile", "fpcost/hardware_profiles/data/a6000.toml", *FAST)
    one_line_error(code, err, "describes a gpu")


def test_other_model_types_are_refused(capsys, checkpoint, tmp_path):
    _, image = checkpoint
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    code, _, err = run_cli(capsys, "generate", image, "--model", tmp_path, "--prompt", PROMPT)
    one_line_error(code, err, "model_type 'bert'")
    assert "llava, llava_next, video_llava" in err


def test_a_directory_without_a_processor(capsys, checkpoint, tmp_path):
    _, image = checkpoint
    tiny_llava(seed=0).save_pretrained(tmp_path)
    code, _, err = run_cli(capsys, "generate", image, "--model", tmp_path, "--prompt", PROMPT)
    one_line_error(code, err, "no processor/tokenizer")


@pytest.mark.parametrize("args, fragment", [
    (("--ratio", "0"), "must be in (0, 1]"),
    (("--ratio", "nan"), "must be in (0, 1]"),
    (("--max-new-tokens", "0"), "--max-new-tokens"),
    (("--method", "keep-all", "--ratio", "0.5"), "--ratio does not apply"),
    (("--profile", "none.toml"), "none.toml"),
])
def test_bad_options(capsys, checkpoint, args, fragment):
    directory, image = checkpoint
    code, _, err = run_cli(capsys, "generate", image, "--model", directory, "--prompt", PROMPT, *args)
    one_line_error(code, err, fragment)


def test_missing_image(capsys, checkpoint, tmp_path):
    directory, _ = checkpoint
    code, _, err = run_cli(capsys, "generate", tmp_path / "no.png", "--model", directory,
                           "--prompt", PROMPT)
    one_line_error(code, err, "no.png")

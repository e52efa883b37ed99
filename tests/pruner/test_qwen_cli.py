"""``fpcost prune IMAGE --model DIR`` on saved tiny Qwen2-VL / Qwen2.5-VL checkpoints, and
``fpcost estimate --tokens-from`` on its results file."""

import json

import pytest
import torch
from qwen_tiny import MAX_PIXELS, picture, processed, qwen_model, visual

from fpcost.pruner.methods import get_pruner
from fpcost.pruner.qwen_encoder import load_qwen_tower
from fpcost.pruner.qwen_vision import select_merged
from tests.cli_helpers import one_line_error, run_cli


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Both tiny models saved with save_pretrained; the 2.5 one with a preprocessor config."""
    paths = {}
    for kind in ("qwen2_vl", "qwen2_5_vl"):
        directory = tmp_path_factory.mktemp(kind)
        qwen_model(kind).save_pretrained(directory)
        paths[kind] = directory
    (paths["qwen2_5_vl"] / "preprocessor_config.json").write_text(json.dumps(
        {"min_pixels": 3136, "max_pixels": MAX_PIXELS, "image_processor_type": "Qwen2VLImageProcessor"}))
    return paths


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen-images")
    files = []
    for name, (height, width) in {"wide": (170, 230), "tall": (110, 80)}.items():
        path = directory / f"{name}.png"
        picture(height, width, seed=len(files)).save(path)
        files.append(path)
    return files


def test_tower_loads_only_the_vision_weights(checkpoints, image_files):
    from PIL import Image

    for kind, directory in checkpoints.items():
        tower = load_qwen_tower(directory, max_pixels=MAX_PIXELS)
        reference = visual(qwen_model(kind))
        for name, tensor in reference.state_dict().items():
            assert torch.equal(tower.model.state_dict()[name], tensor), name
        pixels, grid, resized = tower.preprocess(Image.open(image_files[0]))
        expected_pixels, expected_grid = processed([Image.open(image_files[0])])
        assert torch.equal(pixels, expected_pixels) and torch.equal(grid, expected_grid)
        assert resized.size == (int(grid[0, 2]) * 14, int(grid[0, 1]) * 14)
    assert load_qwen_tower(checkpoints["qwen2_vl"]).max_pixels == 12845056  # released default
    assert load_qwen_tower(checkpoints["qwen2_5_vl"]).max_pixels == MAX_PIXELS  # its config's


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_prune_json_rows_index_merged_tokens(capsys, checkpoints, image_files, kind, tmp_path):
    results = tmp_path / "results.json"
    code, out, err = run_cli(capsys, "prune", *image_files, "--model", checkpoints[kind],
                             "--max-pixels", MAX_PIXELS, "--format", "json", "--output", results,
                             "--overlay", tmp_path / "overlays")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["grid_thw"] for r in rows] == [[1, 12, 16], [1, 8, 6]]
    assert [r["num_tokens"] for r in rows] == [48, 12]  # t·h·w / 4 merged tokens
    assert [r["grid"] for r in rows] == [[6, 8], [4, 3]]  # merged rows, columns
    assert [r["image_size"] for r in rows] == [[230, 170], [80, 110]]
    assert [r["resized_size"] for r in rows] == [[224, 168], [84, 112]]
    from PIL import Image

    model = visual(qwen_model(kind))
    for row, path in zip(rows, image_files, strict=True):
        kept = row["kept_indices"]
        assert kept == sorted(set(kept)) and 0 <= kept[0] and kept[-1] < row["num_tokens"]
        assert row["num_kept"] == len(kept) < row["num_tokens"] or kind == "qwen2_5_vl"
        assert row["settings"]["token_unit"] == "merged 2x2"
        alone = select_merged(get_pruner("freepruner"), model, *processed([Image.open(path)]))
        assert alone.kept[0].tolist() == kept  # the same selection as the library's
        with Image.open(tmp_path / "overlays" / f"{path.stem}.png") as overlay:
            assert overlay.size == tuple(row["resized_size"])
    document = json.loads(results.read_text())
    assert document["patch_size"] == 28 and document["token_unit"] == "merged"
    assert (document["min_pixels"], document["max_pixels"]) == (3136, MAX_PIXELS)
    assert document["images"] == rows
    assert [r["settings"]["k"] for r in rows] == [12, 3]  # k = round(0.25 · merged tokens)
    assert document["settings"] is None  # per-image k: the rows carry their settings

    model_name = "qwen2-vl-7b" if kind == "qwen2_vl" else "qwen2.5-vl-7b"
    code, out, err = run_cli(capsys, "estimate", "--model", model_name, "--tokens-from", results,
                             "--format", "json")
    assert code == 0, err
    estimate = json.loads(out)
    assert [r["num_visual_tokens"] for r in estimate["images"]] == [r["num_kept"] for r in rows]
    assert [r["baseline_num_visual_tokens"] for r in estimate["images"]] == [48, 12]
    assert [b["num_visual_tokens"] for b in estimate["baseline"]] == [48, 12]
    # the file's per-image settings (k = 12, 3; its tiny tower's layers read in the 32-block
    # tower) cost a selection stage per image; Qwen2.5-VL names the windowed layers
    (first,) = [s for s in estimate["settings"]["selection"] if "k = 12 " in s]
    assert first.startswith("freepruner, from the file's settings")
    assert ("windowed here" in first) == (kind == "qwen2_5_vl")
    assert all(r["stages"]["selection"]["flops"] > 0 for r in estimate["images"])


def test_estimate_refuses_a_file_whose_counts_do_not_match(capsys, checkpoints, image_files,
                                                          tmp_path):
    results = tmp_path / "results.json"
    code, _, err = run_cli(capsys, "prune", image_files[0], "--model", checkpoints["qwen2_vl"],
                           "--max-pixels", MAX_PIXELS, "--output", results, "--format", "json")
    assert code == 0, err
    document = json.loads(results.read_text())
    document["max_pixels"] = 12845056  # the file now claims the released limits: same count
    document["images"][0]["image_size"] = [460, 340]  # but another size: 192 merged tokens
    results.write_text(json.dumps(document))
    code, _, err = run_cli(capsys, "estimate", "--model", "qwen2-vl-7b", "--tokens-from", results)
    one_line_error(code, err, "has 48 merged tokens, but qwen2-vl-7b makes 192")
    code, _, err = run_cli(capsys, "estimate", "--model", "llava-1.5-7b", "--tokens-from", results)
    one_line_error(code, err, "cost it with a Qwen2-VL / Qwen2.5-VL model")


@pytest.mark.parametrize(("args", "fragment"), [
    (["--method", "cls"], "--method cls reads a CLS token's attention"),
    (["--method", "prumerge+"], "no CLS token"),
    (["--complementary-layer", "9"], "--complementary-layer 9 is out of range"),
    (["--start-layer", "-1", "--end-layer", "-2"], "select no layer"),
    (["--image-size", "224"], "--image-size does not apply to Qwen2-VL"),
    (["--include-cls"], "--include-cls: Qwen2-VL / Qwen2.5-VL vision towers have no CLS"),
    (["--min-pixels", "300000"], "--min-pixels 300000 is larger than --max-pixels"),
])
def test_bad_inputs_exit_2_with_one_line(capsys, checkpoints, image_files, args, fragment, tmp_path):
    output = tmp_path / "never.json"
    code, _, err = run_cli(capsys, "prune", image_files[0], "--model", checkpoints["qwen2_vl"],
                           "--max-pixels", MAX_PIXELS, "--output", output, *args)
    one_line_error(code, err, fragment)
    assert not output.exists()


def test_a_budget_over_an_images_tokens_skips_it(capsys, checkpoints, image_files, tmp_path):
    """Merged counts differ per image: a budget is checked per image; the other images'
    rows are printed, the image is named, exit 2, no results file."""
    output = tmp_path / "never.json"
    code, out, err = run_cli(capsys, "prune", *image_files, "--model", checkpoints["qwen2_vl"],
                             "--max-pixels", MAX_PIXELS, "--budget", 20, "--output", output,
                             "--format", "json")
    assert code == 2
    assert [r["num_kept"] for r in json.loads(out)] == [20]
    assert f"skipped {image_files[1]}: --budget 20 exceeds the image's 12 merged tokens" in err
    assert err.strip().splitlines()[-1].startswith("Error: 1 of 2 images failed")
    assert not output.exists()


def test_pixel_limits_only_for_qwen(capsys, tmp_path, image_files):
    code, _, err = run_cli(capsys, "prune", image_files[0], "--encoder", "dinov2-s14",
                           "--max-pixels", 1000)
    assert code == 2 and "--max-pixels applies to Qwen2-VL / Qwen2.5-VL checkpoints only" in err

"""``fpcost prune`` end to end, offline, on a tiny random CLIP encoder saved to a directory."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import TINY_ENCODER
from transformers import CLIPVisionConfig, CLIPVisionModel

from fpcost.cli.main import main
from fpcost.cli.prune import METHOD_NAMES
from fpcost.pruner.methods import METHODS
from fpcost.pruner.results import RESULTS_VERSION, read_results

NUM_PATCHES = 64  # 56 px / 7 px patches


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = CLIPVisionConfig(**TINY_ENCODER)
    directory = tmp_path_factory.mktemp("tiny-clip")
    CLIPVisionModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Small images in several modes and aspect ratios, plus two bad files."""
    directory = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = {}
    for name, mode, size in [
        ("rgb", "RGB", (60, 40)),
        ("grey", "L", (30, 50)),
        ("alpha", "RGBA", (56, 56)),
        ("palette", "P", (80, 20)),
    ]:
        channels = {"RGB": 3, "L": 1, "RGBA": 4, "P": 1}[mode]
        array = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8).squeeze(
            -1 if channels == 1 else ()
        )
        image = Image.fromarray(array, "L" if mode == "P" else mode)
        if mode == "P":
            image = image.convert("P")
        paths[name] = directory / f"{name}.png"
        image.save(paths[name])
    paths["text"] = directory / "notes.txt"
    paths["text"].write_text("not an image")
    paths["missing"] = directory / "missing.png"
    return paths


def run(capsys, *args):
    code = main(["prune", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_output(capsys, model_dir, images):
    code, out, err = run(
        capsys,
        images["rgb"],
        images["grey"],
        images["alpha"],
        images["palette"],
        "--model",
        model_dir,
        "--k",
        "4",
        "--start-layer",
        "-3",
        "--end-layer",
        "-2",
        "--format",
        "json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [r["image"] for r in rows] == [
        str(images[n]) for n in ("rgb", "grey", "alpha", "palette")
    ]
    for row in rows:
        assert row["num_tokens"] == NUM_PATCHES
        assert row["kept_indices"] == sorted(set(row["kept_indices"]))
        assert row["num_kept"] == len(row["kept_indices"])
        assert row["num_pivotal"] + row["num_complementary"] == row["num_kept"]
        assert row["num_pivotal"] == 4  # top-4 of the one pivotal layer
        assert row["selection_time_s"] > 0 and row["encoder_time_s"] > 0
        assert row["grid"] == [8, 8]
        assert row["settings"]["pivotal_layers"] == [1]  # range(4)[-3:-2]
        assert row["settings"]["k"] == 4 and row["settings"]["complementary_layer"] == 2
        assert row["settings"]["direction"] == "row"


def test_results_record_the_resolved_default_settings(capsys, model_dir, images, tmp_path):
    output = tmp_path / "results.json"
    code, _, err = run(capsys, images["rgb"], "--model", model_dir, "--output", output)
    assert code == 0, err
    document = json.loads(output.read_text())
    # 4 layers: pivotal range(4)[-4:-2] = 0, 1; k = round(0.25 * 64) = 16; complementary -2 = 2
    expected = {"pivotal_layers": [0, 1], "k": 16, "k_ratio": 0.25, "complementary_layer": 2,
                "direction": "row", "budget": None}
    for settings in (document["settings"], document["images"][0]["settings"]):
        assert {key: settings[key] for key in expected} == expected
    code, _, err = run(capsys, images["rgb"], "--model", model_dir, "--output", output,
                       "--ratio", "0.25", "--k-ratio", "0.5", "--direction", "column")
    assert code == 0, err
    settings = json.loads(output.read_text())["settings"]
    assert (settings["k"], settings["budget"], settings["direction"]) == (32, 16, "column")
    code, _, err = run(capsys, images["rgb"], "--model", model_dir, "--output", output,
                       "--method", "uniform", "--ratio", "0.25")
    assert code == 0, err
    assert json.loads(output.read_text())["settings"] is None


def test_table_and_csv(capsys, model_dir, images):
    code, out, _ = run(capsys, images["rgb"], "--model", model_dir, "--k", "4")
    assert code == 0 and "freepruner on" in out and "64 patches" in out
    code, out, _ = run(
        capsys,
        images["rgb"],
        "--model",
        model_dir,
        "--method",
        "uniform",
        "--ratio",
        "0.25",
        "--format",
        "csv",
    )
    header, row = out.strip().splitlines()
    assert header.startswith("image,num_tokens,num_kept,keep_ratio")
    assert row.split(",")[1:3] == ["64", "16"]


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method(capsys, model_dir, images, method):
    args = ["--budget", "10"] if method not in ("freepruner", "keep-all") else []
    code, out, err = run(
        capsys, images["rgb"], "--model", model_dir, "--method", method, *args, "--format", "json"
    )
    assert code == 0, err
    (row,) = json.loads(out)
    expected = {"keep-all": NUM_PATCHES, "freepruner": row["num_kept"]}.get(method, 10)
    assert row["num_kept"] == expected


def test_method_names_and_help_defaults_match_the_library():
    from dataclasses import asdict

    from fpcost.cli.prune import FREEPRUNER_DEFAULTS
    from fpcost.pruner.selection import FreePrunerConfig

    assert METHOD_NAMES == METHODS
    defaults = asdict(FreePrunerConfig())
    assert FREEPRUNER_DEFAULTS == {key: defaults[key] for key in FREEPRUNER_DEFAULTS}


def test_overlay_and_results_file(capsys, model_dir, images, tmp_path):
    overlay_dir = tmp_path / "overlays"
    output = tmp_path / "results.json"
    code, _, err = run(
        capsys,
        images["rgb"],
        images["alpha"],
        images["rgb"],
        "--model",
        model_dir,
        "--k",
        "4",
        "--overlay",
        overlay_dir,
        "--output",
        output,
    )
    assert code == 0, err
    assert sorted(p.name for p in overlay_dir.iterdir()) == ["alpha.png", "rgb-2.png", "rgb.png"]
    with Image.open(overlay_dir / "rgb.png") as overlay:
        assert overlay.size == (56, 56) and overlay.mode == "RGB"
    document = json.loads(output.read_text())
    assert document["fpcost_prune_version"] == RESULTS_VERSION
    assert document["encoder"] == str(model_dir) and document["method"] == "freepruner"
    assert document["params"] == {"k": 4}
    assert document["image_size"] == 56 and document["patch_size"] == 7
    kept = [image["num_kept"] for image in document["images"]]
    assert [r["num_kept"] for r in read_results(output)] == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "overlays",
        "results.json",
    ]  # no temp files


def test_bad_image_among_good_ones(capsys, model_dir, images, tmp_path):
    output = tmp_path / "results.json"
    code, out, err = run(
        capsys,
        images["rgb"],
        images["text"],
        images["missing"],
        images["grey"],
        "--model",
        model_dir,
        "--k",
        "4",
        "--format",
        "json",
        "--output",
        output,
    )
    assert code == 2
    assert [r["image"] for r in json.loads(out)] == [str(images["rgb"]), str(images["grey"])]
    assert f"skipped {images['text']}: cannot read image" in err
    assert (
        f"skipped {images['missing']}: cannot read image {images['missing']}: no such file" in err
    )
    assert "Error: 2 of 4 images failed" in err and "not written" in err
    assert not output.exists()
    assert err.count("Error:") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no images given"),
        (["IMG"], "give exactly one of --encoder NAME or --model PATH_OR_ID"),
        (["IMG", "--encoder", "dinov2-s14", "--model", "MODEL"], "give exactly one of"),
        (["IMG", "--model", "MODEL", "--ratio", "1.5"], "Error: ratio (1.5) must be in (0, 1]"),
        (
            ["IMG", "--model", "MODEL", "--method", "random", "--ratio", "-0.1"],
            "Error: ratio (-0.1) must be in (0, 1]",
        ),
        (
            ["IMG", "--model", "MODEL", "--budget", "0"],
            "Invalid value for '--budget': 0 is out of range; valid: 1..2147483647",
        ),
        (
            ["IMG", "--model", "MODEL", "--method", "cls", "--budget", "0"],
            "Invalid value for '--budget': 0 is out of range",
        ),
        (
            ["IMG", "--model", "MODEL", "--method", "random", "--k", "3"],
            "--k apply to --method freepruner only",
        ),
        (
            ["IMG", "--model", "MODEL", "--budget", "65"],
            "Error: --budget 65 exceeds the patch tokens of encoder",
        ),
        (["IMG", "--model", "MODEL", "--k-ratio", "0"], "--k-ratio"),
        (
            ["IMG", "--model", "MODEL", "--method", "uniform", "--direction", "column"],
            "--direction apply to --method freepruner only",
        ),
        (["IMG", "--encoder", "clip-l"], "Error: no weights at clip-l: not a local directory"),
        (["IMG", "--model", "org/some-model"], "Error: no weights at org/some-model"),
    ],
)
def test_bad_arguments(capsys, model_dir, images, args, message):
    args = [
        str(images["rgb"]) if a == "IMG" else str(model_dir) if a == "MODEL" else a for a in args
    ]
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert len([line for line in err.splitlines() if line.startswith("Error:")]) == 1  # one line


def test_model_dir_without_weights(capsys, images, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    code, _, err = run(capsys, images["rgb"], "--model", tmp_path)
    assert code == 2
    assert f"Error: no weights at {tmp_path}: expected one of model.safetensors" in err


def test_nan_attention(capsys, images, tmp_path):
    torch.manual_seed(0)
    config = CLIPVisionConfig(**TINY_ENCODER)
    model = CLIPVisionModel(config)
    with torch.no_grad():
        model.encoder.layers[0].self_attn.k_proj.weight.fill_(float("nan"))
    model.save_pretrained(tmp_path / "nan")
    output = tmp_path / "results.json"
    code, _, err = run(capsys, images["rgb"], "--model", tmp_path / "nan", "--output", output)
    assert code == 2
    # layer 0 is the first pivotal layer of the default union (range(4)[-4:-2] = 0, 1)
    assert "attention at encoder layer 0 is not finite (NaN or inf) for sample 0" in err
    assert not output.exists()


def test_cli_module_does_not_import_torch():
    code = "import sys, fpcost.cli.prune; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"

"""What ``fpcost prune`` refuses before computing: bad images (one line each, named, the run
exits 2 with no results file) and parameters that do not fit the encoder (one line, before
any image is read). Regression tests for issue 8's image and parameter cases."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import TINY_ENCODER
from transformers import CLIPVisionConfig, CLIPVisionModel

import fpcost.cli.prune as prune_cli
from fpcost.cli.main import main
from fpcost.pruner import inputs
from fpcost.pruner.encoders import resize_and_crop, to_rgb
from fpcost.pruner.errors import PruningError
from fpcost.pruner.inputs import (
    MAX_IMAGE_PIXELS,
    MAX_RESIZED_PIXELS,
    check_against_encoder,
    check_image_size,
    open_image,
)
from fpcost.pruner.methods import get_pruner


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(path, width, height):
    """A 68-byte PNG whose header declares ``width`` x ``height`` RGB pixels: what a
    decompression bomb looks like to ``Image.open`` (which reads only the header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                     + _chunk(b"IDAT", zlib.compress(b"\0" * 10)) + _chunk(b"IEND", b""))
    return path


def float_tiff(path, bad_value):
    array = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    array[3, 4] = bad_value
    Image.fromarray(array, "F").save(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-clip")
    CLIPVisionModel(CLIPVisionConfig(**TINY_ENCODER)).save_pretrained(directory)
    return directory


@pytest.fixture
def ok_image(tmp_path):
    path = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
    return path


def run(capsys, *args):
    code = main(["prune", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def errors(err):
    return [line for line in err.splitlines() if line.startswith("Error:")]


# --- images, one at a time -------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_float_pixels_are_refused(tmp_path, value):
    path = float_tiff(tmp_path / "bad.tiff", value)
    with pytest.raises(PruningError, match=r"image .*bad.tiff has 1 NaN or infinite pixel value\(s\) "
                                           r"of 1,600 \(mode F\)"):
        open_image(path)
    with pytest.raises(PruningError, match="NaN or infinite"):  # also for in-memory images
        to_rgb(Image.open(path))


def test_finite_float_image_is_accepted(tmp_path):
    path = float_tiff(tmp_path / "good.tiff", 0.5)
    assert to_rgb(open_image(path)).mode == "RGB"


@pytest.mark.parametrize("side", [10_000, 20_000])  # PIL warns above 89.5 M px, raises above 179 M
def test_decompression_bomb_header_is_refused(tmp_path, side):
    path = png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(PruningError, match=f"more than {MAX_IMAGE_PIXELS:,} pixels"):
        open_image(path)


def test_bomb_refused_even_when_pil_limit_is_lifted(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = png_header_only(tmp_path / "bomb.png", 10_000, 10_000)
    with pytest.raises(PruningError, match="10000 x 10000 px = 100,000,000 pixels, more than"):
        open_image(path)


def test_extreme_aspect_ratio_is_refused_before_resizing(tmp_path):
    image = Image.new("RGB", (1, 20_000))
    # 336 px: 336 x 6,720,000 px (7 GB as RGB) -- refused, nothing allocated.
    with pytest.raises(PruningError, match="1 x 20000 px: resizing its shortest side to 336 px "
                                           "would make 336 x 6,720,000 px"):
        resize_and_crop(image, 336)
    assert resize_and_crop(Image.new("RGB", (10, 200)), 336).size == (336, 336)  # 20:1 is fine
    inputs.check_resize((336, 336 * 500), 336)  # 500:1 at 336 px stays under the bound
    assert 336 * 336 * 500 <= MAX_RESIZED_PIXELS


def test_bad_images_are_skipped_one_line_each_and_the_run_exits_2(capsys, model_dir, ok_image,
                                                                   tmp_path):
    bad = {
        "nan": float_tiff(tmp_path / "nan.tiff", np.nan),
        "bomb": png_header_only(tmp_path / "bomb.png", 20_000, 20_000),
        "text": tmp_path / "notes.txt",
    }
    bad["text"].write_text("not an image")
    output = tmp_path / "results.json"
    code, out, err = run(capsys, ok_image, *bad.values(), "--model", model_dir, "--k", "4",
                         "--format", "csv", "--output", output)
    assert code == 2
    assert "Traceback" not in err
    assert [row.split(",")[0] for row in out.splitlines()[1:]] == [str(ok_image)]  # good rows shown
    for path in bad.values():
        assert sum(line.startswith(f"skipped {path}: ") for line in err.splitlines()) == 1
    assert errors(err) == [f"Error: 3 of 4 images failed: {', '.join(map(str, bad.values()))}; "
                           f"results file {output} not written"]
    assert not output.exists()


# --- parameters, before any image -------------------------------------------------------

def test_image_size_bound_is_the_same_in_cli_and_library():
    assert prune_cli.MAX_IMAGE_SIZE == inputs.MAX_IMAGE_SIZE
    check_image_size(inputs.MAX_IMAGE_SIZE)
    for bad in (0, inputs.MAX_IMAGE_SIZE + 1, 5000):
        with pytest.raises(PruningError, match=f"--image-size {bad} is out of range; valid: 1..1024"):
            check_image_size(bad)


@pytest.mark.parametrize("method, params, message", [
    ("freepruner", {"complementary_layer": 4}, "--complementary-layer 4 is out of range for "
                                               "encoder tiny (4 layers, 64 patch tokens); valid: -4..3"),
    ("freepruner", {"complementary_layer": -5}, "--complementary-layer -5 is out of range"),
    ("freepruner", {"pivotal_start_layer": 3, "pivotal_end_layer": 1},
     "--start-layer 3 and --end-layer 1 (exclusive) select no layer of encoder tiny"),
    ("freepruner", {"budget": 65}, "--budget 65 exceeds the patch tokens of encoder tiny"),
    ("random", {"count": 65}, "--budget 65 exceeds the patch tokens"),
    ("prumerge+", {"count": 100}, "--budget 100 exceeds the patch tokens"),
])
def test_parameters_checked_against_the_encoder(method, params, message):
    pruner = get_pruner(method, **params)
    with pytest.raises(PruningError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_against_encoder(pruner, 4, 64, "tiny")


def test_parameters_that_fit_pass():
    for method, params in [("freepruner", {"budget": 64, "complementary_layer": -4}),
                           ("random", {"count": 64}), ("cls", {}), ("keep-all", {})]:
        check_against_encoder(get_pruner(method, **params), 4, 64, "tiny")
    with pytest.raises(PruningError, match="2-layer encoder"):  # the defaults need 3 layers
        check_against_encoder(get_pruner("cls"), 2, 64, "tiny")


def test_bad_parameters_refused_before_any_image_is_read(capsys, model_dir, tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr("fpcost.pruner.run.open_image", lambda path: opened.append(path))
    missing = tmp_path / "not-read.png"
    for args, message in [
        (["--budget", "65"], "Error: --budget 65 exceeds the patch tokens of encoder"),
        (["--complementary-layer", "7"], "Error: --complementary-layer 7 is out of range"),
        (["--start-layer", "-1", "--end-layer", "-2"], "select no layer"),
        (["--method", "uniform", "--budget", "100"], "Error: --budget 100 exceeds"),
    ]:
        code, _, err = run(capsys, missing, "--model", model_dir, *args)
        assert code == 2 and errors(err) == [errors(err)[0]] and message in err, err
        assert "skipped" not in err
    assert opened == []


@pytest.mark.parametrize("args, message", [
    (["--seed", str(2**64)], "Invalid value for '--seed': 18446744073709551616 is out of range; "
                             "valid: 0..9223372036854775807"),
    (["--seed", "-1"], "Invalid value for '--seed': -1 is out of range"),
    (["--seed", "1" * 5000], "'111111111111111111111111'… (5,000 characters) is out of range"),
    (["--budget", "9" * 4301], "Invalid value for '--budget': '999999999999999999999999'…"),
    (["--k", "²"], "Invalid value for '--k': '²' is not an integer; valid: 1..2147483647"),
    (["--k", "١٢"], "is not an integer"),  # Arabic-Indic digits: int() would take them
    (["--k", "1e3"], "'1e3' is not an integer"),
    (["--start-layer", str(2**31)], "Invalid value for '--start-layer'"),
    (["--image-size", "5000"], "Invalid value for '--image-size': 5000 is out of range; "
                               "valid: 1..1024"),
    (["--image-size", "0"], "Invalid value for '--image-size': 0 is out of range"),
])
def test_integer_options_bounded_before_the_model_loads(capsys, ok_image, monkeypatch, args,
                                                        message):
    def no_load(*_, **__):
        raise AssertionError("the encoder must not load")

    monkeypatch.setattr("fpcost.pruner.encoders.load_encoder", no_load)
    code, out, err = run(capsys, ok_image, "--encoder", "dinov2-s14", "--method", "random", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("Error: ") and message in err, err
    assert len(err) < 300


def test_geometry_from_the_config_alone(model_dir, tmp_path):
    from fpcost.pruner import encoders
    from fpcost.pruner.inputs import configured_geometry

    assert set(inputs._BARE_TYPES) == set(encoders._BARE)
    assert set(inputs._TOWER_TYPES) == set(encoders._TOWERS)
    assert configured_geometry("dinov2-s14", None) == (12, 24 * 24)
    assert configured_geometry("dinov2-s14", 224) == (12, 16 * 16)
    assert configured_geometry(str(model_dir), None) == (4, 64)
    assert configured_geometry(str(model_dir), 100) == (4, None)  # the loader refuses 100 px
    llava = tmp_path / "llava"
    llava.mkdir()
    llava.joinpath("config.json").write_text(
        '{"model_type": "llava", "vision_config": {"num_hidden_layers": 24, "image_size": 336, '
        '"patch_size": 14}}')
    assert configured_geometry(str(llava), None) == (24, 576)
    for text in ('{"model_type": "bert", "num_hidden_layers": 2}', '[1]', '{"model_type": "llava"}',
                 '{"model_type": "dinov2", "num_hidden_layers": true}', "not json"):
        llava.joinpath("config.json").write_text(text)
        assert configured_geometry(str(llava), None) == (None, None), text
    assert configured_geometry(str(tmp_path / "missing"), None) == (None, None)


@pytest.mark.parametrize("args, message", [
    (["--encoder", "dinov2-s14", "--complementary-layer", "12"],
     "--complementary-layer 12 is out of range for encoder dinov2-s14 (12 layers, 576 patch tokens)"),
    (["--encoder", "dinov2-s14", "--image-size", "224", "--budget", "257"],
     "--budget 257 exceeds the patch tokens of encoder dinov2-s14 (12 layers, 256 patch tokens)"),
    (["--model", "MODEL", "--budget", "65"], "--budget 65 exceeds the patch tokens of encoder"),
    (["--model", "MODEL", "--method", "cls", "--start-layer", "1"], "--start-layer apply to"),
])
def test_parameters_refused_before_the_weights_load(capsys, model_dir, ok_image, monkeypatch, args,
                                                    message):
    monkeypatch.setattr("fpcost.pruner.encoders.load_encoder",
                        lambda *_, **__: pytest.fail("the encoder must not load"))
    args = [str(model_dir) if a == "MODEL" else a for a in args]
    code, out, err = run(capsys, ok_image, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err

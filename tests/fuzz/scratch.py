"""The scratch directory the CLI fuzz cases run in: good and bad inputs of every kind, named
by what is wrong with them, plus output targets that must survive (device nodes, symlinks).

Cases run with this directory as the working directory and name these files by relative
path, so the strategies (``cli_strategies``) are plain lists of names. The snapshot the
harness takes covers all of it: an input file that changes, or a stray file, is a failure.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import zlib
from importlib import resources
from pathlib import Path

from tests.test_hfconfig import LLAMA_3_8B, LLAVA_15_7B

DEEP = 100_000  # nesting depth of the "deep" files (RecursionError in a recursive reader)

# --- config.json files -----------------------------------------------------------------------

SIGLIP_TOWER = {"model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 378,
                "intermediate_size": 4304, "num_attention_heads": 16, "num_hidden_layers": 27,
                "patch_size": 14}
DINOV2_TOWER = {"model_type": "dinov2", "hidden_size": 384, "image_size": 518,
                "num_attention_heads": 6, "num_hidden_layers": 12, "patch_size": 14, "mlp_ratio": 4}
LLAVA_NEXT = {**LLAVA_15_7B, "model_type": "llava_next",
              "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]}
VIDEO_LLAVA = {**LLAVA_15_7B, "model_type": "video_llava"}


def _with(base: dict, **changes) -> dict:
    return {**base, **changes}


def _tower(**changes) -> dict:
    return _with(LLAVA_15_7B, vision_config={**LLAVA_15_7B["vision_config"], **changes})


GOOD_CONFIGS = {
    "configs/llava.json": LLAVA_15_7B,
    "configs/llama.json": LLAMA_3_8B,
    "configs/video-llava.json": VIDEO_LLAVA,
    "configs/llava-next.json": LLAVA_NEXT,
    "configs/siglip.json": _with(LLAVA_15_7B, vision_config=SIGLIP_TOWER),
    "configs/dinov2.json": _with(LLAVA_15_7B, vision_config=DINOV2_TOWER),
    # google/siglip-so400m-patch14-384 as published: 384 px, 14 px patches (27 x 27 = 729 tokens)
    "configs/siglip-so400m-384.json": _with(LLAVA_15_7B, vision_config={**SIGLIP_TOWER, "image_size": 384}),
}
BAD_CONFIGS = {
    "configs/tie-false-string.json": _with(LLAVA_15_7B, tie_word_embeddings="false"),
    "configs/vision-use-head-string.json": _with(
        LLAVA_15_7B, vision_config={**SIGLIP_TOWER, "vision_use_head": "false"}),
    "configs/model-type-list.json": _with(LLAVA_15_7B, model_type=["llava"]),
    "configs/model-type-dict.json": _with(LLAVA_15_7B, model_type={"llava": 1}),
    "configs/pinpoints-null.json": _with(LLAVA_NEXT, image_grid_pinpoints=None),
    "configs/pinpoints-5.json": _with(LLAVA_NEXT, image_grid_pinpoints=5),
    "configs/pinpoints-list5.json": _with(LLAVA_NEXT, image_grid_pinpoints=[5]),
    "configs/pinpoints-1x1.json": _with(LLAVA_NEXT, image_grid_pinpoints=[[1, 1]]),
    "configs/mlp-ratio-string.json": _with(LLAVA_15_7B, vision_config={**DINOV2_TOWER, "mlp_ratio": "4"}),
    "configs/mlp-ratio-x.json": _with(LLAVA_15_7B, vision_config={**DINOV2_TOWER, "mlp_ratio": "x"}),
    "configs/mlp-ratio-null.json": _with(LLAVA_15_7B, vision_config={**DINOV2_TOWER, "mlp_ratio": None}),
    "configs/mlp-ratio-nan.json": _with(LLAVA_15_7B,
                                        vision_config={**DINOV2_TOWER, "mlp_ratio": float("nan")}),
    "configs/feature-layer-100.json": _with(LLAVA_15_7B, vision_feature_layer=100),
    "configs/feature-layer-minus100.json": _with(LLAVA_15_7B, vision_feature_layer=-100),
    "configs/hidden-size-string.json": _with(LLAMA_3_8B, hidden_size="4096"),
    "configs/hidden-size-huge.json": _with(LLAMA_3_8B, hidden_size=4096 * 10**30, num_attention_heads=32),
    "configs/layers-negative.json": _with(LLAMA_3_8B, num_hidden_layers=-32),
    "configs/layers-float.json": _with(LLAMA_3_8B, num_hidden_layers=32.5),
    "configs/vocab-bool.json": _with(LLAMA_3_8B, vocab_size=True),
    "configs/image-size-zero.json": _tower(image_size=0),
    "configs/patch-size-huge.json": _tower(patch_size=10**20),
    "configs/not-an-object.json": [1, 2, 3],
}
RAW_CONFIGS = {  # not JSON-serialisable as data: written as text
    "configs/deep.json": '{"a":' * DEEP + "1" + "}" * DEEP,
    "configs/deep-list.json": "[" * DEEP + "]" * DEEP,
    "configs/empty.json": "",
    "configs/truncated.json": json.dumps(LLAVA_15_7B)[:100],
    "configs/dir/config.json": json.dumps(LLAVA_15_7B),  # --config DIR reads DIR/config.json
}

# --- hardware profiles -----------------------------------------------------------------------


def _a6000() -> str:
    return resources.files("fpcost.hardware_profiles").joinpath("data/a6000.toml").read_text()


def _sub(pattern: str, replacement: str) -> str:
    text, count = re.subn(pattern, replacement, _a6000(), count=1, flags=re.MULTILINE)
    assert count == 1, pattern
    return text


BANDWIDTH = r"^bandwidth_gb_per_s = .*$"
FP16 = r"^fp16_tflops = 154\.8.*$"


def _profiles() -> dict[str, str]:
    return {
        "profiles/ok.toml": _a6000(),
        "profiles/bandwidth-1e-320.toml": _sub(BANDWIDTH, "bandwidth_gb_per_s = 1e-320"),
        "profiles/bandwidth-negative.toml": _sub(BANDWIDTH, "bandwidth_gb_per_s = -768"),
        "profiles/bandwidth-zero.toml": _sub(BANDWIDTH, "bandwidth_gb_per_s = 0"),
        "profiles/bandwidth-inf.toml": _sub(BANDWIDTH, "bandwidth_gb_per_s = inf"),
        "profiles/bandwidth-nan.toml": _sub(BANDWIDTH, "bandwidth_gb_per_s = nan"),
        "profiles/bandwidth-string.toml": _sub(BANDWIDTH, 'bandwidth_gb_per_s = "768"'),
        "profiles/bandwidth-bool.toml": _sub(BANDWIDTH, "bandwidth_gb_per_s = true"),
        "profiles/bandwidth-huge.toml": _sub(BANDWIDTH, "bandwidth_gb_per_s = 1e308"),
        "profiles/fp16-1e-320.toml": _sub(FP16, "fp16_tflops = 1e-320"),
        "profiles/fp16-huge.toml": _sub(FP16, "fp16_tflops = 1.7e308"),
        "profiles/missing-bandwidth.toml": _sub(BANDWIDTH, ""),
        "profiles/missing-memory.toml": re.sub(r"^\[memory\]$.*?^(?=\[tensor\])", "", _a6000(),
                                               flags=re.MULTILINE | re.DOTALL),
        "profiles/efficiency-negative.toml": _a6000() + "\n[efficiency]\nmatmul = -0.5\n",
        "profiles/efficiency-nan.toml": _a6000() + "\n[efficiency]\nvector = nan\n",
        "profiles/efficiency-huge.toml": _a6000() + "\n[efficiency]\nnorm = 1e300\n",
        "profiles/deep.toml": "x = " + "[" * DEEP + "]" * DEEP + "\n",
        "profiles/deep-table.toml": "x = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n",
        "profiles/empty.toml": "",
        "profiles/not-toml.toml": "this is not = = toml [",
        "profiles/ok.txt": _a6000(),  # a profile under another suffix
    }


# --- prune results files ---------------------------------------------------------------------


def _results(images: list[dict], **top) -> dict:
    return {"fpcost_prune_version": 1, "encoder": "dinov2-s14", "method": "freepruner",
            "params": {}, "image_size": 336, "patch_size": 14, "images": images, **top}


def _image(num_tokens, num_kept, name="a.png", grid=(24, 24)) -> dict:
    return {"image": name, "num_tokens": num_tokens, "num_kept": num_kept, "grid": list(grid)}


GOOD_RESULTS = {
    "results/ok-576.json": _results([_image(576, 288), _image(576, 144, "b.png")]),
    "results/k192.json": _results([_image(576, 288)], params={"k": 192}),
}
BAD_RESULTS = {
    "results/geometry-64.json": _results([_image(64, 30, grid=(8, 8))], image_size=56, patch_size=7),
    "results/geometry-224px.json": _results([_image(256, 195, grid=(16, 16))], image_size=224),
    "results/k96.json": _results([_image(576, 288)], params={"k": 96}),
    "results/kept-gt-tokens.json": _results([_image(576, 900)]),
    "results/tokens-negative.json": _results([_image(-5, 3)]),
    "results/kept-negative.json": _results([_image(576, -3)]),
    "results/kept-zero.json": _results([_image(576, 0)]),
    "results/kept-float.json": _results([_image(576, 288.5)]),
    "results/kept-string.json": _results([_image(576, "288")]),
    "results/kept-bool.json": _results([_image(576, True)]),
    "results/kept-huge.json": _results([_image(2**64, 2**63)]),
    "results/kept-4300-digits.json": _results([_image(576, 10**4000)]),
    "results/no-images.json": _results([]),
    "results/images-null.json": _results(None),
    "results/wrong-version.json": {**_results([_image(576, 288)]), "fpcost_prune_version": 99},
    "results/not-an-object.json": [1, 2],
}
RAW_RESULTS = {
    "results/deep.json": '{"images":' * DEEP + "1" + "}" * DEEP,
    "results/empty.json": "",
}

# --- serve trace files (fpcost serve --trace) ---------------------------------------------------

RAW_TRACES = {
    "traces/ok.jsonl": '{"arrival_time_s": 0}\n{"arrival_time_s": 0.5, "text_tokens": 10, '
                       '"output_tokens": 3}\n{"arrival_time_s": 1, "visual_tokens": 100}\n',
    "traces/ok.csv": "arrival_time_s,visual_tokens,text_tokens,output_tokens\n0,,,4\n0.2,64,8,2\n",
    "traces/qwen-sizes.csv": "arrival_time_s,image_size\n0,640x480\n0.1,1280x720\n",
    "traces/empty.csv": "",
    "traces/header-only.csv": "arrival_time_s,visual_tokens\n",
    "traces/negative-time.jsonl": '{"arrival_time_s": -1}\n',
    "traces/nan-time.csv": "arrival_time_s\nnan\n",
    "traces/huge-tokens.csv": "arrival_time_s,visual_tokens\n0,99999999999999999999\n",
    "traces/bad-size.csv": "arrival_time_s,image_size\n0,0x0\n",
    "traces/zero-output.jsonl": '{"arrival_time_s": 0, "output_tokens": 0}\n',
    "traces/unknown-column.csv": "arrival_time_s,colour\n0,red\n",
    "traces/not-json.jsonl": "{not json\n",
    "traces/deep.jsonl": '{"a":' * DEEP + "1" + "}" * DEEP + "\n",
}

# --- images ------------------------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (no pixel data): a decompression bomb
    to any reader that trusts the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _write_images(root: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(root / "images/rgb.png")
    Image.fromarray(rng.integers(0, 255, (50, 30), dtype=np.uint8)).save(root / "images/grey.png")
    Image.fromarray(rng.integers(0, 255, (2000, 1), dtype=np.uint8)).save(root / "images/strip-1x2000.png")
    Image.fromarray(rng.integers(0, 255, (1, 2000), dtype=np.uint8)).save(root / "images/strip-2000x1.png")
    for name, bad in (("nan", np.nan), ("inf", np.inf)):
        pixels = rng.random((40, 40), dtype=np.float32)
        pixels[5:9, 5:9] = bad
        Image.fromarray(pixels, mode="F").save(root / f"images/float-{name}.tiff")
    Image.fromarray(rng.random((40, 40), dtype=np.float32) * 1e30, mode="F").save(
        root / "images/float-huge.tiff")
    (root / "images/bomb.png").write_bytes(_png_header(200_000, 200_000))
    (root / "images/truncated.png").write_bytes((root / "images/rgb.png").read_bytes()[:80])
    (root / "images/empty.png").write_bytes(b"")
    (root / "images/notes.txt").write_text("not an image")


IMAGE_FILES = ("images/rgb.png", "images/grey.png")
BAD_IMAGE_FILES = ("images/strip-1x2000.png", "images/strip-2000x1.png", "images/float-nan.tiff",
                   "images/float-inf.tiff", "images/float-huge.tiff", "images/bomb.png",
                   "images/truncated.png", "images/empty.png", "images/notes.txt")

# --- special entries: outputs that must survive ----------------------------------------------

DEVICE_NODES = {"special/null": (1, 3), "special/full": (1, 7)}  # char devices, as /dev/null, /dev/full
SYMLINKS = {"special/link.json": "target.json", "special/link.csv": "target.csv",
            "special/link.png": "target.png", "special/link.toml": "target.toml",
            "special/dangling.json": "no-such-dir/x.json"}


def make_specials(root: Path) -> None:
    """Create (or re-create, after a case replaced them) the device nodes and symlinks."""
    for name, (major, minor) in DEVICE_NODES.items():
        path = root / name
        try:
            mode = os.lstat(path).st_mode
            if stat.S_ISCHR(mode):
                continue
            path.unlink()
        except FileNotFoundError:
            pass
        if os.geteuid() == 0:  # mknod needs root; without it the cases use no device node
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    for name, target in SYMLINKS.items():
        path = root / name
        if path.is_symlink() and os.readlink(path) == target:
            continue
        if path.exists() or path.is_symlink():
            path.unlink()
        path.symlink_to(target)


def build(root: Path, with_images: bool = True) -> Path:
    """Write every input under ``root`` (an empty directory)."""
    for name, data in {**GOOD_CONFIGS, **BAD_CONFIGS, **GOOD_RESULTS, **BAD_RESULTS}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    for name, text in {**RAW_CONFIGS, **RAW_RESULTS, **RAW_TRACES, **_profiles()}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "special").mkdir()
    (root / "special/target.json").write_text("{}")
    (root / "adir").mkdir()
    (root / "out").mkdir()
    (root / "configs/tiny-llama.json").write_text(json.dumps(TINY_LLAMA))
    make_specials(root)
    if with_images:
        _write_images(root)
    return root


TINY_LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 64,
              "vocab_size": 128}
CPU_PROFILE = "profiles/this-cpu.toml"


def write_cpu_profile(root: Path) -> Path:
    """A CPU profile of this machine (in appearance: fixed measurements), for validate."""
    from fpcost.costmodel.calibration import build_profile
    from fpcost.hardware_profiles import write_profile
    from fpcost.pruner.timing import cpu_name
    from tests.test_calibration import measurements

    path = root / CPU_PROFILE
    if not path.exists():
        measured = measurements()
        measured = type(measured)(**{**measured.__dict__, "device_name": cpu_name(),
                                     "provenance": {"device": cpu_name(), "threads": "1"}})
        write_profile(build_profile(measured, "this-cpu"), path)
    return path


def tiny_encoder_dir(root: Path) -> Path:
    """A 4-layer random CLIP vision model at 56 px / 7 px patches (64 tokens), saved."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from tests.pruner.tiny_models import TINY_ENCODER

    torch.manual_seed(0)
    directory = root / "model"
    if directory.exists():
        return directory
    CLIPVisionModel(CLIPVisionConfig(**TINY_ENCODER)).save_pretrained(directory)
    return directory


CONFIG_FILES = tuple(GOOD_CONFIGS) + tuple(BAD_CONFIGS) + tuple(RAW_CONFIGS) + ("configs/dir",)
PROFILE_FILES = tuple(_profiles())
RESULTS_FILES = tuple(GOOD_RESULTS) + tuple(BAD_RESULTS) + tuple(RAW_RESULTS)
TRACE_FILES = tuple(RAW_TRACES)

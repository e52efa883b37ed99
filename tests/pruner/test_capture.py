"""Attention capture on SDPA models equals eager ``output_attentions`` (capture.py)."""

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from fpcost.pruner.capture import AttentionCapture, find_attention_layers
from fpcost.pruner.errors import PruningError

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, image_size=28, patch_size=7)
FAMILIES = {
    "clip": (CLIPVisionModel, CLIPVisionConfig(intermediate_size=64, **TINY)),
    "siglip": (SiglipVisionModel, SiglipVisionConfig(intermediate_size=64, **TINY)),
    "dinov2": (Dinov2Model, Dinov2Config(**TINY)),
}


def _pair(family: str):
    """The same random weights twice: one model on SDPA, one on eager attention."""
    model_class, config = FAMILIES[family]
    torch.manual_seed(0)
    sdpa = model_class(config).eval()
    sdpa.set_attn_implementation("sdpa")
    eager = model_class(config).eval()
    eager.set_attn_implementation("eager")
    eager.load_state_dict(sdpa.state_dict())
    return sdpa, eager


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("head_reduce", ["mean", "max"])
def test_capture_equals_eager_attention(family, head_reduce):
    sdpa, eager = _pair(family)
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = eager(pixels, output_attentions=True).attentions  # per layer (B, H, T, T)
        with AttentionCapture(sdpa, layers=None, head_reduce=head_reduce) as capture:
            hidden = sdpa(pixels).last_hidden_state
        torch.testing.assert_close(hidden, eager(pixels).last_hidden_state, rtol=1e-5, atol=1e-5)
    assert len(reference) == capture.num_layers == 3
    for layer, attn in enumerate(reference):
        expected = attn.mean(dim=1) if head_reduce == "mean" else attn.amax(dim=1)  # (B, T, T)
        assert capture.maps[layer].dtype == torch.float32
        torch.testing.assert_close(capture.maps[layer], expected, rtol=1e-5, atol=1e-6)


def test_siglip_has_no_cls_and_dinov2_has_one():
    tokens = {}
    for family in ("siglip", "dinov2", "clip"):
        sdpa, _ = _pair(family)
        with torch.no_grad(), AttentionCapture(sdpa, layers=[-1]) as capture:
            sdpa(torch.zeros(1, 3, 28, 28))
        tokens[family] = capture.maps[2].shape[-1]
    assert tokens == {"siglip": 16, "dinov2": 17, "clip": 17}


def test_only_requested_layers_are_hooked_and_hooks_are_removed():
    model, _ = _pair("clip")
    layers = find_attention_layers(model)
    capture = AttentionCapture(model, layers=[0, -1])
    with capture:
        hooked = [bool(layer.q_proj._forward_hooks) for layer in layers]
        with torch.no_grad():
            model(torch.zeros(1, 3, 28, 28))
    assert hooked == [True, False, True]
    assert sorted(capture.maps) == [0, 2]
    assert all(
        not layer.q_proj._forward_hooks and not layer.k_proj._forward_hooks for layer in layers
    )
    assert capture.elapsed_s > 0


def test_hooks_are_removed_on_error():
    model, _ = _pair("dinov2")
    layers = find_attention_layers(model)

    def fail(*_):
        raise RuntimeError("boom in the last layer")

    # the forward fails after the first layers' hooks have run
    failing = model.encoder.layer[-1].register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom"), AttentionCapture(model) as capture:
            model(torch.zeros(1, 3, 28, 28))
    finally:
        failing.remove()
    assert sorted(capture.maps) == [0, 1]
    assert all(
        not layer.q_proj._forward_hooks and not layer.k_proj._forward_hooks for layer in layers
    )


def test_layers_found_by_walking_in_order():
    model, _ = _pair("dinov2")
    layers = find_attention_layers(model)
    assert [layer.module for layer in layers] == [block.attention for block in model.encoder.layer]
    assert all(layer.num_heads == 4 and layer.head_dim == 8 for layer in layers)


def test_no_attention_layers_is_a_clear_error():
    with pytest.raises(
        PruningError, match="no attention layers with q/k projections found in Linear"
    ):
        AttentionCapture(torch.nn.Linear(3, 3))


def test_layer_out_of_range_is_a_clear_error():
    model, _ = _pair("clip")
    with pytest.raises(PruningError, match=r"layer \(3\) is out of range for a 3-layer encoder"):
        AttentionCapture(model, layers=[3])


def test_query_rows_computes_only_those_rows():
    model, _ = _pair("clip")
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad(), AttentionCapture(model) as full:
        model(pixels)
    wanted = torch.tensor([0, 5, 9])
    asked = []

    def rows(layer, maps_so_far):
        asked.append((layer, sorted(maps_so_far)))
        return wanted if layer == 2 else None

    with torch.no_grad(), AttentionCapture(model, query_rows=rows) as partial:
        model(pixels)
    assert asked == [(0, []), (1, [0]), (2, [0, 1])]
    torch.testing.assert_close(partial.maps[1], full.maps[1])
    torch.testing.assert_close(partial.maps[2][:, wanted], full.maps[2][:, wanted])
    others = torch.ones(17, dtype=torch.bool)
    others[wanted] = False
    assert (partial.maps[2][:, others] == 0).all()
    assert partial.rows[2].tolist() == [0, 5, 9] and 1 not in partial.rows

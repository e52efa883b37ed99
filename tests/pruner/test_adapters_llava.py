"""LLaVA adapter: keep-all equals plain ``generate``; real pruning shrinks the LLM input."""

import pytest
import torch
from tiny_models import (
    IMAGE_TOKEN_ID,
    NUM_PATCHES,
    StridePruner,
    left_padded,
    pixel_values,
    prompt,
    tiny_llava,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from fpcost.pruner.adapters import SUPPORTED_MODELS, KeepAll, PruningError, generate_pruned

GREEDY = {"max_new_tokens": 5, "do_sample": False}
PROMPTS = [
    prompt(NUM_PATCHES, [1, 5, 6], [7, 8]),
    prompt(NUM_PATCHES, [1, 9], [10, 11, 12, 13, 14, 15]),
]


@pytest.fixture(scope="module")
def model():
    return tiny_llava(seed=0)


def _plain(model, ids, mask, pixels):
    out = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, **GREEDY)
    return out[:, ids.shape[1] :]  # (B, 5): new tokens only


@pytest.mark.parametrize("batch", [1, 2])
def test_keep_all_equals_plain_generate(model, batch):
    ids, mask = left_padded(PROMPTS[:batch])
    pixels = pixel_values(batch, 3)
    result = generate_pruned(
        model,
        {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels},
        KeepAll(),
        **GREEDY,
    )
    assert torch.equal(result.sequences, _plain(model, ids, mask, pixels))
    assert torch.equal(result.input_ids, ids) and torch.equal(result.attention_mask, mask)
    assert result.num_kept == result.num_tokens == [NUM_PATCHES] * batch


def test_pruning_with_a_different_k_per_sample(model):
    ids, mask = left_padded(PROMPTS)
    pixels = pixel_values(2, 3)
    result = generate_pruned(
        model,
        {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels},
        StridePruner((2, 3)),
        **GREEDY,
    )
    assert result.sequences.shape == (2, 5)
    assert result.num_kept_per_unit == [[8], [6]] and result.num_tokens == [16, 16]
    placeholders = (result.input_ids == IMAGE_TOKEN_ID).sum(dim=1).tolist()
    assert placeholders == result.num_kept
    lengths = result.attention_mask.sum(dim=1)
    assert (lengths == mask.sum(dim=1) - torch.tensor([8, 10])).all()
    assert result.input_length == int(lengths.max()) < ids.shape[1]
    assert result.selections["image"].num_kept == [8, 6]


def test_pruned_features_match_the_models_own_injection_path(model):
    """Cross-check against transformers' ``mm_encoder_outputs`` path fed by hand-pruned features."""
    ids, mask = left_padded(PROMPTS)
    pixels = pixel_values(2, 3)
    result = generate_pruned(
        model,
        {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels},
        StridePruner((2, 3)),
        **GREEDY,
    )
    with torch.no_grad():
        layer = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[
            -2
        ]  # (2, 17, D)
        feats = [
            model.model.multi_modal_projector(layer[b, 1 + torch.arange(0, 16, s)])
            for b, s in enumerate((2, 3))
        ]
    reference = model.generate(
        input_ids=result.input_ids,
        attention_mask=result.attention_mask,
        mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=feats)},
        **GREEDY,
    )
    assert torch.equal(result.sequences, reference[:, result.input_ids.shape[1] :])


def test_two_images_in_one_sample(model):
    ids, mask = left_padded([PROMPTS[0] + [IMAGE_TOKEN_ID] * NUM_PATCHES + [3], PROMPTS[1]])
    pixels = pixel_values(3, 4)
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}
    result = generate_pruned(model, inputs, KeepAll(), **GREEDY)
    assert torch.equal(result.sequences, _plain(model, ids, mask, pixels))
    pruned = generate_pruned(model, inputs, StridePruner((2, 4, 8)), **GREEDY)
    assert pruned.num_kept_per_unit == [[8, 4], [2]]


def _hooks(model):
    return [
        (name, tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
        for name, m in model.named_modules()
    ]


def test_no_hooks_are_left_behind(model):
    ids, mask = left_padded(PROMPTS[:1])
    # transformers installs its own output-capturing hooks, once, the first time hidden
    # states are requested; take the snapshot after that
    model.model.vision_tower(pixel_values(1), output_hidden_states=True)
    before = _hooks(model)
    generate_pruned(
        model, {"input_ids": ids, "pixel_values": pixel_values(1)}, StridePruner(), **GREEDY
    )
    assert _hooks(model) == before


def test_unsupported_model_lists_the_supported_ones():
    with pytest.raises(PruningError, match="Linear is not supported; supported models: ") as info:
        generate_pruned(torch.nn.Linear(2, 2), {"input_ids": torch.zeros(1, 1)}, KeepAll())
    assert all(name in str(info.value) for name in SUPPORTED_MODELS)


def test_bad_inputs_raise(model):
    ids, mask = left_padded(PROMPTS[:1])
    with pytest.raises(PruningError, match="unexpected inputs"):
        generate_pruned(model, {"input_ids": ids, "pixels": pixel_values(1)}, KeepAll())
    with pytest.raises(PruningError, match="budget applies to LLaVA-NeXT and LLaVA-OneVision only"):
        generate_pruned(
            model, {"input_ids": ids, "pixel_values": pixel_values(1)}, KeepAll(), budget=4
        )
    with pytest.raises(PruningError, match="more placeholders of token 100 than the 1"):
        two = torch.cat([ids, ids[:, -NUM_PATCHES - 2 :]], dim=1)
        generate_pruned(model, {"input_ids": two, "pixel_values": pixel_values(1)}, KeepAll())


def test_a_pruner_breaking_the_contract_raises(model):
    class Unsorted(StridePruner):
        def encode_and_select(self, vision_model, pixels):
            out = super().encode_and_select(vision_model, pixels)
            out.selection.kept = [k.flip(0) for k in out.selection.kept]
            return out

    ids, _ = left_padded(PROMPTS[:1])
    with pytest.raises(PruningError, match="not sorted and unique"):
        generate_pruned(model, {"input_ids": ids, "pixel_values": pixel_values(1)}, Unsorted())


def test_full_strategy_and_several_feature_layers():
    """ "full" passes the CLS feature on (always kept); several layers are concatenated."""
    model = tiny_llava(seed=1, vision_feature_layer=[-3, -2], vision_feature_select_strategy="full")
    ids, mask = left_padded(
        [prompt(NUM_PATCHES + 1, [1, 5], [6]), prompt(NUM_PATCHES + 1, [1], [7])]
    )
    pixels = pixel_values(2, 9)
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}
    result = generate_pruned(model, inputs, KeepAll(), **GREEDY)
    assert torch.equal(result.sequences, _plain(model, ids, mask, pixels))
    pruned = generate_pruned(model, inputs, StridePruner((2, 4)), **GREEDY)
    assert pruned.num_kept_per_unit == [[1 + 8], [1 + 4]]


class _Merging(StridePruner):
    """Replaces each kept patch feature by the mean of the feature layer's patches."""

    def encode_and_select(self, vision_model, pixels):
        out = super().encode_and_select(vision_model, pixels)
        layer = out.hidden_states[-2][:, 1:]  # (B, N, D)
        out.merged_features = [
            layer[b].mean(0, keepdim=True).expand(k.numel(), -1)  # (K_b, D)
            for b, k in enumerate(out.selection.kept)
        ]
        out.feature_layer = len(out.hidden_states) - 2
        return out


def test_merged_features_replace_the_gathered_ones(model):
    ids, mask = left_padded(PROMPTS)
    pixels = pixel_values(2, 3)
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}
    result = generate_pruned(model, inputs, _Merging((2, 3)), **GREEDY)
    with torch.no_grad():
        layer = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2]
        feats = [
            model.model.multi_modal_projector(layer[b, 1:].mean(0, keepdim=True).expand(k, -1))
            for b, k in enumerate((8, 6))
        ]
    reference = model.generate(
        input_ids=result.input_ids,
        attention_mask=result.attention_mask,
        mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=feats)},
        **GREEDY,
    )
    assert torch.equal(result.sequences, reference[:, result.input_ids.shape[1] :])


def test_merged_features_from_another_layer_raise(model):
    class WrongLayer(_Merging):
        def encode_and_select(self, vision_model, pixels):
            out = super().encode_and_select(vision_model, pixels)
            out.feature_layer = -1
            return out

    ids, _ = left_padded(PROMPTS[:1])
    with pytest.raises(PruningError, match="merged features come from layer -1"):
        generate_pruned(model, {"input_ids": ids, "pixel_values": pixel_values(1)}, WrongLayer())


def test_return_dict_in_generate_keeps_the_full_output(model):
    ids, mask = left_padded(PROMPTS)
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_values(2, 3)}
    result = generate_pruned(
        model,
        inputs,
        StridePruner((2, 3)),
        return_dict_in_generate=True,
        output_scores=True,
        **GREEDY,
    )
    assert result.sequences.shape == (2, 5)
    assert len(result.generate_output.scores) == 5
    assert torch.equal(torch.stack(result.generate_output.scores, 1).argmax(-1), result.sequences)

"""What the three LLaVA-family adapters share: errors, lookups on one model instance,
feature-layer selection, the result record, and the final
embed → scatter → ``generate(inputs_embeds=...)`` step.

Nothing here patches a class or registers a hook: the adapters run the vision tower
through the pruner, project only the kept tokens, and hand the language model a rebuilt
prompt as embeddings. Every lookup walks the given instance, so a submodule moving between
transformers versions (``model.vision_tower`` vs ``model.model.vision_tower``) changes
nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fpcost.pruner.adapters.rebuild import (
    RebuiltPrompt,
    Segment,
    pad_token_id,
    per_sample,
    rebuild_prompt,
)
from fpcost.pruner.adapters.stages import StageClock, record_selection, timed
from fpcost.pruner.api import EncoderOutput, Selection
from fpcost.pruner.errors import PruningError


@dataclass
class PrunedGeneration:
    """The outcome of one pruned ``generate`` call.

    ``sequences``: (B, T_new) generated token ids only (the prompt is not repeated, as
    ``generate(inputs_embeds=...)`` returns just the new tokens).
    ``input_ids`` / ``attention_mask``: (B, L') the prompt the LLM actually read, with
    K placeholders per image / frame, left-padded.
    ``num_tokens_per_unit[b]`` / ``num_kept_per_unit[b]``: LLM visual tokens of sample b
    before / after pruning, one entry per image (LLaVA, LLaVA-NeXT, Video-LLaVA images) or
    per frame (Video-LLaVA videos), in prompt order. Tokens the model always passes on
    (a frame's CLS, LLaVA-NeXT newlines) are counted in both.
    ``selections``: the pruner's raw selection per modality ("image", "video"), indexed
    over all images / frames / crops of the batch in order.
    ``generate_output``: ``generate``'s own output when it is more than a tensor
    (``return_dict_in_generate=True``: scores, logits, ...); else None.
    """

    sequences: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    num_tokens_per_unit: list[list[int]]
    num_kept_per_unit: list[list[int]]
    selections: dict[str, Selection] = field(default_factory=dict)
    generate_output: object | None = None  # generate()'s full output, if it returned a dict

    @property
    def num_tokens(self) -> list[int]:
        """LLM visual tokens per sample before pruning."""
        return [sum(units) for units in self.num_tokens_per_unit]

    @property
    def num_kept(self) -> list[int]:
        """LLM visual tokens per sample after pruning."""
        return [sum(units) for units in self.num_kept_per_unit]

    @property
    def input_length(self) -> int:
        """Padded prompt length the LLM was fed."""
        return int(self.input_ids.shape[1])


def num_patch_tokens(vision_model: nn.Module, pixel_values: torch.Tensor) -> int:
    """Patch tokens a ViT makes from ``pixel_values`` (B, C, H, W): (H // p) * (W // p)."""
    patch_size = getattr(getattr(vision_model, "config", None), "patch_size", None)
    if not isinstance(patch_size, int):
        raise PruningError(f"{type(vision_model).__name__} has no integer config.patch_size")
    height, width = pixel_values.shape[-2:]
    return (height // patch_size) * (width // patch_size)


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The one submodule of ``model`` whose attribute name is ``name``, at any depth."""
    found = [module for path, module in model.named_modules() if path.rsplit(".", 1)[-1] == name]
    if len(found) != 1:
        raise PruningError(
            f"{type(model).__name__} has {len(found)} submodules named {name!r}; "
            "expected exactly one"
        )
    return found[0]


def find_parameter(model: nn.Module, name: str) -> nn.Parameter:
    """The one parameter of ``model`` whose attribute name is ``name``, at any depth."""
    found = [p for path, p in model.named_parameters() if path.rsplit(".", 1)[-1] == name]
    if len(found) != 1:
        raise PruningError(
            f"{type(model).__name__} has {len(found)} parameters named {name!r}; "
            "expected exactly one"
        )
    return found[0]


def config_token_id(model: nn.Module, *names: str) -> int:
    """The first integer among ``model.config.<names>`` (e.g. image_token_id, image_token_index)."""
    for name in names:
        value = getattr(model.config, name, None)
        if isinstance(value, int):
            return value
    raise PruningError(f"{type(model).__name__}.config defines none of {', '.join(names)}")


def feature_layers(model: nn.Module) -> list[int]:
    """``config.vision_feature_layer`` as a list (LLaVA concatenates several along the width)."""
    layer = model.config.vision_feature_layer
    layers = [layer] if isinstance(layer, int) else list(layer)
    if not layers or not all(isinstance(i, int) for i in layers):
        raise PruningError(f"vision_feature_layer ({layer!r}) must be an int or a list of ints")
    return layers


def select_strategy(model: nn.Module) -> str:
    """``config.vision_feature_select_strategy``: "default" drops the CLS token, "full" keeps it."""
    strategy = getattr(model.config, "vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
        raise PruningError(
            f"vision_feature_select_strategy ({strategy!r}) must be 'default' or 'full'"
        )
    return strategy


def run_pruner(
    pruner,
    vision_model: nn.Module,
    pixel_values: torch.Tensor,
    stage_clock: StageClock | None = None,
) -> EncoderOutput:
    """Run ``pruner`` once and check its output against the contract in ``api.py``; its
    ``selection_time_s`` goes to ``stage_clock`` (the caller times the pass as "vision")."""
    encoded = pruner.encode_and_select(vision_model, pixel_values)
    if not isinstance(encoded, EncoderOutput):
        raise PruningError(
            f"{type(pruner).__name__}.encode_and_select returned {type(encoded).__name__}, "
            "not EncoderOutput"
        )
    record_selection(stage_clock, encoded.selection_time_s)
    batch = pixel_values.shape[0]
    selection = encoded.selection
    if len(encoded.hidden_states) == 0:
        raise PruningError(f"{type(pruner).__name__} returned no hidden states")
    if len(selection.kept) != batch:
        raise PruningError(f"selection has {len(selection.kept)} entries for a batch of {batch}")
    num_tokens = encoded.hidden_states[-1].shape[1]
    if not 0 <= num_tokens - selection.num_patches <= 1:
        raise PruningError(
            f"selection covers {selection.num_patches} patches but the encoder emits "
            f"{num_tokens} tokens"
        )
    for b, kept in enumerate(selection.kept):
        if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= selection.num_patches):
            raise PruningError(f"selection {b} indexes outside [0, {selection.num_patches})")
        if kept.numel() > 1 and not bool((kept[1:] > kept[:-1]).all()):
            raise PruningError(f"selection {b} is not sorted and unique")
    return encoded


def layer_features(encoded: EncoderOutput, layers: Sequence[int]) -> torch.Tensor:
    """The feature layer(s) LLaVA reads, concatenated along the width:
    (B, N_tokens, D * len(layers))."""
    num_states = len(encoded.hidden_states)
    for layer in layers:
        if not -num_states <= layer < num_states:
            raise PruningError(
                f"vision_feature_layer {layer} is out of range for {num_states} hidden states"
            )
    return torch.cat(
        [encoded.hidden_states[layer] for layer in layers], dim=-1
    )  # (B, N_tokens, D')


def token_positions(kept: torch.Tensor, num_prefix: int, keep_prefix: bool) -> torch.Tensor:
    """Positions in the encoder's token axis of the kept patches, after its prefix (CLS) tokens.

    ``keep_prefix`` puts the prefix tokens first, as the model does when it passes them on
    (Video-LLaVA frames, the "full" strategy).
    """
    patches = kept.to(torch.long) + num_prefix
    if keep_prefix and num_prefix:
        return torch.cat(
            [torch.arange(num_prefix, dtype=torch.long, device=patches.device), patches]
        )
    return patches


def gather_kept(
    features: torch.Tensor, encoded: EncoderOutput, layers: Sequence[int], keep_prefix: bool
) -> list[torch.Tensor]:
    """Kept tokens of each image / frame from ``features`` (B, N_tokens, D'): list of (K_b, D').

    A merging pruner's ``merged_features`` replace the gathered patch features (the prefix
    tokens, when passed on, still come from ``features``); they are only valid for the one
    feature layer they were computed from.
    """
    selection = encoded.selection
    num_prefix = features.shape[1] - selection.num_patches
    merged = encoded.merged_features
    if merged is not None:
        num_states = len(encoded.hidden_states)
        wanted = {layer % num_states for layer in layers}
        if encoded.feature_layer is None or wanted != {encoded.feature_layer % num_states}:
            raise PruningError(
                f"merged features come from layer {encoded.feature_layer}, "
                f"but the model reads vision_feature_layer {list(layers)}"
            )
    out = []
    for b, kept in enumerate(selection.kept):
        if merged is None:
            out.append(
                features[b, token_positions(kept, num_prefix, keep_prefix).to(features.device)]
            )
            continue  # (K_b, D')
        if merged[b].shape != (kept.numel(), features.shape[-1]):
            raise PruningError(
                f"merged features {b} have shape {tuple(merged[b].shape)}, "
                f"expected ({kept.numel()}, {features.shape[-1]})"
            )
        prefix = features[b, :num_prefix] if keep_prefix else features[b, :0]  # (P, D')
        out.append(
            torch.cat([prefix, merged[b].to(features.device, features.dtype)])
        )  # (P + K_b, D')
    return out


def drop_prefix(model: nn.Module, num_prefix: int) -> bool:
    """Whether the model drops the encoder's prefix token for images ("default" strategy)."""
    if select_strategy(model) == "full":
        return False
    if num_prefix != 1:
        raise PruningError(
            "vision_feature_select_strategy 'default' drops a CLS token, but the vision tower "
            f"emits {num_prefix} prefix tokens; use 'full' for encoders without CLS"
        )
    return True


def embed_and_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    features: Mapping[int, torch.Tensor],
    generate_kwargs: Mapping[str, object],
) -> tuple[torch.Tensor, object | None]:
    """Embed ``input_ids`` (B, L), scatter each ``features[token_id]`` (sum K, D) into that
    token's placeholders in row-major order, and ``generate`` from the embeddings.

    Returns the new tokens (B, T_new) and, when ``generate`` returned more than a tensor
    (``return_dict_in_generate=True``), that whole output.
    """
    embedding = model.get_input_embeddings()
    device = embedding.weight.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    with torch.no_grad():
        embeds = embedding(input_ids)  # (B, L, D)
        for token_id, feats in features.items():
            mask = (input_ids == token_id).unsqueeze(-1)  # (B, L, 1)
            num_slots = int(mask.sum())
            if num_slots != feats.shape[0]:
                raise PruningError(
                    f"rebuilt prompt has {num_slots} placeholders for token {token_id} "
                    f"but {feats.shape[0]} features"
                )
            embeds = embeds.masked_scatter(mask, feats.to(device, embeds.dtype))
    output = model.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)
    if isinstance(output, torch.Tensor):
        return output, None
    return output.sequences, output


def generate_from_segments(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    segments: Sequence[Segment],
    features: Mapping[int, torch.Tensor],
    generate_kwargs: Mapping[str, object],
    selections: dict[str, Selection],
    stage_clock: StageClock | None = None,
) -> PrunedGeneration:
    """The end every adapter shares: rebuild the prompt with each segment's kept count of
    placeholders (left-padded), scatter ``features`` into them, ``generate``, and report the
    counts per sample. All of it is the "llm" stage of ``stage_clock``."""
    with timed(stage_clock, "llm"):
        prompt = rebuild_prompt(
            inputs["input_ids"],
            inputs.get("attention_mask"),
            segments,
            pad_token_id(model, generate_kwargs),
        )
        sequences, raw = embed_and_generate(
            model, prompt.input_ids, prompt.attention_mask, features, generate_kwargs
        )
    return pruned_generation(prompt, segments, sequences, raw, selections)


def pruned_generation(
    prompt: RebuiltPrompt,
    segments: Sequence[Segment],
    sequences: torch.Tensor,
    raw: object | None,
    selections: dict[str, Selection],
) -> PrunedGeneration:
    """The result record of a ``generate`` on ``prompt``, with each sample's counts before and
    after pruning from the segments it holds."""
    return PrunedGeneration(
        sequences=sequences,
        input_ids=prompt.input_ids,
        attention_mask=prompt.attention_mask,
        num_tokens_per_unit=per_sample([s.num_tokens for s in segments], prompt.segments),
        num_kept_per_unit=per_sample([s.num_kept for s in segments], prompt.segments),
        generate_output=raw,
        selections=selections,
    )

"""Rebuild a multimodal prompt after pruning: K_i placeholders for visual unit i.

A processor expands each ``<image>`` (or ``<video>``) into as many placeholder tokens as
the model makes features for it. After pruning, unit i (an image, a frame, a LLaVA-NeXT
image with its crops) has K_i features instead of N_i, so its run of N_i placeholders must
become K_i placeholders, and the batch must be re-padded since every sample shrinks by a
different amount. Pure list work over token ids; no model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fpcost.pruner.adapters.common import PruningError


@dataclass(frozen=True)
class Segment:
    """One visual unit's placeholders: ``num_tokens`` of ``token_id`` become ``num_kept``."""

    token_id: int
    num_tokens: int
    num_kept: int


@dataclass
class RebuiltPrompt:
    """``input_ids`` / ``attention_mask`` (B, L'), left-padded; ``segments[b]``: indices
    (into the list given to ``rebuild_prompt``) of the units sample b holds, in prompt order."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    segments: list[list[int]]


def rebuild_prompt(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    segments: Sequence[Segment],
    pad_token_id: int,
) -> RebuiltPrompt:
    """Replace each unit's placeholder run in ``input_ids`` (B, L) and re-pad on the left.

    ``segments`` lists the units in the order the model consumes features: for each token
    id, its units appear in row-major placeholder order (sample 0 first), which is the
    order ``masked_scatter`` fills them. Units of different token ids (Video-LLaVA images
    and videos) are matched independently. Positions where ``attention_mask`` is 0 are
    padding and are dropped, so right- or left-padded input both come out left-padded.
    """
    if input_ids.dim() != 2:
        raise PruningError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise PruningError(
            f"attention_mask shape {tuple(attention_mask.shape)} differs from "
            f"input_ids shape {tuple(input_ids.shape)}"
        )
    queues: dict[int, list[int]] = {}
    for index, segment in enumerate(segments):
        if segment.num_tokens < 1 or segment.num_kept < 0:
            raise PruningError(
                f"segment {index} has {segment.num_tokens} tokens and keeps {segment.num_kept}"
            )
        queues.setdefault(segment.token_id, []).append(index)
    cursor = {token_id: 0 for token_id in queues}

    rows: list[list[int]] = []
    held: list[list[int]] = []
    for b, (ids_row, mask_row) in enumerate(
        zip(input_ids.tolist(), attention_mask.tolist(), strict=True)
    ):
        tokens = [t for t, m in zip(ids_row, mask_row, strict=True) if m]
        out: list[int] = []
        mine: list[int] = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token not in queues:
                out.append(token)
                i += 1
                continue
            queue = queues[token]
            if cursor[token] >= len(queue):
                raise PruningError(
                    f"sample {b} has more placeholders of token {token} than the "
                    f"{len(queue)} visual inputs provide"
                )
            index = queue[cursor[token]]
            cursor[token] += 1
            segment = segments[index]
            run = tokens[i : i + segment.num_tokens]
            if len(run) != segment.num_tokens or any(t != token for t in run):
                raise PruningError(
                    f"sample {b}: expected a run of {segment.num_tokens} placeholders of token "
                    f"{token} "
                    f"at position {i}, found {sum(t == token for t in run)}"
                )
            out.extend([token] * segment.num_kept)
            mine.append(index)
            i += segment.num_tokens
        rows.append(out)
        held.append(mine)
    for token, queue in queues.items():
        if cursor[token] != len(queue):
            raise PruningError(
                f"the prompt has placeholders for {cursor[token]} visual inputs of token "
                f"{token}, but {len(queue)} were given"
            )

    length = max((len(row) for row in rows), default=0)
    new_ids = torch.full((len(rows), length), pad_token_id, dtype=input_ids.dtype)  # (B, L')
    new_mask = torch.zeros((len(rows), length), dtype=attention_mask.dtype)  # (B, L')
    for b, row in enumerate(rows):
        if row:
            new_ids[b, length - len(row) :] = torch.tensor(row, dtype=input_ids.dtype)
            new_mask[b, length - len(row) :] = 1
    return RebuiltPrompt(new_ids.to(input_ids.device), new_mask.to(attention_mask.device), held)


def pad_token_id(model, generate_kwargs: dict) -> int:
    """The pad id for re-padding: the caller's, else the generation config's, else the text
    config's, else 0. Padded positions are masked out, so the value never reaches a token."""
    candidates = [
        generate_kwargs.get("pad_token_id"),
        getattr(getattr(model, "generation_config", None), "pad_token_id", None),
        getattr(getattr(model.config, "text_config", model.config), "pad_token_id", None),
    ]
    for candidate in candidates:
        if isinstance(candidate, int):
            return candidate
        if isinstance(candidate, (list, tuple)) and candidate and isinstance(candidate[0], int):
            return candidate[0]
    return 0


def per_sample(values: Sequence[int], held: list[list[int]]) -> list[list[int]]:
    """``values[i]`` regrouped by the samples holding unit i, in prompt order."""
    return [[values[i] for i in mine] for mine in held]

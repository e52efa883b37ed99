"""Timing the whole pruned request, as a user runs it: encoder forward, freePruner
selection (its real overhead), projector on the kept tokens, LLM prefill — per image,
pruned and unpruned (encoder forward, projector on every patch token, prefill).

The LLM is ``validate.build_llm``'s Llama (random weights); the projector is LLaVA's
``mlp2x_gelu`` (Linear, GELU, Linear; random weights) from the encoder's width to the LLM's;
the encoder is the one given (e.g. the trained DINOv2 ViT-S/14). The image is decoded,
cropped and normalised once, outside the timed region (preprocessing is the same pruned or
not). Passes are interleaved (each round: every image pruned, then unpruned), and the
stage boundaries are marked inside each timed request so the report shows where the time
goes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fpcost.costmodel.noise import DEFAULT_MAX_SPREAD, Dispersion, high_spread, too_noisy
from fpcost.costmodel.spec import LLMSpec, ModelSpec, ProjectorSpec, VisionSpec

from .encoders import Encoder
from .run import open_image
from .timing import Device, fixed_threads, occupancy_clock, summarize
from .validate import build_llm

FEATURE_LAYER = -2  # LLaVA reads the penultimate layer's patch tokens
STAGES = ("encoder", "projector", "prefill")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RequestTiming:
    """Every timed pass of one image's request, pruned and unpruned: per pass, seconds per
    stage (``encoder`` holds the forward and, pruned, the selection; ``selection`` the
    pruner's own measure of its overhead)."""

    image: str
    num_tokens: int
    num_kept: int
    pruned: tuple[dict[str, float], ...]
    unpruned: tuple[dict[str, float], ...]

    def total_s(self, which: str, statistic: str) -> float:
        passes = self.pruned if which == "pruned" else self.unpruned
        return summarize([p["total"] for p in passes], statistic)

    def dispersion(self, which: str) -> Dispersion:
        return _dispersion(self.pruned if which == "pruned" else self.unpruned)

    def stages_s(self, which: str, statistic: str) -> dict[str, float]:
        """Each stage's seconds in the pass whose total is the ``statistic`` one (min), or
        the median of each stage over the passes (median)."""
        passes = self.pruned if which == "pruned" else self.unpruned
        if statistic == "min":
            chosen = min(passes, key=lambda p: p["total"])
            return {k: chosen[k] for k in STAGE_KEYS}
        return {k: summarize([p[k] for p in passes], statistic) for k in STAGE_KEYS}


STAGE_KEYS = ("encoder", "selection", "projector", "prefill", "total")


def _dispersion(passes) -> Dispersion:
    occupancies = [p["occupancy"] for p in passes if p.get("occupancy") is not None]
    return Dispersion.of([p["total"] for p in passes], occupancies or None)


def request_model_spec(encoder: Encoder, llm: LLMSpec) -> ModelSpec:
    """The cost model's description of encoder + projector + ``llm``."""
    cfg = encoder.model.config
    family = {"dinov2": "dinov2", "siglip_vision_model": "siglip"}.get(cfg.model_type, "clip")
    ffn = getattr(cfg, "intermediate_size", None) or int(cfg.hidden_size * getattr(cfg, "mlp_ratio", 4))
    vision = VisionSpec(hidden_size=cfg.hidden_size, intermediate_size=ffn,
                        num_hidden_layers=cfg.num_hidden_layers,
                        num_attention_heads=cfg.num_attention_heads, image_size=encoder.image_size,
                        patch_size=encoder.patch_size, family=family, feature_layer=FEATURE_LAYER,
                        name=encoder.name)
    return ModelSpec(name=f"{encoder.name}+{llm.name}", kind="llava", llm=llm, vision=vision,
                     projector=ProjectorSpec(cfg.hidden_size, llm.hidden_size),
                     default_num_visual_tokens=encoder.num_patches)


def _projector(vision_width: int, llm_width: int, device: Device, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with torch.device(device.torch_device):
        return nn.Sequential(nn.Linear(vision_width, llm_width), nn.GELU(),
                             nn.Linear(llm_width, llm_width)).eval()


def measure_requests(encoder: Encoder, pruner, paths: Sequence[Path], llm: LLMSpec,
                     dtype: str, device: Device, num_text_tokens: int, warmup: int = 1,
                     repeats: int = 3, progress: Progress | None = None, seed: int = 0,
                     max_spread: float = DEFAULT_MAX_SPREAD, retries: int = 2
                     ) -> list[RequestTiming]:
    """Time each image's request pruned and unpruned, ``repeats`` interleaved rounds after
    ``warmup``; images whose passes spread more than ``max_spread`` are re-timed up to
    ``retries`` times, then ``TooNoisyError``."""
    timer = device.timer
    vision = encoder.model.to(device.torch_device)
    num_patches = encoder.num_patches
    with fixed_threads(device.num_threads), torch.inference_mode():
        model = build_llm(llm, dtype, device, num_patches + num_text_tokens + 1, seed)
        embed = model.get_input_embeddings()
        projector = _projector(vision.config.hidden_size, llm.hidden_size, device, seed).to(
            model.dtype)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        text_ids = torch.randint(0, llm.vocab_size, (1, num_text_tokens), generator=generator)
        text_ids = text_ids.to(device.torch_device)
        pixels = [encoder.pixel_values([encoder.crop(open_image(p))]).to(device.torch_device)
                  for p in paths]  # (1, 3, S, S) each

        cpu = occupancy_clock(device)

        def request(pixel_values: torch.Tensor, pruned: bool) -> dict[str, float]:
            cpu_start = cpu() if cpu else 0.0
            start = timer.mark()
            if pruned:
                out = pruner.encode_and_select(vision, pixel_values)
                hidden, kept = out.hidden_states[FEATURE_LAYER], out.selection.kept[0]
                selection_s = float(out.selection_time_s or 0.0)
            else:
                hidden = vision(pixel_values, output_hidden_states=True).hidden_states[FEATURE_LAYER]
                kept, selection_s = None, 0.0
            patches = hidden[:, hidden.shape[1] - num_patches:]  # (1, P, D): CLS dropped
            if kept is not None:
                patches = patches[:, kept.to(patches.device)]  # (1, kept, D)
            encoded = timer.mark()
            visual = projector(patches.to(model.dtype))  # (1, kept, H)
            projected = timer.mark()
            embeds = torch.cat([visual, embed(text_ids)], dim=1)  # (1, kept + text, H)
            model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
            end = timer.mark()
            total = timer.elapsed_s(start, end)
            occupancy = (cpu() - cpu_start) / (total * device.num_threads) if cpu else None
            return {"encoder": timer.elapsed_s(start, encoded), "selection": selection_s,
                    "projector": timer.elapsed_s(encoded, projected),
                    "prefill": timer.elapsed_s(projected, end),
                    "total": total, "num_kept": float(patches.shape[1]), "occupancy": occupancy}

        for pixel_values in pixels:
            for _ in range(warmup):
                request(pixel_values, True)
                request(pixel_values, False)
        timer.synchronize()

        def rounds(indices) -> dict[int, tuple[list, list]]:
            passes = {i: ([], []) for i in indices}
            for r in range(repeats):
                for i in indices:
                    passes[i][0].append(request(pixels[i], True))
                    passes[i][1].append(request(pixels[i], False))
                if progress:
                    progress(f"request round {r + 1}/{repeats}")
            return passes

        passes = rounds(range(len(paths)))
        for attempt in range(retries + 1):
            spread = {f"{Path(paths[i]).name} {which}": _dispersion(ps[k])
                      for i, ps in passes.items() for k, which in ((0, "pruned"), (1, "unpruned"))}
            noisy = high_spread(spread, max_spread)
            if not noisy:
                break
            if attempt == retries:
                raise too_noisy("the request timings",
                                [f"{label}: {spread[label].problem(max_spread)}" for label in noisy],
                                "rerun on a quieter machine (fewer jobs, `--threads 1`)")
            again = sorted({i for i, p in enumerate(paths)
                            if any(label.startswith(Path(p).name + " ") for label in noisy)})
            passes.update(rounds(again))
    out = []
    for i, path in enumerate(paths):
        pruned, unpruned = passes[i]
        kept = int(pruned[0]["num_kept"])
        out.append(RequestTiming(Path(path).name, num_patches, kept, tuple(pruned), tuple(unpruned)))
    return out

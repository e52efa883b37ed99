"""Run one image (or video) and prompt through a user's LLaVA-family or Qwen2-VL /
Qwen2.5-VL checkpoint, unpruned and pruned.

``load_checkpoint(dir)`` loads a ``save_pretrained`` directory (model + processor);
a video (``video_frames.Video``) is prepared as the family's video processor does
(``video_inputs.py``);
``run_generate(...)`` generates greedily with every visual token and then with each pruner,
through the same adapter (``fpcost.pruner.adapters.generate_pruned``; keep-all equals plain
``generate`` token for token), and times each run, stage by stage.

What is timed, and how: each run is timed twice with ``time.perf_counter`` (CUDA
synchronised), ``generate(max_new_tokens=1)`` (TTFT) and ``generate(max_new_tokens=N)``
(total), each with a ``StageClock`` that the adapter fills (``adapters/stages.py``). Stages:

- ``vision``: the tower's pass (pixels to the device, hooks included) minus the pruner's
  ``selection_time_s``;
- ``selection``: the pruner's ``selection_time_s`` (hooks + scoring + choosing, by the
  pruner's own clock); 0 for keep-all (the unpruned run), None if the adapter reported none
  (it is then inside ``vision``);
- ``projector``: feature layer, gathering the kept tokens, projector, packing / newlines;
- ``prefill``: the TTFT run's "llm" stage (prompt rebuilt, embedded, prefill and the first
  token's sampling);
- ``decode``: the total run's "llm" minus the TTFT run's "llm" (the N − 1 further steps);
- ``other``: the rest of the total run (input checks at the adapter's entry; and the noise
  when the total run's "llm" differs from the TTFT run's by other than its decode).

vision, selection and projector come from the total run, so within one round
vision + selection + projector + prefill + decode + other = total (``stage_times``), unless
the TTFT run's prefill outlasts the whole total run's "llm" (then ``other`` is 0 and the
stages add up to a little more than the total).
Runs are interleaved (unpruned, pruned, unpruned, …) ``repeats`` times after one warm-up,
and every figure is the median over the rounds, separately (medians of stages need not add
up to the median total exactly).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fpcost.costmodel.pipeline import ALL_STAGES
from fpcost.pruner.adapters import generate_pruned
from fpcost.pruner.adapters.stages import StageClock
from fpcost.pruner.anchoring import model_anchored_layers
from fpcost.pruner.errors import PruningError
from fpcost.pruner.methods import get_pruner
from fpcost.pruner.video_frames import Video
from fpcost.pruner.video_inputs import (
    load_video_llava_processor,
    qwen_video_pixel_limits,
    read_video_config,
    video_batch,
)

# Hugging Face model_type -> families the adapters cover
QWEN_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
SUPPORTED_MODEL_TYPES = ("llava", "llava_next", "video_llava", "llava_onevision", *QWEN_MODEL_TYPES)


@dataclass(frozen=True)
class Checkpoint:
    model: torch.nn.Module
    processor: object
    model_type: str
    video_config: dict = field(default_factory=dict)  # video_preprocessor_config.json


# the measured stages of a run: the cost model's stages of one request, in pipeline order
STAGES = ALL_STAGES


@dataclass(frozen=True)
class GenerateRun:
    """One generation: label ("unpruned" or "freepruner 0.25"), answer, counts, times (s).

    ``stage_s``: median seconds of each of ``STAGES`` and of "other" (see the module doc;
    "selection" is None when the adapter did not report the pruner's time)."""

    label: str
    method: str
    ratio: float | None
    answer: str
    num_visual_tokens: int
    num_kept: int
    num_prompt_tokens: int
    num_new_tokens: int
    ttft_s: float
    total_s: float
    stage_s: dict[str, float | None]

    @property
    def decode_s(self) -> float:
        return self.stage_s["decode"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _model_type(directory: Path) -> str:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise PruningError(
            f"--model {directory}: no readable config.json ({_first_line(exc)})"
        ) from exc
    return str(getattr(config, "model_type", "unknown"))


def _processor(directory: Path, model_type: str):
    """The directory's processor; for Qwen2-VL / Qwen2.5-VL its tokenizer and PIL image
    processor (transformers' Qwen processors need torchvision, absent here)."""
    from transformers import AutoConfig, AutoProcessor

    if model_type in QWEN_MODEL_TYPES:
        from fpcost.pruner.qwen_processor import QwenVLImageTextProcessor

        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        return QwenVLImageTextProcessor.from_pretrained(directory, config)
    return AutoProcessor.from_pretrained(directory, local_files_only=True)


def layout_options(checkpoint: Checkpoint, image) -> dict[str, object]:
    """``estimate`` keywords that lay ``image`` out as the checkpoint does: the AnyRes
    layouts (LLaVA-NeXT, LLaVA-OneVision) and Qwen's dynamic resolution depend on the image's
    (width, height), Qwen's also on the image processor's pixel limits; the other families'
    layouts are fixed. A ``Video``: its frame count (Video-LLaVA's layout takes 8 only), and
    for Qwen the frame size and the video pixel limits."""
    from fpcost.costmodel.families import family_for_model_type

    if isinstance(image, Video):
        frames = {"frames": len(image.frames)}
        if checkpoint.model_type in QWEN_MODEL_TYPES:
            low, high = qwen_video_pixel_limits(checkpoint.video_config)
            return {**frames, "image_size": image.size, "min_pixels": low, "max_pixels": high}
        return frames
    if checkpoint.model_type in QWEN_MODEL_TYPES:
        min_pixels, max_pixels = checkpoint.processor.pixel_limits
        return {"image_size": image.size, "min_pixels": min_pixels, "max_pixels": max_pixels}
    family = family_for_model_type(checkpoint.model_type)
    if family is not None and family.uses_image_size:  # AnyRes: LLaVA-NeXT, LLaVA-OneVision
        return {"image_size": image.size}
    return {}


def load_checkpoint(directory: Path | str) -> Checkpoint:
    """The model (eval, float32 on CPU / its dtype on CUDA) and processor of ``directory``."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar on stderr

    directory = Path(directory)
    if not directory.is_dir():
        raise PruningError(f"--model {directory}: not a directory (give a save_pretrained one)")
    model_type = _model_type(directory)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise PruningError(
            f"--model {directory}: model_type {model_type!r} is not supported by fpcost generate; "
            f"pruning adapters exist for {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    video_config = read_video_config(directory)
    if model_type == "llava_onevision":  # its AutoProcessor needs torchvision
        from fpcost.pruner.onevision_processor import load_onevision_processor

        model = _load_model(directory)
        return Checkpoint(model, load_onevision_processor(directory, model), model_type,
                          video_config)
    if model_type == "video_llava":  # its AutoProcessor needs torchvision too
        model = _load_model(directory)
        return Checkpoint(model, load_video_llava_processor(directory, model), model_type,
                          video_config)
    try:
        processor = _processor(directory, model_type)
    except ImportError as exc:  # e.g. a processor class that needs torchvision
        raise PruningError(
            f"--model {directory}: the directory's processor cannot be loaded here: "
            f"{_first_line(exc)}"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PruningError(
            f"--model {directory}: no processor/tokenizer in the directory "
            f"(save the processor with save_pretrained next to the model): {_first_line(exc)}"
        ) from exc
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise PruningError(
            f"--model {directory}: the directory's processor is {type(processor).__name__}, "
            "not an image+text processor (save the model's processor with save_pretrained)"
        )
    return Checkpoint(model=_load_model(directory), processor=processor, model_type=model_type,
                      video_config=video_config)


def _load_model(directory: Path) -> torch.nn.Module:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(directory, local_files_only=True)
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    return model


def _inputs(checkpoint: Checkpoint, image, prompt: str) -> dict[str, torch.Tensor]:
    """The model's inputs for ``image`` (a PIL image, or a ``Video``) and ``prompt``."""
    processor = checkpoint.processor
    token = getattr(processor, "image_token", "<image>")
    # Qwen wraps the image in <|vision_start|> ... <|vision_end|>
    text = prompt if token in prompt else f"{getattr(processor, 'image_prompt', token)}\n{prompt}"
    try:
        if isinstance(image, Video):
            batch = video_batch(checkpoint.model, processor, checkpoint.model_type, image,
                                prompt, checkpoint.video_config)
        else:
            batch = processor(images=image, text=text, return_tensors="pt")
    except (ValueError, TypeError) as exc:
        kind = "video" if isinstance(image, Video) else "image"
        raise PruningError(
            f"the processor could not prepare the {kind} and --prompt: {_first_line(exc)}"
        ) from exc
    weight = next(checkpoint.model.parameters())
    # pixels in the model's dtype (a float16 checkpoint on CUDA); token ids stay integers
    # (Qwen2.5-VL's second_per_grid_ts stays float32: it scales the temporal position ids)
    return {
        key: value.to(weight.device, weight.dtype
                      if value.is_floating_point() and key != "second_per_grid_ts"
                      else value.dtype)
        for key, value in batch.items()
        if torch.is_tensor(value)
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(model, inputs, pruner, max_new_tokens: int):
    """One ``generate_pruned`` call: its result, wall seconds and filled ``StageClock``."""
    device = next(model.parameters()).device
    clock = StageClock(device)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        result = generate_pruned(
            model, inputs, pruner, max_new_tokens=max_new_tokens, do_sample=False,
            stage_clock=clock,
        )
    _sync(device)
    return result, time.perf_counter() - start, clock


def stage_times(
    first: StageClock, full: StageClock, full_s: float, selects: bool, num_new_tokens: int
) -> dict[str, float | None]:
    """Seconds per stage of one round (module doc) from the clocks of the TTFT run
    (``first``) and the total run (``full``: ``full_s`` wall seconds, ``num_new_tokens``
    generated). ``selects``: False for keep-all, whose "selection" is 0 (its bookkeeping
    stays in "vision"). A run of one new token has no decode (0, not the two prefills'
    difference); a decode shorter than the noise between the two prefills is 0, and that
    difference then shows in "other", so the stages still add up to ``full_s``."""
    missing = [name for name in ("vision", "projector", "llm") if name not in full.times_s]
    if "llm" not in first.times_s or missing:
        raise PruningError(
            f"the adapter timed no {', '.join(missing or ['llm'])} stage; "
            "it must wrap its stages in stages.timed()"
        )
    selection = full.selection_time_s if selects else 0.0
    prefill = first.times_s["llm"]
    decode = max(full.times_s["llm"] - prefill, 0.0) if num_new_tokens > 1 else 0.0
    vision = max(full.times_s["vision"] - (selection or 0.0), 0.0)
    counted = vision + (selection or 0.0) + full.times_s["projector"] + prefill + decode
    return {
        "vision": vision,
        "selection": selection,
        "projector": full.times_s["projector"],
        "prefill": prefill,
        "decode": decode,
        "other": max(full_s - counted, 0.0),
    }


def _median(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.median(values)


def run_generate(
    checkpoint: Checkpoint,
    image,
    prompt: str,
    method: str,
    ratios: tuple[float, ...],
    max_new_tokens: int,
    repeats: int = 3,
) -> list[GenerateRun]:
    """``image``: a PIL image or a ``Video``.
    The unpruned run first, then one run per ratio of ``method`` (one run if the method
    takes no ratio, keep-all). Greedy, ``max_new_tokens`` new tokens each."""
    inputs = _inputs(checkpoint, image, prompt)
    configs: list[tuple[str, str, float | None]] = [("unpruned", "keep-all", None)]
    if method == "keep-all" or not ratios:
        configs.append((method, method, None))  # the method's own default budget
    else:
        configs += [(f"{method} {ratio:g}", method, ratio) for ratio in ratios]
    # freePruner's default layers relative to the layer the LLM reads (anchoring.py)
    anchored = model_anchored_layers(checkpoint.model.config)
    pruners = [
        get_pruner(name, ratio=ratio, **(anchored if name == "freepruner" else {}))
        for _, name, ratio in configs
    ]
    ttft: list[list[float]] = [[] for _ in configs]
    total: list[list[float]] = [[] for _ in configs]
    stages: list[list[dict[str, float | None]]] = [[] for _ in configs]
    results = [None] * len(configs)
    model = checkpoint.model
    for round_ in range(repeats + 1):  # round 0 warms up and is not kept
        for i, pruner in enumerate(pruners):
            _, first_s, first_clock = _timed(model, inputs, pruner, 1)
            result, all_s, all_clock = _timed(model, inputs, pruner, max_new_tokens)
            if round_:
                ttft[i].append(first_s)
                total[i].append(all_s)
                selects = configs[i][1] != "keep-all"
                steps = int(result.sequences.shape[1])
                stages[i].append(stage_times(first_clock, all_clock, all_s, selects, steps))
            results[i] = result
    tokenizer = checkpoint.processor.tokenizer
    runs = []
    for (label, name, ratio), result, firsts, alls, rounds in zip(
        configs, results, ttft, total, stages, strict=True
    ):
        runs.append(
            GenerateRun(
                label=label,
                method=name,
                ratio=ratio,
                answer=tokenizer.decode(result.sequences[0], skip_special_tokens=True),
                num_visual_tokens=result.num_tokens[0],
                num_kept=result.num_kept[0],
                num_prompt_tokens=result.input_length,
                num_new_tokens=int(result.sequences.shape[1]),
                ttft_s=statistics.median(firsts),
                total_s=statistics.median(alls),
                stage_s={key: _median([r[key] for r in rounds]) for key in rounds[0]},
            )
        )
    return runs

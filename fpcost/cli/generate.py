"""``fpcost generate``: one image (or, with ``--video``, one video) and prompt through a
user's checkpoint, unpruned and pruned.

Prints both answers, the kept visual-token counts, the measured time of each stage
(vision, selection, projector, prefill, decode; see ``fpcost.pruner.generate``), TTFT,
total and the measured speedups, each next to fpcost's prediction for the same workload
(the cost model's stages of that request). The prediction needs ``--profile``, a profile of
*this* device (``fpcost calibrate --output FILE``): a profile of another device type or
another device is refused, so CPU measurements are never set beside GPU predictions.
Without ``--profile`` the predicted columns are left empty (null in JSON and CSV).
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from fpcost.cli.bounds import BoundedInt
from fpcost.cli.prune import METHOD_NAMES
from fpcost.cli.render import (
    Column,
    emit_csv,
    emit_json,
    format_option,
    render_table,
    scaled,
    stdout_console,
)
from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.pipeline import ALL_STAGES as STAGES  # the measured stages too
from fpcost.costmodel.pruning import DEFAULT_SELECTION, UNMODELLED_METHODS
from fpcost.costmodel.units import MILLI
from fpcost.costmodel.workload import MAX_FRAMES

MAX_NEW_TOKENS = 4096
MAX_REPEATS = 100
MAX_PROMPT_CHARS = 100_000
FRAMES = BoundedInt(1, MAX_FRAMES, f"at most {MAX_FRAMES} frames")
NEW_TOKENS = BoundedInt(1, MAX_NEW_TOKENS, f"at most {MAX_NEW_TOKENS} new tokens")
REPEATS = BoundedInt(1, MAX_REPEATS, f"at most {MAX_REPEATS} timed rounds")


def _speedup(value):
    return "-" if value is None else f"{value:.2f}x"


COLUMNS = (
    Column("label", "run", justify="left"),
    Column("num_visual_tokens", "visual"),
    Column("num_kept", "kept"),
    Column("num_prompt_tokens", "prompt"),
    Column("ttft_s", "TTFT (ms)", scaled(MILLI, 1)),
    Column("predicted_ttft_s", "pred. TTFT", scaled(MILLI, 1)),
    Column("total_s", "total (ms)", scaled(MILLI, 1)),
    Column("predicted_total_s", "pred. total", scaled(MILLI, 1)),
    Column("measured_ttft_speedup", "TTFT speedup", _speedup),
    Column("predicted_ttft_speedup", "pred.", _speedup),
    Column("measured_speedup", "total speedup", _speedup),
    Column("predicted_speedup", "pred.", _speedup),
)
# the stage table: two rows per run, measured then predicted (ms)
STAGE_COLUMNS = (
    Column("label", "run", justify="left"),
    Column("kind", "", justify="left"),
    *(Column(stage, stage, scaled(MILLI, 2)) for stage in STAGES),
    Column("other", "other", scaled(MILLI, 2)),
    Column("ttft", "TTFT", scaled(MILLI, 2)),
    Column("total", "total", scaled(MILLI, 2)),
)


def _check_ratio(ctx, param, values):
    for value in values:
        if not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise click.BadParameter(f"{value!r} must be in (0, 1]")
    return tuple(values)


def _profile_of_this_device(profile_path: Path):
    """The profile at ``profile_path`` and this device, after checking that the profile
    describes it (device type, name; a CPU profile's thread count is adopted: the runs are
    timed with as many intra-op threads as the profile was calibrated with)."""
    import torch

    from fpcost.costmodel.validation import check_profile_device
    from fpcost.hardware_profiles import load_profile
    from fpcost.pruner.timing import resolve_device

    profile = load_profile(str(profile_path))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = profile.provenance.get("threads")
    if device == "cpu" and threads is not None and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    check_profile_device(profile, dev.profile_device_type, dev.name, dev.num_threads)
    return profile, dev


def _predictions(model_dir: Path, profile, runs, dtype: str,
                 layout: dict[str, object]) -> list[dict[str, float] | None]:
    """Each run's predicted seconds on ``profile``: every stage of ``STAGES`` (0 for a stage
    the request does not run: selection unpruned or by a method that reads no attention
    map, decode of one new token), TTFT and total (None for a method whose selection cost
    is not modelled: cls, prumerge+),
    for the checkpoint's config, the run's kept visual tokens, the measured text tokens and
    new tokens. ``layout``: the image's (video's) ``estimate`` keywords (``layout_options``). Refused
    when the cost model lays the image out in another number of visual tokens than the model
    made. Tower and projector at the model's dtype too (the estimate's default for them is
    16-bit: a float32 tower predicted at the bfloat16 peak came out 3.6x fast)."""
    from fpcost.api import estimate, resolve_model
    from fpcost.costmodel.pipeline import workload_layout
    from fpcost.costmodel.quant import QuantPlan
    from fpcost.pruner.timing import DTYPE_BITS

    quant = QuantPlan.uniform(DTYPE_BITS[dtype])
    unpruned = runs[0]
    text_tokens = unpruned.num_prompt_tokens - unpruned.num_visual_tokens
    workload = estimate(model=str(model_dir), hardware=profile, quant=quant,
                        text_tokens=text_tokens, **layout).workload
    modelled = workload.num_visual_tokens
    # a layout may also cost the tokens its projector can see (Video-LLaVA: the paper's
    # 8 x 256 by default, transformers' port feeds 8 x 257 with each frame's CLS)
    projected = workload_layout(resolve_model(str(model_dir)), workload).num_projected_tokens
    if unpruned.num_visual_tokens not in (modelled, projected):
        kind = "video" if "frames" in layout else "image"
        raise WorkloadError(f"--model {model_dir}: the cost model lays this {kind} out in "
                            f"{modelled} visual tokens, the model made "
                            f"{unpruned.num_visual_tokens}; no prediction")
    predicted: list[dict[str, float] | None] = []
    for run in runs:
        if run.method in UNMODELLED_METHODS:  # its selection's cost is not modelled
            predicted.append(None)
            continue
        # freePruner's selection as the pruner ran it (default layers, anchored to the layer
        # the LLM reads); random / uniform / keep-all read no attention map: no selection
        selection = DEFAULT_SELECTION if run.method == "freepruner" else None
        est = estimate(model=str(model_dir), hardware=profile, quant=quant, vision_quant=quant,
                       visual_tokens=run.num_kept, text_tokens=text_tokens,
                       output_tokens=run.num_new_tokens, selection=selection, **layout)
        stages = {stage: est.stage_totals(stage).time_s if stage in est.stages else 0.0
                  for stage in STAGES}
        predicted.append({**stages, "ttft": est.ttft_s, "total": est.end_to_end().time_s})
    return predicted


def _run_row(run, predicted: dict[str, float] | None, base, base_predicted) -> dict:
    """One run's JSON / CSV row: the keys scripts read since the first release, then
    ``<stage>_s`` measured and ``predicted_<stage>_s`` for every stage."""
    row = {
        "label": run.label, "method": run.method, "ratio": run.ratio, "answer": run.answer,
        "num_visual_tokens": run.num_visual_tokens, "num_kept": run.num_kept,
        "num_prompt_tokens": run.num_prompt_tokens, "num_new_tokens": run.num_new_tokens,
        "ttft_s": run.ttft_s, "decode_s": run.decode_s, "total_s": run.total_s,
        "measured_speedup": base.total_s / run.total_s,
        "measured_ttft_speedup": base.ttft_s / run.ttft_s,
        "predicted_total_s": None, "predicted_ttft_s": None,
        "predicted_speedup": None, "predicted_ttft_speedup": None,
    }
    for stage in STAGES:
        row[f"{stage}_s"] = run.stage_s[stage]
        row[f"predicted_{stage}_s"] = None if predicted is None else predicted[stage]
    row["other_s"] = run.stage_s["other"]
    if predicted is not None:
        row["predicted_total_s"], row["predicted_ttft_s"] = predicted["total"], predicted["ttft"]
        row["predicted_speedup"] = base_predicted["total"] / predicted["total"]
        row["predicted_ttft_speedup"] = base_predicted["ttft"] / predicted["ttft"]
    return row


def _stage_rows(rows: list[dict]) -> list[dict]:
    """The stage table's rows: per run, the measured times, then the predicted ones."""
    out = []
    for row in rows:
        measured = {stage: row[f"{stage}_s"] for stage in STAGES}
        predicted = {stage: row[f"predicted_{stage}_s"] for stage in STAGES}
        out.append({"label": row["label"], "kind": "measured", **measured,
                    "other": row["other_s"], "ttft": row["ttft_s"], "total": row["total_s"]})
        out.append({"label": "", "kind": "predicted", **predicted, "other": None,
                    "ttft": row["predicted_ttft_s"], "total": row["predicted_total_s"]})
    return out


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--model", "model_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="A save_pretrained directory (model and processor) of LLaVA, LLaVA-NeXT, "
                   "Video-LLaVA, LLaVA-OneVision, Qwen2-VL or Qwen2.5-VL.")
@click.option("--prompt", required=True,
              help="The question; the image placeholder ('<image>'; Qwen: "
                   "'<|vision_start|><|image_pad|><|vision_end|>') is prepended if absent.")
@click.option("--video", is_flag=True,
              help="IMAGE is a video: an animated GIF / WebP / PNG, or a directory of frame "
                   "images taken in name order (Video-LLaVA, Qwen2-VL, Qwen2.5-VL, "
                   "LLaVA-OneVision); the placeholder is the model's video token.")
@click.option("--frames", "num_frames", type=FRAMES,
              help="Frames sampled uniformly from the --video.  [default: the checkpoint's "
                   "video_preprocessor_config.json num_frames, else 8]")
@click.option("--method", type=click.Choice(METHOD_NAMES), default="freepruner", show_default=True,
              help="Pruning method of the pruned run(s).")
@click.option("--ratio", "ratios", type=float, multiple=True, callback=_check_ratio,
              help="Fraction of visual tokens to keep, in (0, 1]; repeat for several pruned "
                   "runs.  [default: the method's own (freepruner: adaptive)]")
@click.option("--max-new-tokens", type=NEW_TOKENS, default=16, show_default=True,
              help="New tokens per run (greedy).")
@click.option("--repeats", type=REPEATS, default=3, show_default=True,
              help="Timed rounds (after one warm-up); runs are interleaved, medians shown.")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A hardware profile of this device (fpcost calibrate --output FILE) for "
                   "the predicted stages and speedups; without it nothing is predicted.")
@format_option
def generate(image, model_dir, prompt, video, num_frames, method, ratios, max_new_tokens, repeats,
             profile_path, output_format):
    """Generate an answer for IMAGE (or a video, --video) and --prompt with every visual
    token and pruned, and compare the measured speedup with fpcost's prediction for this
    device."""
    from fpcost.extras import require_extra

    require_extra("torch", "fpcost generate")
    if not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
        raise WorkloadError(f"--prompt must be non-empty text of at most {MAX_PROMPT_CHARS:,} "
                            "characters")
    if method == "keep-all" and ratios:
        raise WorkloadError("--ratio does not apply to --method keep-all (it keeps every token)")
    if profile_path is not None and not profile_path.is_file():
        raise WorkloadError(f"--profile {profile_path}: no such file")
    if num_frames is not None and not video:
        raise WorkloadError(f"--frames {num_frames} applies to --video only")
    if image.is_dir() and not video:
        raise WorkloadError(f"IMAGE {image} is a directory; give --video for a directory of "
                            "frame images")
    from fpcost.pruner.generate import layout_options, load_checkpoint, run_generate
    from fpcost.pruner.inputs import open_image
    from fpcost.pruner.video_frames import read_video
    from fpcost.pruner.video_inputs import default_num_frames, read_video_config

    profile = dev = None
    if profile_path is not None:  # checked before the (long) runs
        profile, dev = _profile_of_this_device(profile_path)
    if video:  # frames read (and refused) before the model loads
        frames = num_frames or default_num_frames(read_video_config(model_dir))
        picture = read_video(image, frames)
    else:
        picture = open_image(image).convert("RGB")
    checkpoint = load_checkpoint(model_dir)
    layout = layout_options(checkpoint, picture)
    if profile is not None:  # a layout the cost model refuses (frames) is refused before the runs
        from fpcost.api import estimate

        estimate(model=str(model_dir), hardware=profile, **layout)
    runs = run_generate(checkpoint, picture, prompt, method, ratios, max_new_tokens, repeats)
    dtype = str(next(checkpoint.model.parameters()).dtype).removeprefix("torch.")
    predicted, about = (None, {})
    if profile is not None:
        predicted = _predictions(model_dir, profile, runs, dtype, layout)
        about = {"profile": profile.name, "device": dev.name, "threads": dev.num_threads}
    base_predicted = None if predicted is None else predicted[0]
    rows = [_run_row(run, None if predicted is None else predicted[i], runs[0], base_predicted)
            for i, run in enumerate(runs)]
    payload = {"model": str(model_dir), "model_type": checkpoint.model_type, "dtype": dtype,
               "max_new_tokens": max_new_tokens, "repeats": repeats,
               "timing": "median of interleaved rounds; TTFT = generate(max_new_tokens=1); "
                         "stages: vision = tower pass - selection, selection = the pruner's "
                         "selection_time_s, projector, prefill = the TTFT run's LLM, "
                         "decode = the total run's LLM - the TTFT run's LLM, "
                         "other = the rest of the total run",
               "prediction": about or None, "runs": rows}
    if output_format == "json":
        emit_json(payload)
        return
    if output_format == "csv":
        emit_csv(rows)
        return
    caption = ("speedups are unpruned / run (TTFT, total); TTFT includes vision, selection, "
               "projector and prefill. ")
    caption += (f"predicted on profile {about['profile']!r} ({about['device']})" if about
                else "predicted: none (give --profile, a profile of this device)")
    if about and any(run.method in UNMODELLED_METHODS for run in runs):
        caption += f"; no prediction for {', '.join(UNMODELLED_METHODS)}: selection cost not modelled"
    render_table(rows, COLUMNS, title=f"{checkpoint.model_type} ({dtype})", caption=caption)
    render_table(_stage_rows(rows), STAGE_COLUMNS, title="stages (ms), measured and predicted",
                 caption="medians over the rounds, each stage apart; other: the run's time "
                         "outside the stages (not predicted)")
    for row in rows:
        stdout_console.print(f"{row['label']}: {row['answer']!r}")

"""``fpcost validate --images`` and ``--tokens-from``: the images pruned first, their kept
counts' prefill rows, and the whole pruned request per image, measured and predicted (the
JSON ``pipeline`` section and its table)."""

from __future__ import annotations

from pathlib import Path

from fpcost.costmodel.errors import ConfigError
from fpcost.costmodel.units import MILLI

from .calibrate import progress_bar
from .render import Column, render_table

SIDE_BY_SIDE_MODEL = "llava-1.5-7b"  # predicted beside the measured loop, for scale
SIDE_BY_SIDE_HARDWARE = "a6000"
SIDE_BY_SIDE_ACCOUNTING = "fpcost"

ms = lambda v: "—" if v is None else f"{v / MILLI:.1f}"  # noqa: E731
x2 = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
PIPELINE_COLUMNS = (
    Column("image", "Image", justify="left"),
    Column("num_kept", "Kept"),
    Column("measured_pruned_s", "Pruned\nmeas. (ms)", ms),
    Column("predicted_pruned_s", "Pruned\npred. (ms)", ms),
    Column("measured_unpruned_s", "Unpruned\nmeas. (ms)", ms),
    Column("predicted_unpruned_s", "Unpruned\npred. (ms)", ms),
    Column("measured_speedup", "Speedup\nmeas.", x2),
    Column("predicted_speedup", "Speedup\npred.", x2),
)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def prune_directory(directory: Path, encoder_name: str):
    """freePruner (its defaults) on every image of ``directory``: (rows as
    ``read_tokens_file`` returns them (image, num_kept, num_tokens), the image paths, and
    the loaded encoder and pruner)."""
    from fpcost.pruner.encoders import load_encoder
    from fpcost.pruner.methods import get_pruner
    from fpcost.pruner.run import prune_image

    if not directory.is_dir():
        raise ConfigError(f"--images {str(directory)!r} is not a directory")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ConfigError(f"--images {str(directory)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    pruner = get_pruner("freepruner")
    encoder = load_encoder(encoder_name)
    rows = []
    with progress_bar(len(paths), f"pruning with {encoder_name}") as step:
        for path in paths:
            result, _ = prune_image(encoder, pruner, path)
            rows.append({"image": path.name, "num_kept": result.num_kept, "num_tokens": result.num_tokens})
            step(path.name)
    return rows, paths, (encoder, pruner)


def image_rows(images, text_tokens, rows) -> list[dict]:
    """Per image: kept → predicted and measured prefill time and speedup against the
    unpruned input here, and LLaVA-1.5-7B on the A6000 side by side (predicted only)."""
    from fpcost.costmodel.estimate import estimate
    from fpcost.costmodel.presets import get_preset
    from fpcost.costmodel.quant import QuantPlan
    from fpcost.costmodel.workload import Workload
    from fpcost.hardware_profiles import load_profile

    by_count = {row["num_tokens"]: row for row in rows}
    side_model = get_preset(SIDE_BY_SIDE_MODEL)
    side_hw = load_profile(SIDE_BY_SIDE_HARDWARE)

    def side_time_s(visual: int) -> float:
        result = estimate(side_model, Workload(visual, text_tokens), side_hw, QuantPlan(),
                          SIDE_BY_SIDE_ACCOUNTING, True, stages=("prefill",))
        return result.stage_totals("prefill").time_s

    out = []
    for entry in images:
        kept = by_count[entry["num_kept"] + text_tokens]
        full = by_count[entry["num_tokens"] + text_tokens]
        side_kept, side_full = side_time_s(entry["num_kept"]), side_time_s(entry["num_tokens"])
        out.append({
            "image": entry["image"], "num_tokens": entry["num_tokens"], "num_kept": entry["num_kept"],
            "llm_tokens": entry["num_kept"] + text_tokens,
            "predicted_s": kept["predicted_s"], "measured_s": kept["measured_s"],
            "predicted_speedup": full["predicted_s"] / kept["predicted_s"],
            "measured_speedup": full["measured_s"] / kept["measured_s"],
            "a6000_predicted_s": side_kept, "a6000_predicted_speedup": side_full / side_kept,
        })
    return out


def pipeline_section(loaded, paths, llm, dtype, device, profile, text_tokens, warmup, repeats,
                     statistic, max_spread, retries) -> dict:
    """Time every image's request pruned and unpruned and predict both (see
    ``fpcost.pruner.request`` and ``fpcost.costmodel.validation_pipeline``)."""
    from fpcost.costmodel.quant import QuantPlan
    from fpcost.costmodel.validation_pipeline import (
        break_even_keep_ratio,
        pipeline_report,
        predicted_request_s,
    )
    from fpcost.pruner.request import measure_requests, request_model_spec
    from fpcost.pruner.timing import DTYPE_BITS

    encoder, pruner = loaded
    with progress_bar(repeats, f"timing {len(paths)} whole requests") as step:
        timings = measure_requests(encoder, pruner, paths, llm, dtype, device, text_tokens,
                                   warmup, repeats, step, max_spread=max_spread, retries=retries)
    model = request_model_spec(encoder, llm)
    quant = QuantPlan.uniform(DTYPE_BITS[dtype])
    vision_quant = QuantPlan.uniform(32)  # the encoder and projector run in float32 here
    unpruned_pred = predicted_request_s(model, model.default_num_visual_tokens, text_tokens,
                                        profile, quant, vision_quant)
    rows = []
    for t in timings:
        pruned_pred = predicted_request_s(model, t.num_kept, text_tokens, profile, quant,
                                          vision_quant)
        rows.append({
            "image": t.image, "num_tokens": t.num_tokens, "num_kept": t.num_kept,
            "measured_pruned_s": t.total_s("pruned", statistic),
            "measured_unpruned_s": t.total_s("unpruned", statistic),
            "predicted_pruned_s": sum(pruned_pred.values()),
            "predicted_unpruned_s": sum(unpruned_pred.values()),
            "measured_stages_s": {"pruned": t.stages_s("pruned", statistic),
                                  "unpruned": t.stages_s("unpruned", statistic)},
            "predicted_stages_s": {"pruned": pruned_pred, "unpruned": unpruned_pred},
            "dispersion": {"pruned": t.dispersion("pruned").as_dict(),
                           "unpruned": t.dispersion("unpruned").as_dict()},
        })
    report = pipeline_report(rows, break_even_keep_ratio(model, text_tokens, profile, quant,
                                                         vision_quant))
    report["settings"] = {
        "encoder": encoder.name, "projector": "mlp2x_gelu (random weights)",
        "llm": llm.name, "text_tokens": text_tokens, "repeats": repeats,
        "statistic": statistic, "timed": "encoder forward (+ freePruner selection when "
        "pruned), projector on the kept tokens, LLM prefill; preprocessing excluded",
    }
    return report


def render_pipeline(pipeline: dict) -> None:
    summary = pipeline["summary"]
    err = summary["speedup"]["median_abs_rel_error"]
    be = summary["break_even_keep_ratio"]
    render_table(pipeline["images"], PIPELINE_COLUMNS,
                 title="Whole request per image: encoder + selection + projector + prefill",
                 caption=f"End-to-end speedup median |err| {100 * err:.1f}%; predicted break-even "
                         f"keep ratio {'none' if be is None else f'{be:.2f}'} (pruning pays below it).")

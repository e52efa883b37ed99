"""``fpcost estimate --tokens-from FILE``: one estimate per image (per video for a video model)
of a ``fpcost prune --output`` results file.

Before any number is printed the file is checked against the model:

- token geometry: every image must have as many patch tokens as the model's LLM receives per
  image (LLaVA-1.5: 576 at 336 px), per frame (Video-LLaVA: 256 at 224 px; each run of 8
  images is one video's frames) or per whole AnyRes image (LLaVA-NeXT: the packed count for
  ``--image-size``); a file made on another grid is refused, naming both counts;
- counts: ``num_kept`` in 1..``num_tokens``, integers (``fpcost.pruner.results``);
- selection: the stage is costed with the file's own settings (``costmodel.pruning.
  selection_from_file``): freePruner's recorded ``settings`` or its ``params``; nothing for
  methods that read no attention map (random, uniform, keep-all); left out, and said so, for
  methods whose selection cost is not modelled (cls, prumerge+).
"""

from __future__ import annotations

import json

from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.pipeline import PRE_DECODE_STAGES, family_of, visual_layout
from fpcost.costmodel.pruning import FileSelection, selection_from_file
from fpcost.costmodel.units import GIGA, MILLI, TERA
from fpcost.costmodel.workload import Workload

from .render import Column, emit_csv, emit_json, render_table, scaled

CSV_KEYS = ("image", "num_visual_tokens", "baseline_num_visual_tokens", "flops", "time_s",
            "memory_access_bytes", "speedup_key_stage", "ttft_s", "speedup_ttft", "tpot_s",
            "end_to_end_time_s", "speedup_end_to_end")


def check_geometry(model, document, image_size) -> int:
    """The patch tokens per image the model's LLM receives (per frame for video, per whole
    AnyRes image for LLaVA-NeXT); a ``WorkloadError`` naming both counts when an image of the
    file has another count."""
    family = family_of(model)
    if not family.has_vision:
        raise WorkloadError(f"--tokens-from: {model.name!r} is a text-only LLM; a results file's "
                            "visual tokens need a LLaVA-family model (--model)")
    layout = visual_layout(model, image_size)
    expected = layout.num_visual_tokens // model.num_frames
    unit = family.tokens_unit(model, layout)
    grid = (f" ({document.image_size} px / {document.patch_size} px patches)"
            if document.image_size and document.patch_size else "")
    for i, row in enumerate(document.images):
        if row["num_tokens"] != expected:
            raise WorkloadError(
                f"--tokens-from {document.path}: image {row['image']!r} (images[{i}]) has "
                f"{row['num_tokens']} patch tokens{grid}, but {model.name} receives {expected} "
                f"visual tokens {unit}; prune with that model's token grid")
    if len(document.images) % model.num_frames:
        raise WorkloadError(
            f"--tokens-from {document.path}: {len(document.images)} images, but {model.name} "
            f"costs {model.num_frames} frames per video: give a multiple of {model.num_frames} "
            f"(each run of {model.num_frames} images is one video's frames)")
    return expected


def sized_rows(model, document, image_size) -> bool:
    """True for a file whose rows record each image's size (dynamic resolution: fpcost prune on
    a Qwen2-VL / Qwen2.5-VL checkpoint), after checking each row's token count against what
    ``model`` makes of that size within the file's min/max pixels; False for a fixed grid."""
    rows = document.images
    if not any("image_size" in row for row in rows):
        return False
    family = family_of(model)
    if not getattr(family, "uses_pixel_limits", False) or model.num_frames != 1:
        raise WorkloadError(
            f"--tokens-from {document.path} records each image's size (dynamic resolution, "
            f"merged tokens): cost it with a Qwen2-VL / Qwen2.5-VL model, not {model.name}")
    if image_size is not None:
        raise WorkloadError(f"--image-size: {document.path} records each image's own size; "
                            "leave --image-size out")
    limits = (document.min_pixels, document.max_pixels)
    for i, row in enumerate(rows):
        if "image_size" not in row:
            raise WorkloadError(f"--tokens-from {document.path}: images[{i}] records no "
                                "image_size, unlike the others")
        width, height = row["image_size"]
        expected = visual_layout(model, (width, height), limits).num_visual_tokens
        if row["num_tokens"] != expected:
            raise WorkloadError(
                f"--tokens-from {document.path}: image {row['image']!r} (images[{i}], "
                f"{width}x{height} px) has {row['num_tokens']} merged tokens, but {model.name} "
                f"makes {expected} of that size (min/max pixels {limits[0]}/{limits[1]}); "
                "prune with that model's tower and pixel limits")
    return True


def _selection(model, document, rows, num_tokens, cache):
    """The file's selection for a sample (its first row's own settings, else the file's)."""
    settings = rows[0].get("settings", document.settings)
    family = family_of(model)
    if not family.costs_selection:  # a family whose selection stage is not modelled
        return FileSelection(None, f"{document.method or 'freepruner'}: "
                                   f"{family.selection_note(model)}")
    key = json.dumps(settings, sort_keys=True, default=str)
    if key not in cache:
        cache[key] = selection_from_file(document.method, document.params, settings,
                                         family.tower_depth(model), num_tokens,
                                         where=f"--tokens-from {document.path}",
                                         windowed_layers=family.windowed_layers(model))
    return cache[key]


def _ratio(base: float, value: float) -> float | None:
    return base / value if value > 0 and base > 0 else None


def _measures(result, key: str) -> dict:
    """The key stage's totals (zero when the request does not run it) and the latencies."""
    totals = result.stage_totals(key).as_dict() if key in result.stages else None
    return {
        "flops": totals["flops"] if totals else 0.0,
        "time_s": totals["time_s"] if totals else 0.0,
        "memory_access_bytes": totals["memory_access_bytes"] if totals else 0.0,
        "ttft_s": result.ttft_s,
        "tpot_s": result.tpot_s,
        "end_to_end_time_s": result.end_to_end().time_s,
    }


def estimate_per_image(model, document, text_tokens, batch, output_tokens, image_size, run,
                       stage, output_format) -> None:
    """One row per image (per video), a mean row, and a settings footer. A file recording
    each image's size (``sized_rows``) gets one baseline per image: that size unpruned."""
    sized = sized_rows(model, document, image_size)
    per_image = None if sized else check_geometry(model, document, image_size)
    frames = model.num_frames
    key = "prefill" if stage == "all" else stage
    if key not in PRE_DECODE_STAGES + ("decode",):
        raise WorkloadError(f"--stage {stage!r} is unknown")
    limits = (document.min_pixels, document.max_pixels) if sized else (None, None)
    baselines: dict = {}

    def baseline_for(size):
        """The unpruned request of an image of ``size`` (cached per size)."""
        if size not in baselines:
            tokens = visual_layout(model, size, limits).num_visual_tokens
            baselines[size] = run(Workload(tokens, text_tokens, batch, output_tokens, size,
                                           min_pixels=limits[0], max_pixels=limits[1]),
                                  None, None)
        return baselines[size]

    baseline = baseline_for(document.images[0]["image_size"] if sized else image_size)
    unpruned = baseline.workload.num_visual_tokens
    cache: dict = {}
    rows, selections, bases = [], [], []
    for start in range(0, len(document.images), frames):
        group = document.images[start:start + frames]
        kept = [r["num_kept"] for r in group]
        size = group[0]["image_size"] if sized else image_size
        chosen = _selection(model, document, group, group[0]["num_tokens"] if sized else per_image,
                            cache)
        selections.append(chosen.description)
        workload = Workload(sum(kept), text_tokens, batch, output_tokens, size,
                            tuple(kept) if frames > 1 else None, min_pixels=limits[0],
                            max_pixels=limits[1])
        bases.append(_measures(baseline_for(size), key))
        result = run(workload, chosen.spec, None)
        label = group[0]["image"] if frames == 1 else f"{group[0]['image']} .. {group[-1]['image']}"
        rows.append({"image": label, "num_visual_tokens": sum(kept),
                     "baseline_num_visual_tokens": baseline_for(size).workload.num_visual_tokens,
                     "frame_tokens": kept if frames > 1 else None,
                     "stages": {s: t.as_dict() for s, t in result.totals().items()},
                     "selection": chosen.description, **_measures(result, key)})
    mean = {"image": "mean", "num_visual_tokens": sum(r["num_visual_tokens"] for r in rows) / len(rows)}
    for name in ("flops", "time_s", "memory_access_bytes", "ttft_s", "end_to_end_time_s"):
        mean[name] = sum(r[name] for r in rows) / len(rows)
    tpots = [r["tpot_s"] for r in rows]
    mean["tpot_s"] = None if None in tpots else sum(tpots) / len(tpots)
    mean["baseline_num_visual_tokens"] = (
        sum(r["baseline_num_visual_tokens"] for r in rows) / len(rows))
    # each row's speedups over its own baseline; the mean row's: the mean baseline time over
    # the mean time (one baseline for a fixed grid)
    base_mean = {name: sum(b[name] for b in bases) / len(bases)
                 for name in ("time_s", "ttft_s", "end_to_end_time_s")} if sized else bases[0]
    for row, base in [*zip(rows, bases, strict=True), (mean, base_mean)]:
        row["speedup_key_stage"] = _ratio(base["time_s"], row["time_s"]) if key in baseline.stages else None
        row["speedup_ttft"] = _ratio(base["ttft_s"], row["ttft_s"])
        row["speedup_end_to_end"] = _ratio(base["end_to_end_time_s"], row["end_to_end_time_s"])
    if sized:  # one baseline per image: its own size, unpruned
        unpruned = [r["baseline_num_visual_tokens"] for r in rows]
    settings = _settings(baseline, document, text_tokens, batch, output_tokens, key, unpruned,
                         sorted(set(selections)))

    def described(result) -> dict:
        return {"num_visual_tokens": result.workload.num_visual_tokens,
                "stages": {s: t.as_dict() for s, t in result.totals().items()},
                "end_to_end": result.end_to_end().as_dict(),
                "ttft_s": result.ttft_s, "tpot_s": result.tpot_s}

    if output_format == "json":
        emit_json({"model": model.name, "settings": settings,
                   "baseline": ([{"image": r["image"], **described(baseline_for(g["image_size"]))}
                                 for r, g in zip(rows, document.images, strict=True)]
                                if sized else described(baseline)),
                   "key_stage": key, "images": rows, "mean": mean})
    elif output_format == "csv":
        emit_csv([*rows, mean], CSV_KEYS)
    else:
        shown = "each image's own size" if sized else f"{unpruned} visual tokens"
        _render(rows, mean, key, model, shown, settings)


def _settings(baseline, document, text_tokens, batch, output_tokens, key, unpruned, selections):
    w = baseline.workload
    return {
        "model": baseline.model.name, "hardware": baseline.hardware.name,
        "quant": baseline.quant.label, "vision_quant": baseline.vision_quant.label,
        "accounting": baseline.accounting.name, "flash_attention": baseline.flash_attention,
        "num_text_tokens": text_tokens, "batch_size": batch, "num_output_tokens": output_tokens,
        "num_decode_steps": w.num_decode_steps, "key_stage": key,
        "file": document.path, "method": document.method or "freepruner",
        "encoder": document.encoder, "file_image_size": document.image_size,
        "file_patch_size": document.patch_size, "selection": selections,
        "baseline_num_visual_tokens": unpruned,
    }


def _speedup(value) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _render(rows, mean, key, model, unpruned, s) -> None:
    name = key.capitalize()
    footer = (
        f"{s['model']} on {s['hardware']}, LLM {s['quant']}, vision {s['vision_quant']}, "
        f"accounting {s['accounting']}, FlashAttention {'on' if s['flash_attention'] else 'off'}; "
        f"{s['num_text_tokens']} text tokens, batch {s['batch_size']}, {s['num_output_tokens']} "
        f"output tokens ({s['num_decode_steps']} decode step"
        f"{'' if s['num_decode_steps'] == 1 else 's'}).\n"
        f"file {s['file']}: {s['method']}, encoder {s['encoder'] or '?'}"
        + (f", {s['file_image_size']} px / {s['file_patch_size']} px patches"
           if s["file_image_size"] and s["file_patch_size"] else "")
        + f".\nselection: {'; '.join(s['selection'])}.\n"
        f"Speedups: baseline ({unpruned}, no pruning) / this row; the mean row "
        "averages each column and divides the baseline by the mean time. TTFT and end-to-end "
        "cover every stage of the request. GB = 1e9 B; TFLOPs = 1e12 FLOPs."
    )
    columns = (
        Column("image", "Image" if model.num_frames == 1 else "Video (frames)", justify="left"),
        Column("num_visual_tokens", "Visual tokens",
               lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)),
        Column("flops", f"{name} TFLOPs", scaled(TERA, 2)),
        Column("time_s", f"{name} time (ms)", scaled(MILLI, 2)),
        Column("memory_access_bytes", "Memory access (GB)", scaled(GIGA, 2)),
        Column("speedup_key_stage", f"{name} speedup", _speedup),
        Column("ttft_s", "TTFT (ms)", scaled(MILLI, 2)),
        Column("speedup_ttft", "TTFT speedup", _speedup),
        Column("end_to_end_time_s", "End-to-end (ms)", scaled(MILLI, 2)),
        Column("speedup_end_to_end", "E2E speedup", _speedup),
    )
    render_table([*rows, mean], columns,
                 title=f"fpcost estimate per {'image' if model.num_frames == 1 else 'video'} "
                       f"({model.name}, baseline {unpruned})",
                 caption=footer)

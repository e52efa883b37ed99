"""``fpcost prune IMAGE --model DIR`` on a Qwen2-VL / Qwen2.5-VL checkpoint: its vision tower,
dynamic resolution, selection over merged tokens (``fpcost.pruner.qwen_vision``).

Rows as for the other encoders, with ``num_tokens`` = the image's merged tokens (t·h·w/4,
what the LLM receives) and ``kept_indices`` indexing them in the processor's order (merged
raster order); ``grid`` = merged rows, columns; ``grid_thw`` = transformers' patch grid row;
``image_size`` = the file's width, height (what ``fpcost estimate --tokens-from`` resizes
again to check the count); ``resized_size`` = the processor's width, height.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from fpcost.cli.render import emit_csv, emit_json, render_table, stderr_console


def prune_qwen(images, model_path: str, method: str, pruner, params: dict, min_pixels,
               max_pixels, overlays: list[Path] | None, output_file, output_format) -> None:
    """Select merged tokens of every image; print the rows; write the results file."""
    import torch

    from fpcost.cli.prune import COLUMNS, CSV_KEYS
    from fpcost.files import write_output
    from fpcost.pruner.errors import PruningError
    from fpcost.pruner.inputs import check_against_encoder, open_image
    from fpcost.pruner.overlay import draw_overlay
    from fpcost.pruner.qwen_encoder import load_qwen_tower
    from fpcost.pruner.qwen_vision import check_method, select_merged
    from fpcost.pruner.results import ImageResult, results_document, write_json_atomic

    check_method(pruner)  # before the weights load
    tower = load_qwen_tower(model_path, min_pixels, max_pixels)
    check_against_encoder(pruner, tower.num_layers, None, tower.name)
    results, failures = [], []
    for i, path in enumerate(images):
        try:
            image = open_image(path)  # PruningError naming the file: unreadable, bomb, NaN
            pixels, grid_thw, resized = tower.preprocess(image, str(path))
            with torch.no_grad():
                start = time.perf_counter()
                tower.model(pixels, grid_thw=grid_thw)
                encoder_time_s = time.perf_counter() - start
            chosen = select_merged(pruner, tower.model, pixels, grid_thw)
            t, h, w = (int(v) for v in grid_thw[0])
            rows, cols = h // tower.merge_size, w // tower.merge_size
            raw = chosen.selection

            def first(values) -> list[int]:
                return values[0].tolist() if values else []

            kept = chosen.kept[0].tolist()
            result = ImageResult(
                image=str(path), num_tokens=chosen.num_merged[0], kept_indices=kept,
                pivotal_indices=first(raw.pivotal) if raw else kept,
                complementary_indices=first(raw.complementary) if raw else [],
                filled_indices=first(raw.filled) if raw else [],
                selection_time_s=chosen.selection_time_s, grid=(t * rows, cols),
                encoder_time_s=encoder_time_s, settings=raw.settings if raw else None,
                extra={"grid_thw": [t, h, w], "image_size": list(image.size),
                       "resized_size": list(resized.size)})
            if overlays is not None:
                # an image is one temporal slice (t = 1): merged cells of 28 px
                picture = draw_overlay(resized, (rows, cols), tower.token_size,
                                       result.pivotal_indices, result.complementary_indices,
                                       result.filled_indices)
                png = io.BytesIO()
                picture.save(png, format="PNG", optimize=True)
                write_output(overlays[i], png.getvalue(), what="overlay")
            results.append(result)
        except PruningError as exc:
            failures.append(str(path))
            stderr_console.print(f"skipped {path}: {exc}", markup=False, highlight=False,
                                 soft_wrap=True)

    rows_out = [r.to_dict() for r in results]
    if output_format == "json":
        emit_json(rows_out)
    elif output_format == "csv":
        emit_csv(rows_out, CSV_KEYS)
    elif rows_out:
        title = (f"{method} on {tower.name} (Qwen-VL tower, merged 2x2 tokens of "
                 f"{tower.token_size} px, {tower.min_pixels}..{tower.max_pixels} px²)")
        render_table(rows_out, COLUMNS, title=title)
    if failures:
        note = f"; results file {output_file} not written" if output_file is not None else ""
        raise PruningError(f"{len(failures)} of {len(images)} images failed: "
                           f"{', '.join(failures)}{note}")
    if output_file is not None:
        document = results_document(results, tower.name, method, params, None, tower.token_size,
                                    shared_settings=False)
        document.update(token_unit="merged", merge_size=tower.merge_size,
                        min_pixels=tower.min_pixels, max_pixels=tower.max_pixels)
        write_json_atomic(output_file, document)

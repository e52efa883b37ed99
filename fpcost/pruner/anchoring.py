"""freePruner's default layers, placed relative to the layer a multimodal model reads.

``FreePrunerConfig``'s layer defaults (pivotal layers -4, -3; complementary -2) are written
for LLaVA-1.5, whose LLM reads ``vision_feature_layer`` -2: hidden state -2 of CLIP-L's 24
layers, the output of encoder layer -2 (22), the paper's "penultimate layer". A checkpoint
that reads another hidden state keeps that relation: the complementary layer is the encoder
layer whose output the LLM reads, and the pivotal layers the two before it.

LLaVA-OneVision's released checkpoints drop SigLIP-so400m's last layer (26 of 27 run) and
read hidden state -1, the output of layer 25 (the original tower's penultimate, which is what
the model was trained on): pivotal layers 23, 24 (-3, -2), complementary 25 (-1). Unanchored,
the defaults would take 22, 23 / 24, one layer before the features the LLM receives.
LLaVA, LLaVA-NeXT and Video-LLaVA (-2 of 24) get the defaults unchanged.
"""

from __future__ import annotations

from fpcost.pruner.selection import FreePrunerConfig

LAYER_FIELDS = ("pivotal_start_layer", "pivotal_end_layer", "complementary_layer")
REFERENCE_FEATURE_LAYER = -2  # the hidden state LLaVA-1.5 reads, to which the defaults refer


def anchored_layers(num_layers: int, feature_layer: object) -> dict[str, int]:
    """The freePruner layer settings (``LAYER_FIELDS``) that differ from the defaults for an
    encoder of ``num_layers`` layers whose hidden state ``feature_layer`` the LLM reads
    (``hidden_states`` holds the embeddings and then every layer's output). Empty when the
    defaults already fit, or when ``feature_layer`` is not one integer layer that leaves two
    layers before it."""
    if isinstance(feature_layer, bool) or not isinstance(feature_layer, int):
        return {}
    if not -(num_layers + 1) <= feature_layer <= num_layers:
        return {}
    producing = feature_layer % (num_layers + 1) - 1  # encoder layer whose output is read
    if producing < 2:
        return {}
    shift = producing - REFERENCE_FEATURE_LAYER % (num_layers + 1) + 1
    if shift == 0:
        return {}
    defaults = FreePrunerConfig()
    return {
        "pivotal_start_layer": max(defaults.pivotal_start_layer + shift, -num_layers),
        "pivotal_end_layer": defaults.pivotal_end_layer + shift,
        "complementary_layer": defaults.complementary_layer + shift,
    }


def model_anchored_layers(config: object) -> dict[str, int]:
    """``anchored_layers`` for a transformers multimodal config (``vision_config`` and
    ``vision_feature_layer``); empty for configs without them."""
    vision = getattr(config, "vision_config", None)
    num_layers = getattr(vision, "num_hidden_layers", None)
    if not isinstance(num_layers, int):
        return {}
    return anchored_layers(num_layers, getattr(config, "vision_feature_layer", None))

"""Built-in Qwen-VL models as the config.json dicts their checkpoints publish (the sizes
only; token ids, rope and dtype fields left out), read by ``qwen_vl_spec_from_config``.

Sources (Hugging Face ``config.json`` of each instruct checkpoint; the released files are
flat: the Qwen2 text fields at the top level, the tower in ``vision_config``):
Qwen/Qwen2-VL-2B-Instruct, Qwen/Qwen2-VL-7B-Instruct, Qwen/Qwen2.5-VL-3B-Instruct,
Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen2.5-VL-72B-Instruct. Their shared values (ViT 1280
wide, 32 blocks, 16 heads, 14-px patches, 2×2 merge, Qwen2.5-VL's 3420-wide SwiGLU, 112-px
windows, full attention at blocks 7, 15, 23, 31) are also transformers' config defaults.
"""

from __future__ import annotations

from ..errors import ConfigError
from .qwen_vl_spec import QwenVLSpec, qwen_vl_spec_from_config

_QWEN2_VL_TOWER = {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                   "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
_QWEN2_5_VL_TOWER = {"depth": 32, "hidden_act": "silu", "hidden_size": 1280,
                     "intermediate_size": 3420, "num_heads": 16, "in_chans": 3, "patch_size": 14,
                     "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                     "fullatt_block_indexes": [7, 15, 23, 31]}


def _qwen2_vl(hidden, layers, heads, kv_heads, ffn, vocab, tie) -> dict:
    return {"model_type": "qwen2_vl", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "intermediate_size": ffn, "vocab_size": vocab, "tie_word_embeddings": tie,
            "use_sliding_window": False,
            "vision_config": {**_QWEN2_VL_TOWER, "hidden_size": hidden}}


def _qwen2_5_vl(hidden, layers, heads, kv_heads, ffn, vocab, tie) -> dict:
    return {"model_type": "qwen2_5_vl", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "intermediate_size": ffn, "vocab_size": vocab, "tie_word_embeddings": tie,
            "use_sliding_window": False,
            "vision_config": {**_QWEN2_5_VL_TOWER, "out_hidden_size": hidden}}


# (hidden, layers, heads, KV heads, FFN, vocabulary, tied embeddings)
PRESET_CONFIGS: dict[str, dict] = {
    "qwen2-vl-2b": _qwen2_vl(1536, 28, 12, 2, 8960, 151936, True),
    "qwen2-vl-7b": _qwen2_vl(3584, 28, 28, 4, 18944, 152064, False),
    "qwen2.5-vl-3b": _qwen2_5_vl(2048, 36, 16, 2, 11008, 151936, True),
    "qwen2.5-vl-7b": _qwen2_5_vl(3584, 28, 28, 4, 18944, 152064, False),
    "qwen2.5-vl-72b": _qwen2_5_vl(8192, 80, 64, 8, 29568, 152064, False),
}


def qwen_vl_preset(name: str) -> QwenVLSpec:
    """The built-in model ``name``."""
    if name not in PRESET_CONFIGS:
        raise ConfigError(f"model {name!r} is not a Qwen-VL preset; valid: "
                          f"{', '.join(PRESET_CONFIGS)}")
    return qwen_vl_spec_from_config(PRESET_CONFIGS[name], name=name, origin=f"preset {name}")

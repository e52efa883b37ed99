"""Built-in LLaVA-OneVision models as the config.json dicts their checkpoints publish (the
sizes only), read by the family's ``read_config``.

Sources: llava-hf/llava-onevision-qwen2-7b-ov-hf and llava-hf/llava-onevision-qwen2-72b-ov-hf
``config.json``, as transformers' ``convert_llava_onevision_weights_to_hf.py`` writes them:
the SigLIP-so400m/14-384 tower with its last layer dropped (26 of 27 layers, no pooling
head; the features are its last hidden state, ``vision_feature_layer`` -1), strategy "full",
``anyres_max_9`` over pinpoints up to 2304 px (``LlavaOnevisionConfig``'s defaults); the text
config of Qwen/Qwen2-7B-Instruct (3584 wide, 28 layers, 28 heads, 4 KV heads, FFN 18944) and
Qwen/Qwen2-72B-Instruct (8192, 80, 64, 8, 29568), whose 152,064-token vocabulary gains the
``<image>`` and ``<video>`` tokens and is padded to a multiple of 64: 152,128.
"""

from __future__ import annotations

SIGLIP_SO400M_26 = {"model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 384,
                    "intermediate_size": 4304, "num_attention_heads": 16,
                    "num_hidden_layers": 26, "patch_size": 14, "vision_use_head": False}


def _onevision(hidden, layers, heads, kv_heads, ffn, vocab) -> dict:
    return {"model_type": "llava_onevision", "vision_feature_layer": -1,
            "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9",
            "tie_word_embeddings": False, "vision_config": dict(SIGLIP_SO400M_26),
            "text_config": {"model_type": "qwen2", "hidden_size": hidden,
                            "num_hidden_layers": layers, "num_attention_heads": heads,
                            "num_key_value_heads": kv_heads, "intermediate_size": ffn,
                            "vocab_size": vocab, "use_sliding_window": False}}


# (hidden, layers, heads, KV heads, FFN, vocabulary)
PRESET_CONFIGS: dict[str, dict] = {
    "llava-onevision-7b": _onevision(3584, 28, 28, 4, 18944, 152128),
    "llava-onevision-72b": _onevision(8192, 80, 64, 8, 29568, 152128),
}

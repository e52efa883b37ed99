"""A bare Llama-family LLM (``LlamaConfig``, ``MistralConfig``, … at the top level of its
config.json): no vision side, so the request is the prompt's text tokens only. Every method
is ``ModelFamily``'s default but the reader."""

from __future__ import annotations

from ..configread import read_llm_spec
from ..spec import ModelSpec
from . import TEXT_ONLY, ModelFamily, register


class TextOnlyFamily(ModelFamily):
    name = TEXT_ONLY
    model_types = ()  # any config without text_config / vision_config

    def read_config(self, data: dict, name: str, origin: str) -> ModelSpec:
        # a bare LLM config must name every size itself (no sub-config defaults apply)
        llm = read_llm_spec(data, origin, name, default_model_type=None)
        return ModelSpec(name=name, kind=self.name, llm=llm, description=f"LLM from {origin}")


FAMILY = register(TextOnlyFamily())

"""Quantization plans: independent bit widths for weights, activations and the KV cache."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import WorkloadError
from .units import VALID_BITS, bytes_per_element

_QUANT_PATTERN = re.compile(r"^w(\d+)a(\d+)(?:kv(\d+))?$")

PRECISION_BY_BITS = {32: "fp32", 16: "fp16", 8: "int8", 4: "int4"}


@dataclass(frozen=True)
class QuantPlan:
    """Bit widths of weights, activations and KV cache, each one of 32, 16, 8, 4."""

    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16

    def __post_init__(self) -> None:
        for name in ("weight_bits", "act_bits", "kv_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or value not in VALID_BITS:
                raise WorkloadError(
                    f"{name} = {value!r} is not supported; valid bit widths: "
                    f"{', '.join(str(b) for b in VALID_BITS)}"
                )

    @classmethod
    def uniform(cls, bits: int) -> QuantPlan:
        """``--bits N``: weights, activations and KV cache all at N bits (wNaNkvN)."""
        return cls(bits, bits, bits)

    @classmethod
    def parse(cls, text: str) -> QuantPlan:
        """Parse ``w4a16kv16`` (``kv`` defaults to the activation width, as in LLM-Viewer)."""
        match = _QUANT_PATTERN.match(text.strip().lower())
        if match is None:
            raise WorkloadError(
                f"quantization {text!r} is not of the form wNaN or wNaNkvN "
                "(e.g. w4a16kv16), with N in 32, 16, 8, 4"
            )
        w, a, kv = match.groups()
        try:
            return cls(int(w), int(a), int(kv) if kv is not None else int(a))
        except WorkloadError as exc:  # name the plan as given, not only the field
            raise WorkloadError(f"quantization {text!r}: {exc}") from None

    @property
    def label(self) -> str:
        return f"w{self.weight_bits}a{self.act_bits}kv{self.kv_bits}"

    @property
    def weight_bytes_per_element(self) -> float:
        return bytes_per_element(self.weight_bits)

    @property
    def act_bytes_per_element(self) -> float:
        return bytes_per_element(self.act_bits)

    @property
    def kv_bytes_per_element(self) -> float:
        return bytes_per_element(self.kv_bits)

    @property
    def linear_precision(self) -> str:
        """Precision a linear layer's matmul runs at: the wider of weights and activations
        (w4a16 dequantizes to FP16; w8a8 runs INT8; w4a4 runs INT4)."""
        return PRECISION_BY_BITS[max(self.weight_bits, self.act_bits)]

    @property
    def attention_precision(self) -> str:
        """Precision of the q·kᵀ and scores·v matmuls: the wider of activations and KV."""
        return PRECISION_BY_BITS[max(self.act_bits, self.kv_bits)]

    @property
    def vector_precision(self) -> str:
        """Element-wise work runs in FP32 for 32-bit activations, else FP16."""
        return "fp32" if self.act_bits == 32 else "fp16"

    @property
    def llm_viewer_precision(self) -> str:
        """LLM-Viewer (2024) used its INT8 peak whenever all three widths are ≤ 8, else FP16."""
        if max(self.weight_bits, self.act_bits, self.kv_bits) <= 8:
            return "int8"
        return "fp16"

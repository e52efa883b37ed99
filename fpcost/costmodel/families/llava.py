"""LLaVA-1.5 (``model_type`` ``llava``): a ViT tower (CLIP, SigLIP or DINOv2) over one image
resized to the tower's input, LLaVA's two-layer GELU projector, a Llama-family LLM.

Per sample: one image of T = ``vision.num_positions`` tokens in the tower (577 for CLIP
ViT-L/14 at 336 px), ``num_patches`` visual tokens to the LLM (576; +1 with
``vision_feature_select_strategy="full"`` and a CLS token). ``LlavaFamily`` is also the base
of Video-LLaVA and LLaVA-NeXT, which share its tower, selection, projector and weights.
"""

from __future__ import annotations

from ..configread import llava_projector, read_llava_parts
from ..errors import ConfigError, WorkloadError
from ..layout import VisualLayout
from ..params import llm_params, projector_params, vision_params
from ..pruning import anchored_selection
from ..selection_cost import selection_ops
from ..spec import ModelSpec
from ..vision import num_vision_layers_run, projector_ops, vision_tower_ops
from . import ModelFamily, register


class LlavaFamily(ModelFamily):
    name = "llava"
    model_types = ("llava",)
    has_vision = True

    # --- reading --------------------------------------------------------------------------
    def read_config(self, data: dict, name: str, origin: str) -> ModelSpec:
        llm, vision, strategy = read_llava_parts(data, name, origin)
        keep_cls = int(strategy == "full" and vision.has_cls_token)
        return ModelSpec(
            name=name, kind=self.name, llm=llm, vision=vision,
            projector=llava_projector(llm, vision),
            default_num_visual_tokens=vision.num_patches + keep_cls,
            description=f"{self.name} from {origin}", vision_feature_select_strategy=strategy,
            **self.extra_fields(data, origin, vision, strategy),
        )

    def extra_fields(self, data: dict, origin: str, vision, strategy: str) -> dict:
        """ModelSpec fields a derived family reads from its config (frames, pinpoints)."""
        return {}

    def check_spec(self, spec: ModelSpec) -> None:
        if spec.vision is None or spec.projector is None:
            raise ConfigError(f"model {spec.name!r}: a {spec.kind} model needs a vision tower "
                              "and projector")

    # --- the vision side ------------------------------------------------------------------
    @staticmethod
    def keep_cls(spec: ModelSpec) -> int:
        """1 when the LLM receives the CLS token too (strategy "full" and a CLS token)."""
        return int(spec.vision_feature_select_strategy == "full" and spec.vision.has_cls_token)

    def check_frames(self, spec: ModelSpec, num_frames: int | None) -> None:
        if num_frames is not None and num_frames != spec.num_frames:
            raise WorkloadError(f"--frames {num_frames}: {spec.name} runs {spec.num_frames} "
                                f"frame(s) per sample, not {num_frames}")

    def visual_layout(self, spec, image_size=None, num_frames=None, pixel_limits=None) -> VisualLayout:
        """Every image is resized to the tower's input: the size changes nothing."""
        self.check_frames(spec, num_frames)
        visual = spec.default_num_visual_tokens
        return VisualLayout(spec.num_frames, spec.vision.num_positions, visual, visual)

    def tower_depth(self, spec: ModelSpec) -> int:
        return spec.vision.num_hidden_layers

    def num_layers_run(self, spec: ModelSpec, settings) -> int:
        return num_vision_layers_run(spec.vision, settings.vision_layers)

    def image_size_note(self, spec: ModelSpec) -> str:
        side = spec.vision.image_size
        return f"{spec.name} resizes every image to {side}x{side} px"

    def vision_ops(self, spec, layout, settings, batch_size):
        return vision_tower_ops(spec.vision, settings.vision_quant, batch_size * layout.num_images,
                                self.num_layers_run(spec, settings), settings.flash_attention,
                                settings.onchip_buffer_bytes)

    def effective_selection(self, spec, selection):
        """freePruner's default layers anchored to the hidden state the LLM reads
        (``vision_feature_layer``), as fpcost prune / generate anchor them: unchanged for
        LLaVA's -2 of 24 layers; OneVision's -1 of 26 reads pivotal 23, 24, complementary 25."""
        if selection is None:
            return None
        return anchored_selection(selection, spec.vision.num_hidden_layers,
                                  spec.vision.feature_layer)

    def selection_scored_tokens(self, spec, layout) -> int:
        return spec.vision.num_patches

    def selection_ops(self, spec, layout, settings, num_images):
        return selection_ops(spec.vision, self.effective_selection(spec, settings.selection),
                             num_images, self.num_layers_run(spec, settings),
                             settings.vision_quant.act_bits)

    def projector_ops(self, spec, layout, settings, num_tokens):
        return projector_ops(spec.projector, settings.vision_quant, num_tokens)

    def vision_residual_elements(self, spec, layout) -> int:
        return layout.num_images * layout.tokens_per_image * spec.vision.hidden_size

    def tokens_unit(self, spec, layout) -> str:
        return f"per image ({spec.vision.image_size} px / {spec.vision.patch_size} px patches)"

    # --- weights --------------------------------------------------------------------------
    def parameter_counts(self, spec: ModelSpec) -> dict[str, int]:
        return {"llm": llm_params(spec.llm),
                "vision": spec.num_vision_towers * vision_params(spec.vision),
                "projector": projector_params(spec.projector)}


FAMILY = register(LlavaFamily())

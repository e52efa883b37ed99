"""``--tensor-parallel``, ``--pipeline-parallel`` and ``--frames`` of ``estimate``, ``serve``
(and ``sweep``'s ``--frames``), and what ``estimate`` shows of a parallel run."""

from __future__ import annotations

import functools

import click

from fpcost.cli.bounds import INT32_MAX, BoundedInt
from fpcost.costmodel.estimate import Estimate
from fpcost.costmodel.parallel import VISION_PLACEMENT, Parallelism, stage_layers
from fpcost.costmodel.units import GIGA
from fpcost.costmodel.workload import MAX_FRAMES


def split_options(func):
    """``--tensor-parallel`` and ``--pipeline-parallel``: the GPU split, shared by estimate,
    sweep and serve."""
    @click.option("--tensor-parallel", "tensor_parallel", type=BoundedInt(1, INT32_MAX),
                  default=1, show_default=True,
                  help="GPUs sharing every LLM layer (Megatron-style: heads, FFN and vocabulary "
                       "split; two all-reduces per layer). Must divide the attention heads. "
                       "Weights, KV cache and fits are per GPU.")
    @click.option("--pipeline-parallel", "pipeline_parallel", type=BoundedInt(1, INT32_MAX),
                  default=1, show_default=True,
                  help="Pipeline stages holding consecutive LLM layers (at most the layer "
                       "count; vLLM's split: the remainder to the stages before the last).")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def frames_option(func):
    """``--frames N``: each sample a video (estimate, sweep, serve)."""
    return click.option(
        "--frames", "frames", type=BoundedInt(1, MAX_FRAMES), default=None,
        help="Each sample a video of N frames: Qwen2-VL / Qwen2.5-VL (N/2 temporal patches, "
             "rounded up) and LLaVA-OneVision (each frame pooled 2x2); Video-LLaVA takes only "
             "its fixed 8.")(func)


def parallel_options(func):
    """The GPU split and the video frame count, shared by estimate and serve (sweep takes
    lists of degrees: cli/sweep.py)."""
    return split_options(frames_option(func))


def resolve_parallelism(tensor_parallel: int, pipeline_parallel: int) -> Parallelism:
    return Parallelism(tensor_parallel, pipeline_parallel)


def parallelism_payload(result: Estimate) -> dict:
    """The JSON ``parallelism`` object of a run on more than one GPU."""
    p, hardware = result.parallelism, result.hardware
    return {
        "tensor_parallel": p.tensor,
        "pipeline_parallel": p.pipeline,
        "num_gpus": p.num_gpus,
        "layers_per_stage": list(stage_layers(result.model.llm.num_hidden_layers, p.pipeline)),
        "vision": VISION_PLACEMENT,
        "interconnect": {"kind": hardware.interconnect_kind,
                         "bandwidth_bytes_per_s": hardware.interconnect_bandwidth_bytes_per_s,
                         "latency_s": hardware.interconnect_latency_s},
        "communication": [row.as_dict() for row in result.communication],
    }


def parallel_caption(result: Estimate) -> str:
    """One caption line: the split and the link (empty on one GPU)."""
    p, hardware = result.parallelism, result.hardware
    if p.is_single:
        return ""
    layers = stage_layers(result.model.llm.num_hidden_layers, p.pipeline)
    return (f"\n{p.num_gpus} GPUs: tensor parallel {p.tensor} x pipeline parallel {p.pipeline} "
            f"(layers per stage {', '.join(map(str, layers))}) over {hardware.interconnect_kind} "
            f"at {hardware.interconnect_bandwidth_bytes_per_s / GIGA:g} GB/s per direction; "
            f"operators are one tensor-parallel rank's; Comm = all-reduces, logits gather and "
            f"stage sends; {VISION_PLACEMENT}; memory is the busiest GPU's.")

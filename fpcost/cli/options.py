"""Options shared by the cost-model commands, and their resolution into library objects."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from fpcost.cli.bounds import InputPath
from fpcost.costmodel.accounting import ACCOUNTING_MODES
from fpcost.costmodel.hfconfig import load_config_json
from fpcost.costmodel.presets import get_preset, model_names
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import ModelSpec
from fpcost.costmodel.units import VALID_BITS
from fpcost.costmodel.vision import VISION_LAYER_MODES
from fpcost.costmodel.workload import MAX_BATCH, MAX_OUTPUT_TOKENS, MAX_TOKENS

# Token counts and batch sizes are bounded (workload.py says why): a larger value is refused
# by click with a one-line message naming the flag, the value and the range.
POSITIVE_INT = click.IntRange(min=1, max=MAX_TOKENS)
NON_NEGATIVE_INT = click.IntRange(min=0, max=MAX_TOKENS)
BATCH_SIZE = click.IntRange(min=1, max=MAX_BATCH)
OUTPUT_TOKENS = click.IntRange(min=1, max=MAX_OUTPUT_TOKENS)


def check_keep_ratio(keep_ratio: float | None) -> float | None:
    """``--keep-ratio`` in (0, 1] (NaN and infinities refused), or a one-line error naming it."""
    if keep_ratio is not None and not 0 < keep_ratio <= 1:
        raise click.BadParameter(f"{keep_ratio!r} is not a fraction in (0, 1]",
                                 param_hint="--keep-ratio")
    return keep_ratio


def model_options(func):
    @click.option("--model", "-m", "model_name", default=None,
                  help=f"Built-in model: {', '.join(model_names())} [default: llava-1.5-7b].")
    @click.option("--config", "config_path", type=InputPath(dir_okay=True, path_type=Path),
                  default=None, help="A Hugging Face config.json (LLaVA, Video-LLaVA, LLaVA-NeXT, "
                                     "Qwen2-VL, Qwen2.5-VL or a Llama-family LLM).")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def resolve_model(model_name: str | None, config_path: Path | None) -> ModelSpec:
    """The model named by --model or read from --config (an empty value is refused, not
    taken as the default)."""
    if model_name is not None and config_path is not None:
        raise click.UsageError("give either --model or --config, not both")
    if config_path is not None:
        return load_config_json(config_path)
    if model_name is not None and not model_name.strip():
        raise click.BadParameter("an empty name is not a model; omit --model for llava-1.5-7b",
                                 param_hint="--model")
    return get_preset("llava-1.5-7b" if model_name is None else model_name)


def non_empty_models(ctx: click.Context, param: click.Parameter, values):
    """Click callback for a repeatable --model: an empty name is refused, not read as '.'."""
    if any(not value.strip() for value in values):
        raise click.BadParameter("an empty name is not a model; omit --model for llava-1.5-7b")
    return values


def vision_options(func):
    """--vision-layers, --vision-quant and --selection-layers, shared by estimate and sweep."""
    @click.option("--vision-layers", type=click.Choice(VISION_LAYER_MODES), default="all",
                  show_default=True,
                  help="all: every encoder layer (what transformers runs); feature: stop at the "
                       "layer LLaVA reads (-2).")
    @click.option("--vision-quant", "vision_quant_text", default="w16a16kv16", show_default=True,
                  metavar="wNaNkvN", help="Bit widths of the vision tower and projector.")
    @click.option("--selection-layers", default=None, metavar="L,L,...",
                  help="Encoder layers whose attention freePruner's selection recomputes "
                       "[default: -4,-3,-2: pivotal layers -4 and -3, complementary -2; k = "
                       "0.25 x the patch tokens].")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def quant_options(func):
    @click.option("--bits", type=click.Choice([str(b) for b in VALID_BITS]), default=None,
                  help="Weights, activations and KV cache all at N bits (the paper's INT4 = 4) "
                       "[default: 16, i.e. w16a16kv16].")
    @click.option("--quant", "quant_text", default=None, metavar="wNaNkvN",
                  help="Independent bit widths, e.g. w4a16kv16 [default: w16a16kv16].")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def resolve_quant(bits: str | None, quant_text: str | None) -> QuantPlan:
    if bits is not None and quant_text is not None:
        raise click.UsageError("give either --bits or --quant, not both")
    if quant_text is not None:
        if not quant_text.strip():
            raise click.BadParameter("an empty plan is not a quantization; give wNaNkvN, e.g. "
                                     "w4a16kv16 (omit --quant for w16a16kv16)", param_hint="--quant")
        return QuantPlan.parse(quant_text)
    return QuantPlan.uniform(int(bits)) if bits else QuantPlan()


def hardware_option(func):
    return click.option("--hardware", "-g", "hardware_name", default="a6000", show_default=True,
                        help="Hardware profile name (see `fpcost hardware`) or a .toml file.")(func)


def resolve_hardware(name: str):
    from fpcost.hardware_profiles import load_profile

    return load_profile(name)


def accounting_option(func):
    return click.option("--accounting", type=click.Choice(sorted(ACCOUNTING_MODES)),
                        default="fpcost", show_default=True,
                        help="fpcost: corrected counting; llm-viewer: LLM-Viewer (2024) exactly.")(func)


def read_tokens_file(path: Path) -> list[dict]:
    """The per-image kept counts from a results file written by ``fpcost prune --output``
    (read without torch: ``fpcost.pruner.results`` imports none)."""
    from fpcost.pruner.results import read_results

    return read_results(path)


def read_tokens_document(path: Path):
    """The whole results file (``fpcost.pruner.results.ResultsFile``): rows, method, params,
    selection settings, checked once in ``read_results_file``."""
    from fpcost.pruner.results import read_results_file

    return read_results_file(path)

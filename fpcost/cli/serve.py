"""``fpcost serve``: a continuous-batching server simulated on fpcost's roofline (throughput,
latency percentiles, SLO attainment), unpruned and pruned side by side with ``--keep-ratio``
or ``--tokens-from``; ``--max-rate`` searches the highest rate meeting the SLOs."""

from __future__ import annotations

from pathlib import Path

import click

from fpcost.cli.bounds import InputPath
from fpcost.costmodel.anyres import parse_image_size
from fpcost.costmodel.families import family_of, image_size_families
from fpcost.costmodel.pipeline import PipelineSettings
from fpcost.costmodel.pruning import DEFAULT_SELECTION, FREE_METHODS, UNMODELLED_METHODS
from fpcost.costmodel.serve.capacity import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_MAX_NUM_BATCHED_TOKENS,
    DEFAULT_MAX_NUM_SEQS,
    ServerSettings,
)
from fpcost.costmodel.serve.requests import MAX_REQUESTS, check_rate
from fpcost.costmodel.serve.search import DEFAULT_TARGET

from .files import output_path_callback, write_atomic
from .options import (
    NON_NEGATIVE_INT,
    OUTPUT_TOKENS,
    POSITIVE_INT,
    accounting_option,
    check_keep_ratio,
    hardware_option,
    model_options,
    quant_options,
    resolve_hardware,
    resolve_model,
    resolve_quant,
)
from .parallel_options import parallel_options, resolve_parallelism
from .render import FORMATS, stderr_console
from .serve_render import render_serve, serve_csv, serve_json

METHODS = ("freepruner", *(m for m in FREE_METHODS if m != "keep-all"), *UNMODELLED_METHODS)


def _fraction(ctx, param, value):
    if not 0 < value <= 1:
        raise click.BadParameter(f"{value!r} is not a fraction in (0, 1]")
    return value


def _positive_seconds(ctx, param, value):
    if value is not None and not 0 < value < float("inf"):
        raise click.BadParameter(f"{value!r} must be a finite number of seconds > 0")
    return value


@click.command()
@model_options
@hardware_option
@quant_options
@click.option("--rate", type=float, default=None,
              help="Poisson arrival rate, requests per second (> 0). With --max-rate: where the "
                   "search starts [default: 1].")
@click.option("--num-requests", type=click.IntRange(1, MAX_REQUESTS), default=1000, show_default=True,
              help="Requests to simulate (Poisson arrivals).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the arrivals (and of --tokens-from's sampling).")
@click.option("--output-tokens", type=OUTPUT_TOKENS, default=128, show_default=True,
              help="Tokens each request generates (a trace's output_tokens column overrides).")
@click.option("--text-tokens", type=NON_NEGATIVE_INT, default=40, show_default=True,
              help="Text tokens of each prompt (a trace's text_tokens column overrides).")
@click.option("--image-size", default=None, metavar="WxH",
              help="LLaVA-NeXT / Qwen2-VL / Qwen2.5-VL only: each request's image size.")
@click.option("--keep-ratio", type=float, default=None,
              help="Also serve the pruned model, keeping this fraction in (0, 1] of each request's "
                   "visual tokens; both servers are reported side by side.")
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="With --keep-ratio: the pruning method whose selection the pruned server runs "
                   "[default: freepruner, its selection costed as in estimate; random / uniform read "
                   "no attention map (no selection cost); cls / prumerge+ cost not modelled].")
@click.option("--trace", type=InputPath(path_type=Path), default=None,
              help="Requests from a JSONL or CSV trace (docs/serving.md gives the columns) "
                   "instead of Poisson arrivals.")
@click.option("--tokens-from", type=InputPath(path_type=Path), default=None,
              help="A `fpcost prune --output` results file: each pruned request's kept counts "
                   "sampled (seeded) from its images; served beside the unpruned model.")
@click.option("--slo-ttft", type=float, default=None, callback=_positive_seconds,
              help="Time-to-first-token SLO in seconds.")
@click.option("--slo-tpot", type=float, default=None, callback=_positive_seconds,
              help="Time-per-output-token SLO in seconds.")
@click.option("--slo-target", type=float, default=DEFAULT_TARGET, show_default=True,
              callback=_fraction,
              help="--max-rate: the fraction of requests that must meet every SLO.")
@click.option("--max-rate", "search_rate", is_flag=True,
              help="Search the highest Poisson rate whose SLO attainment reaches --slo-target "
                   "(needs --slo-ttft and/or --slo-tpot).")
@click.option("--chunked-prefill", is_flag=True,
              help="Split prompts into chunks under the token budget, batched with decodes.")
@click.option("--max-num-batched-tokens", type=POSITIVE_INT, default=DEFAULT_MAX_NUM_BATCHED_TOKENS,
              show_default=True, help="Token budget of one iteration (vLLM's).")
@click.option("--max-num-seqs", type=POSITIVE_INT, default=DEFAULT_MAX_NUM_SEQS, show_default=True,
              help="Most requests running at once (vLLM's).")
@click.option("--gpu-memory-utilization", type=float, default=DEFAULT_GPU_MEMORY_UTILIZATION,
              show_default=True, help="Fraction of device memory the server may use (vLLM's).")
@click.option("--flash-attention/--no-flash-attention", default=True, show_default=True,
              help="Cost attention as one fused kernel, as vLLM runs it (estimate's default is "
                   "off: pass the same flag to both when comparing).")
@parallel_options
@accounting_option
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="table",
              show_default=True, help="Output as a rich table, JSON, or CSV.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=output_path_callback,
              help="Write the JSON or CSV here (atomically) instead of stdout.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=output_path_callback,
              help="Also draw latency percentiles against arrival rate (PNG; needs the plot extra).")
@click.option("--plot-rates", default=None, metavar="R,R,...",
              help="--plot: the arrival rates [default: 0.25 .. 2 x --rate].")
def serve(model_name, config_path, hardware_name, bits, quant_text, rate, num_requests, seed,
          output_tokens, text_tokens, image_size, keep_ratio, method, trace, tokens_from, slo_ttft,
          slo_tpot, slo_target, search_rate, chunked_prefill, max_num_batched_tokens,
          max_num_seqs, gpu_memory_utilization, flash_attention, tensor_parallel,
          pipeline_parallel, frames, accounting, output_format, output, plot_path, plot_rates):
    """Simulate a continuous-batching server (vLLM-style) on the roofline: throughput, TTFT /
    TPOT / latency percentiles, SLO attainment, KV-cache use; pruned beside unpruned."""
    from fpcost.costmodel.accounting import get_accounting
    from fpcost.costmodel.quant import QuantPlan

    model = resolve_model(model_name, config_path)
    quant = resolve_quant(bits, quant_text)
    hardware = resolve_hardware(hardware_name)
    check_keep_ratio(keep_ratio)
    _check_combinations(rate, trace, tokens_from, keep_ratio, search_rate, slo_ttft, slo_tpot,
                        plot_path, plot_rates)
    if method is not None and keep_ratio is None:
        raise click.UsageError("--method chooses the pruned server's selection: give --keep-ratio "
                               "too (--tokens-from files carry their own method)")
    if rate is not None:
        check_rate(rate)
    size = _image_size(model, image_size)
    server = ServerSettings(max_num_seqs, max_num_batched_tokens, chunked_prefill,
                            gpu_memory_utilization)
    settings = PipelineSettings(quant, get_accounting(accounting), flash_attention,
                                hardware.onchip_buffer_bytes, QuantPlan(), "all", DEFAULT_SELECTION)
    from .serve_workloads import Scenario

    scenario = Scenario.build(model, hardware, settings, server, text_tokens=text_tokens,
                              output_tokens=output_tokens, image_size=size, keep_ratio=keep_ratio,
                              method=method, frames=frames,
                              trace=trace, tokens_from=tokens_from, num_requests=num_requests,
                              seed=seed,
                              parallelism=resolve_parallelism(tensor_parallel, pipeline_parallel))
    if output is not None and output_format == "table":
        output_format = {".csv": "csv", ".json": "json"}.get(output.suffix.lower())
        if output_format is None:
            raise click.UsageError(f"--output {output} needs --format csv or json (or a .csv / "
                                   ".json name)")
    payload = scenario.payload(rate, slo_ttft, slo_tpot, search_rate, slo_target)
    if plot_path is not None:
        centre = payload["settings"]["rate"]
        if plot_rates is None and centre is None:
            raise click.UsageError("no rate met the SLOs, so --plot has no default rates; give "
                                   "--plot-rates R,R,...")
        rates = (parse_rates(plot_rates) if plot_rates is not None
                 else [centre * f for f in (0.25, 0.5, 0.75, 1, 1.25, 1.5, 2)])
        _plot(scenario, rates, plot_path, slo_ttft, slo_tpot)
    if output_format == "json":
        text = serve_json(payload)
    elif output_format == "csv":
        text = serve_csv(payload)
    else:
        render_serve(payload)
        return
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(output, text)
        stderr_console.print(f"wrote {output}")


def parse_rates(text: str) -> list[float]:
    """``--plot-rates``: comma-separated rates, each finite and > 0."""
    rates = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise click.BadParameter(f"{part.strip()[:40]!r} is not a number",
                                     param_hint="--plot-rates") from None
        rates.append(check_rate(value, "--plot-rates"))
    return rates


def _check_combinations(rate, trace, tokens_from, keep_ratio, search_rate, slo_ttft, slo_tpot,
                        plot_path, plot_rates) -> None:
    if trace is not None:
        if rate is not None:
            raise click.UsageError("--trace gives the arrival times; do not combine it with --rate")
        if tokens_from is not None:
            raise click.UsageError("give either --trace or --tokens-from, not both")
        if search_rate or plot_path is not None:
            raise click.UsageError("--max-rate and --plot vary a Poisson rate; leave out --trace")
    elif rate is None and not search_rate:
        raise click.UsageError("give --rate R (requests per second), --trace FILE or --max-rate")
    if tokens_from is not None and keep_ratio is not None:
        raise click.UsageError("--tokens-from sets the pruned visual tokens; do not combine it "
                               "with --keep-ratio")
    if search_rate and slo_ttft is None and slo_tpot is None:
        raise click.UsageError("--max-rate needs an SLO: give --slo-ttft and/or --slo-tpot")
    if plot_rates is not None and plot_path is None:
        raise click.UsageError("--plot-rates needs --plot FILE.png")
    if plot_path is not None and plot_path.suffix.lower() != ".png":
        raise click.BadParameter(f"{plot_path} must end in .png", param_hint="--plot")


def _image_size(model, image_size):
    if image_size is None:
        return None
    family = family_of(model)
    if not family.uses_image_size:
        raise click.BadParameter(f"{image_size!r} changes nothing for {model.name}: only the "
                                 f"{image_size_families()} families use the image size",
                                 param_hint="--image-size")
    return parse_image_size(image_size)


def _plot(scenario, rates, path: Path, slo_ttft, slo_tpot) -> None:
    from .plot import _plotting

    points = scenario.rate_points(rates, slo_ttft, slo_tpot)
    figure = _plotting().serve_figure(points, title=scenario.title())
    write_atomic(path, _plotting().png_bytes(figure))
    stderr_console.print(f"wrote {path}")


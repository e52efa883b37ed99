"""Pictures (the ``plot`` extra): a device's roofline with every operator of a workload on
it, and prefill time and speedup against kept visual tokens. The only module that imports
matplotlib; it draws on ``matplotlib.figure.Figure`` objects (no pyplot, no global backend
switch), which ``png_bytes`` renders with the Agg canvas.

    >>> from fpcost import plot
    >>> fig = plot.roofline_figure({"all tokens": e_full, "pruned": e_pruned})
    >>> fig = plot.sweep_figure(fpcost.sweep(bits=[16, 4], keep_ratio=[0.1, 0.5, 1]))
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.estimate import Estimate
from fpcost.costmodel.units import MILLI, TERA
from fpcost.extras import MissingExtraError, missing_extra_message

MISSING_MATPLOTLIB = missing_extra_message("plot", "fpcost plot", "matplotlib")

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError:
    raise MissingExtraError(MISSING_MATPLOTLIB) from None

# Operator class -> colour (matplotlib's tab10), and stage -> marker.
CLASS_COLOURS = {"matmul": "#1f77b4", "attention": "#d62728", "vector": "#2ca02c", "norm": "#9467bd"}
STAGE_MARKERS = {"prefill": "o", "decode": "^"}
CEILING_STYLES = ("-", "--", "-.", ":")
# Points closer than this (in decades, both axes) share one label.
LABEL_MERGE_DECADES = 0.06
DPI = 100
LINE_MARKERS = ("o", "s", "^", "D", "v", "P")
LINE_STYLES = ("-", "--", "-.", ":")


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, rendered by the Agg canvas."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def operator_points(result: Estimate) -> list[dict]:
    """One point per operator of ``result``: its arithmetic intensity (FLOPs per byte of
    memory access) and attained rate (FLOPs per second of roofline time), per instance,
    and its share of its stage's time (all ``count`` instances)."""
    stage_time_s = {stage: totals.time_s for stage, totals in result.totals().items()}
    points = []
    for row in result.operators:
        op = row.op
        flops, nbytes = float(op.flops), float(op.memory_access_bytes)
        if flops <= 0 or nbytes <= 0 or row.time_s <= 0:
            continue
        points.append({"stage": op.stage, "name": op.name, "op_class": op.op_class,
                       "intensity_flops_per_byte": flops / nbytes,
                       "attained_flops_per_s": flops / row.time_s, "bound": row.bound,
                       "time_share": op.count * row.time_s / stage_time_s[op.stage]})
    return points


def ceilings(results) -> list[tuple[str, float]]:
    """(label, FLOP/s) of each compute ceiling the operators of ``results`` run against,
    highest first."""
    seen: dict[str, float] = {}
    for result in results:
        hardware = result.hardware
        for row in result.operators:
            op = row.op
            if op.tensor_flops:
                seen[f"{op.precision.upper()} tensor"] = hardware.peak_flops_per_s("tensor", op.precision)
            if op.vector_flops:
                seen[f"{op.vector_precision.upper()} vector"] = hardware.peak_flops_per_s(
                    "vector", op.vector_precision)
    return sorted(seen.items(), key=lambda item: -item[1])


def roofline_figure(estimates: Mapping[str, Estimate], title: str | None = None) -> Figure:
    """One panel per estimate (e.g. unpruned and pruned), side by side with shared axes:
    the device's memory slope and compute ceilings, and every operator placed at its
    arithmetic intensity and attained FLOP/s, coloured by class; prefill operators are
    filled circles (labelled), decode operators hollow triangles."""
    results = list(estimates.values())
    hardware = results[0].hardware
    bandwidth = hardware.hbm_bandwidth_bytes_per_s
    peaks = ceilings(results)
    intensities = [p["intensity_flops_per_byte"] for r in results for p in operator_points(r)]
    x_lo = 10 ** math.floor(math.log10(min(intensities) / 2))
    x_hi = 10 ** math.ceil(math.log10(max(max(intensities), peaks[0][1] / bandwidth) * 20))
    fig = Figure(figsize=(6.0 * len(results), 5.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(results), sharex=True, sharey=True, squeeze=False)[0]
    for ax, (panel_title, result) in zip(axes, estimates.items(), strict=True):
        _draw_roofline(ax, bandwidth, peaks, x_lo, x_hi)
        _draw_points(ax, operator_points(result))
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("Arithmetic intensity (FLOPs / byte)")
    axes[0].set_ylabel("Attained performance (TFLOP/s)")
    axes[0].yaxis.set_major_formatter(_tera_formatter())
    _legend(axes[0], results)
    fig.suptitle(title or f"Roofline on {hardware.name}", fontsize=11)
    return fig


def _draw_roofline(ax, bandwidth: float, peaks, x_lo: float, x_hi: float) -> None:
    top = peaks[0][1]
    ax.plot([x_lo, top / bandwidth], [bandwidth * x_lo, top], color="0.3", lw=1.5, zorder=1)
    x_text = x_lo * 3
    ax.text(x_text * 1.3, bandwidth * x_text, f"memory\n{bandwidth / TERA:.2f} TB/s", fontsize=8,
            color="0.3", ha="left", va="top")
    for i, (label, peak) in enumerate(peaks):
        style = CEILING_STYLES[i % len(CEILING_STYLES)]
        ax.plot([peak / bandwidth, x_hi], [peak, peak], color="0.3", lw=1.2, ls=style, zorder=1)
        ax.text(x_hi / 1.3, peak / 1.12, f"{label}\n{peak / TERA:.1f} TFLOP/s", fontsize=8,
                color="0.3", ha="right", va="top")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(bandwidth * x_lo, top * 3)
    ax.grid(True, which="major", color="0.92", lw=0.6)


def _draw_points(ax, points: list[dict]) -> None:
    for p in points:
        colour = CLASS_COLOURS.get(p["op_class"], "0.4")
        prefill = p["stage"] == "prefill"
        ax.scatter(p["intensity_flops_per_byte"], p["attained_flops_per_s"],
                   marker=STAGE_MARKERS.get(p["stage"], "s"), s=42 if prefill else 110,
                   facecolors=colour if prefill else "none", edgecolors=colour,
                   linewidths=0.6 if prefill else 1.0, zorder=3 if prefill else 4)
    for (x, y), names, share in _merged_labels([p for p in points if p["stage"] == "prefill"]):
        text = ax.annotate(f"{', '.join(names)} ({share:.0%})", (x, y), xytext=(6, 0),
                           textcoords="offset points", fontsize=7.5, color="0.1", va="center",
                           zorder=4)
        text.set_in_layout(False)


def _merged_labels(points: list[dict]):
    """(position, operator names, summed time share) of points grouped by near-identical
    position, so overlapping points share one label (the seven projections coincide)."""
    groups: list[tuple[tuple[float, float], list[str], list[float]]] = []
    for p in points:
        x, y = p["intensity_flops_per_byte"], p["attained_flops_per_s"]
        for (gx, gy), names, shares in groups:
            if (abs(math.log10(gx / x)) < LABEL_MERGE_DECADES
                    and abs(math.log10(gy / y)) < LABEL_MERGE_DECADES):
                names.append(p["name"])
                shares.append(p["time_share"])
                break
        else:
            groups.append(((x, y), [p["name"]], [p["time_share"]]))
    return [((x, y), _short(names), sum(shares)) for (x, y), names, shares in groups]


def _short(names: list[str]) -> list[str]:
    """``q_proj, k_proj, v_proj`` → ``q/k/v_proj``; other names unchanged."""
    proj = [n[: -len("_proj")] for n in names if n.endswith("_proj")]
    rest = [n for n in names if not n.endswith("_proj")]
    return ([f"{'/'.join(proj)}_proj"] if proj else []) + rest


def _legend(ax, results) -> None:
    from matplotlib.lines import Line2D

    classes = sorted({row.op.op_class for r in results for row in r.operators})
    stages = list(dict.fromkeys(row.op.stage for r in results for row in r.operators))
    handles = [Line2D([], [], ls="", marker="o", color=CLASS_COLOURS.get(c, "0.4"), label=c)
               for c in classes]
    handles += [Line2D([], [], ls="", marker=STAGE_MARKERS.get(s, "s"), color="0.4",
                       markerfacecolor="0.4" if s == "prefill" else "none", label=s)
                for s in stages]
    ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.9)


def _tera_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value / TERA:g}")


def sweep_figure(frame, title: str | None = None) -> Figure:
    """Prefill time (left) and prefill speedup (right) against kept visual tokens, one line
    per combination of the model / hardware / quant / batch values that vary in ``frame``
    (a ``fpcost.sweep`` DataFrame)."""
    keys = [k for k in ("model", "hardware", "quant", "batch_size") if frame[k].nunique() > 1]
    fig = Figure(figsize=(11, 4.6), dpi=DPI, layout="constrained")
    ax_time, ax_speedup = fig.subplots(1, 2, sharex=True)
    groups = frame.groupby(keys, sort=False) if keys else [((), frame)]
    for i, (key, rows) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"batch {v}" if k == "batch_size" else str(v)
                          for k, v in zip(keys, key, strict=True))
        rows = rows.sort_values("num_visual_tokens")
        x = rows["num_visual_tokens"].to_numpy()
        # Later curves are thinner with hollow markers: where two coincide, both stay visible.
        style = {"marker": LINE_MARKERS[i % len(LINE_MARKERS)], "ls": LINE_STYLES[i % len(LINE_STYLES)],
                 "ms": 6 if i == 0 else 5, "lw": max(2.6 - 0.6 * i, 1.0),
                 "markerfacecolor": None if i == 0 else "white", "label": label or None}
        line, = ax_time.plot(x, rows["prefill_time_s"].to_numpy() / MILLI, **style)
        ax_speedup.plot(x, rows["prefill_speedup"].to_numpy(), color=line.get_color(), **style)
    full = frame["num_visual_tokens"].max()
    if not full > 0:  # nothing to draw against (and a keep-ratio axis would divide by zero)
        raise WorkloadError("plot sweep: every configuration has 0 visual tokens; give visual "
                            "tokens above 0 (--visual-tokens, --keep-ratios) or a multimodal model")
    ratio = frame["keep_ratio"].to_numpy() if frame["model"].nunique() == 1 else None
    ax_time.set_ylabel("Prefill time (ms)")
    ax_time.set_ylim(bottom=0)
    ax_speedup.set_ylabel("Prefill speedup vs. all visual tokens (×)")
    ax_speedup.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax_speedup.set_ylim(bottom=0)
    for ax in (ax_time, ax_speedup):
        ax.set_xlabel("Kept visual tokens")
        ax.set_xlim(0, full * 1.02)
        ax.grid(True, color="0.9", lw=0.6)
    if ratio is not None and ratio[0] == ratio[0]:  # one model, ratios known: a keep-ratio axis
        scale = (frame["num_visual_tokens"] / frame["keep_ratio"]).median()
        for ax in (ax_time, ax_speedup):
            top = ax.secondary_xaxis("top", functions=(lambda v: v / scale, lambda r: r * scale))
            top.set_xlabel("Fraction of visual tokens kept", fontsize=9)
    if keys:
        for ax in (ax_time, ax_speedup):
            ax.legend(fontsize=8, title=" / ".join(keys), title_fontsize=8)
    first = frame.iloc[0]
    fixed = [f"{first[k]}" if k != "batch_size" else f"batch {first[k]}"
             for k in ("model", "hardware", "quant", "batch_size") if k not in keys]
    fig.suptitle(title or "Prefill vs. kept visual tokens" + (f" — {', '.join(fixed)}" if fixed else ""),
                 fontsize=12)
    return fig


def serve_figure(points: Mapping[str, list], title: str | None = None) -> Figure:
    """Latency (left) and TTFT (right) percentiles p50 / p90 / p99 against the arrival rate,
    one colour per server (``points``: name -> [(rate, ``fpcost serve`` summary), ...]);
    p50 solid, p90 dashed, p99 dotted. A rate where nothing completed is left out."""
    fig = Figure(figsize=(11, 4.6), dpi=DPI, layout="constrained")
    ax_latency, ax_ttft = fig.subplots(1, 2, sharex=True)
    styles = {"p50": "-", "p90": "--", "p99": ":"}
    for i, (name, runs) in enumerate(points.items()):
        color = f"C{i}"
        for ax, key in ((ax_latency, "latency_s"), (ax_ttft, "ttft_s")):
            for p, ls in styles.items():
                pairs = [(rate, s[key][p]) for rate, s in runs if s.get(key)]
                if not pairs:
                    continue
                ax.plot([r for r, _ in pairs], [v / MILLI for _, v in pairs], color=color, ls=ls,
                        marker=LINE_MARKERS[i % len(LINE_MARKERS)], ms=4, label=f"{name} {p}")
    for ax, what in ((ax_latency, "End-to-end latency"), (ax_ttft, "Time to first token")):
        ax.set_xlabel("Arrival rate (requests/s)")
        ax.set_ylabel(f"{what} (ms)")
        ax.set_yscale("log")
        ax.grid(True, color="0.9", lw=0.6)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Served latency against arrival rate", fontsize=12)
    return fig

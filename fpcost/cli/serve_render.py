"""``fpcost serve``'s output: a rich table (one column per server), JSON, or CSV (one row per
server, percentiles flattened as ``ttft_p50_s`` …)."""

from __future__ import annotations

import csv
import io
import json

from fpcost.costmodel.units import GIGA, MILLI

from .render import Column, _json_default, render_table

PERCENTILE_KEYS = ("ttft_s", "tpot_s", "latency_s")
CSV_KEYS = ("server", "num_requests", "num_completed", "num_rejected", "duration_s",
            "throughput_requests_per_s", "throughput_output_tokens_per_s", "mean_latency_s",
            "mean_ttft_s", "mean_requests_in_system", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s",
            "tpot_p50_s", "tpot_p90_s", "tpot_p99_s", "latency_p50_s", "latency_p90_s",
            "latency_p99_s", "slo_attainment", "kv_cache_utilization", "mean_batch_size",
            "num_preemptions", "num_iterations", "max_rate_requests_per_s", "num_kv_blocks",
            "mean_visual_tokens")


def _servers(payload: dict) -> dict[str, dict]:
    """name -> {summary, kv_cache, mean_visual_tokens?}, in the payload's order."""
    names = [n for n in ("unpruned", "pruned") if n in payload]
    if not names:
        return {"server": {"summary": payload["summary"], "kv_cache": payload["kv_cache"],
                           "mean_visual_tokens": payload["mean_visual_tokens"]}}
    return {n: payload[n] for n in names}


def serve_json(payload: dict) -> str:
    return json.dumps(payload, indent=2, allow_nan=False, default=_json_default) + "\n"


def _flat(name: str, entry: dict, payload: dict) -> dict:
    s = entry["summary"] or {}
    row = {"server": name, **{k: v for k, v in s.items() if not isinstance(v, (dict, list))}}
    for key in PERCENTILE_KEYS:
        for p, value in (s.get(key) or {}).items():
            row[f"{key[:-2]}_{p}_s"] = value
    row["slo_attainment"] = (s.get("slo") or {}).get("attainment")
    row["num_kv_blocks"] = entry["kv_cache"]["num_blocks"]
    row["mean_visual_tokens"] = entry.get("mean_visual_tokens")
    row["max_rate_requests_per_s"] = (payload.get("max_rate", {}).get(name) or {}).get(
        "max_rate_requests_per_s")
    return row


SPLIT_KEYS = ("tensor_parallel", "pipeline_parallel", "num_gpus")  # on more than one GPU


def serve_csv(payload: dict) -> str:
    """One row per server; on more than one GPU also the split (``SPLIT_KEYS``)."""
    split = payload.get("server") or {}
    several = split.get("num_gpus", 1) > 1
    keys = CSV_KEYS + (SPLIT_KEYS if several else ())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for name, entry in _servers(payload).items():
        row = _flat(name, entry, payload)
        if several:
            row.update({key: split[key] for key in SPLIT_KEYS})
        writer.writerow(row)
    return buffer.getvalue()


def _ms(value) -> str:
    return "—" if value is None else f"{value / MILLI:.1f}"


def _num(digits: int):
    return lambda value: "—" if value is None else f"{value:.{digits}f}"


ROWS = (  # (label, key in the flat row, formatter)
    ("Visual tokens per request (mean)", "mean_visual_tokens", _num(1)),
    ("KV-cache blocks (16 tokens)", "num_kv_blocks", str),
    ("Requests completed / submitted", None, None),
    ("Throughput (requests/s)", "throughput_requests_per_s", _num(3)),
    ("Throughput (output tokens/s)", "throughput_output_tokens_per_s", _num(1)),
    ("TTFT p50 / p90 / p99 (ms)", "ttft", None),
    ("TPOT p50 / p90 / p99 (ms)", "tpot", None),
    ("Latency p50 / p90 / p99 (ms)", "latency", None),
    ("Mean latency (ms)", "mean_latency_s", _ms),
    ("SLO attainment", "slo_attainment", _num(3)),
    ("Max rate meeting the SLOs (requests/s)", "max_rate_requests_per_s", _num(3)),
    ("Mean requests in system", "mean_requests_in_system", _num(2)),
    ("Mean batch size (requests / iteration)", "mean_batch_size", _num(2)),
    ("KV-cache utilisation (time-averaged)", "kv_cache_utilization", _num(3)),
    ("Preemptions", "num_preemptions", str),
    ("Simulated duration (s)", "duration_s", _num(2)),
)


def render_serve(payload: dict) -> None:
    servers = _servers(payload)
    flats = {name: _flat(name, entry, payload) for name, entry in servers.items()}
    rows = []
    for label, key, fmt in ROWS:
        if key in ("slo_attainment",) and "slo" not in (payload["summary"] or {}):
            continue
        if key == "max_rate_requests_per_s" and "max_rate" not in payload:
            continue
        if key == "mean_visual_tokens" and len(servers) == 1:
            continue
        row = {"what": label}
        for name, flat in flats.items():
            if key is None:
                row[name] = ("—" if flat.get("num_requests") is None
                             else f"{flat['num_completed']} / {flat['num_requests']}")
            elif key in ("ttft", "tpot", "latency"):
                row[name] = " / ".join(_ms(flat.get(f"{key}_{p}_s")) for p in ("p50", "p90", "p99"))
            else:
                value = flat.get(key)
                row[name] = "—" if value is None else fmt(value)
        rows.append(row)
    s = payload["settings"]
    rate = "" if s["rate"] is None else f", Poisson {s['rate']:.4g} requests/s"
    caption = (f"{payload['model']} on {payload['hardware']}, LLM {s['quant']}, "
               f"{s['num_requests']} requests ({s['source']}{rate}, seed {s['seed']}), "
               f"{s['text_tokens']} text + {s['output_tokens']} output tokens, FlashAttention "
               f"{'on' if s['flash_attention'] else 'off'}, max {s['max_num_seqs']} sequences, "
               f"{s['max_num_batched_tokens']} tokens per iteration, chunked prefill "
               f"{'on' if s['chunked_prefill'] else 'off'}; {s['scheduler']}. "
               f"summary = {s['summary_of']}.")
    for name, entry in servers.items():
        for item in (entry["summary"] or {}).get("rejected", [])[:5]:
            caption += f"\n{name}: request {item['request']} rejected: {item['reason']}"
    for name, found in payload.get("max_rate", {}).items():
        if found["max_rate_requests_per_s"] is None:
            caption += (f"\n{name}: no rate down to {found['trials'][-1]['rate']:.2g} requests/s "
                        f"met the SLOs for {found['target_attainment']:.0%} of requests (one "
                        "request alone misses them)")
    split = payload.get("server") or {}
    if split.get("num_gpus", 1) > 1:
        link = split["interconnect"]
        caption += (f"\n{split['num_gpus']} GPUs per server: tensor parallel "
                    f"{split['tensor_parallel']} x pipeline parallel {split['pipeline_parallel']} "
                    f"(layers per stage {', '.join(map(str, split['layers_per_stage']))}) over "
                    f"{link['kind']} at {link['bandwidth_bytes_per_s'] / GIGA:g} GB/s per "
                    f"direction; KV-cache blocks per GPU; {split['vision']}; pipeline: "
                    f"{split['pipeline']}.")
    for note in s["notes"]:
        caption += f"\n{note}"
    render_table(rows, [Column("what", "fpcost serve", justify="left"),
                        *(Column(name, name) for name in servers)], caption=caption)

"""The servers ``fpcost serve`` compares and the requests each receives.

One variant (``server``) without pruning options; with ``--keep-ratio`` or ``--tokens-from``
two, ``unpruned`` and ``pruned``, on the same arrival times: the pruned requests keep the
ratio of each request's visual tokens, or a kept count drawn per request (seeded, uniformly
over the file's images — per video for a video model) from the results file, its
selection costed with the file's own settings (as ``fpcost estimate --tokens-from``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.families import family_of
from fpcost.costmodel.parallel import SINGLE, Parallelism
from fpcost.costmodel.pipeline import make_workload
from fpcost.costmodel.pruning import selection_from_file
from fpcost.costmodel.serve.parallel import server_payload
from fpcost.costmodel.serve.requests import Request, poisson_requests, sample_indices
from fpcost.costmodel.serve.run import Server
from fpcost.costmodel.serve.search import max_rate
from fpcost.costmodel.serve.trace import parse_trace, trace_requests
from fpcost.costmodel.workload import Workload

from .options import read_tokens_document
from .tokens_from import _selection, check_geometry


@dataclass
class Variant:
    """One simulated server and its requests: Poisson over ``workloads`` (request i takes
    ``workloads[choices[i]]``; ``choices`` None: the first), or a trace's ``requests``."""

    name: str
    server: Server
    workloads: list[Workload]
    choices: object = None
    requests: list[Request] | None = None

    def requests_at(self, rate: float | None, num_requests: int, seed: int) -> list[Request]:
        if self.requests is not None:
            return self.requests
        return poisson_requests(self.workloads, rate, num_requests, seed, self.choices)


def _read_trace(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WorkloadError(f"--trace {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


@dataclass
class Scenario:
    model: object
    hardware: object
    settings: object
    server_settings: object
    variants: list[Variant]
    source: str
    num_requests: int
    seed: int
    text_tokens: int
    output_tokens: int
    notes: list[str]
    parallelism: Parallelism = SINGLE

    @classmethod
    def build(cls, model, hardware, settings, server, *, text_tokens, output_tokens, image_size,
              keep_ratio, trace, tokens_from, num_requests, seed, method=None,
              parallelism: Parallelism = SINGLE, frames: int | None = None) -> Scenario:
        notes: list[str] = []
        text_only = not family_of(model).has_vision
        if text_only:  # a text LLM server: no visual tokens, nothing to prune
            # (--image-size is refused earlier, by the CLI's own check of every model)
            for flag, value in (("--keep-ratio", keep_ratio), ("--tokens-from", tokens_from),
                                ("--method", method), ("--frames", frames)):
                if value is not None:
                    raise WorkloadError(f"{flag} needs a model with a vision tower; {model.name!r} "
                                        "is a text-only LLM config")
        for flag, value in (("--trace", trace), ("--tokens-from", tokens_from)):
            if frames is not None and value is not None:
                raise WorkloadError(f"--frames {frames} sets the Poisson requests' videos; {flag} "
                                    "requests carry their own visual tokens")
        plain = Server(model, hardware, settings, server, parallelism)
        pruner = plain
        if method not in (None, "freepruner"):  # freepruner: estimate's default selection
            chosen = selection_from_file(method, {}, None, family_of(model).tower_depth(model), 0)
            pruner = Server(model, hardware, replace(settings, selection=chosen.spec), server,
                            parallelism)
            notes.append(f"pruned server: {chosen.description}")
        if trace is not None:
            rows = parse_trace(_read_trace(trace), str(trace))
            base = trace_requests(rows, str(trace), model, text_tokens, output_tokens)
            variants = [Variant("unpruned" if keep_ratio else "server", plain, [], requests=base)]
            if keep_ratio is not None:
                pruned = trace_requests(rows, str(trace), model, text_tokens, output_tokens, keep_ratio)
                variants.append(Variant("pruned", pruner, [], requests=pruned))
            return cls(model, hardware, settings, server, variants, f"trace {trace}",
                       len(base), seed, text_tokens, output_tokens, notes, parallelism)
        unpruned = make_workload(model, text_tokens=text_tokens, image_size=image_size,
                                 output_tokens=output_tokens, frames=frames,
                                 visual_tokens=0 if text_only else None)
        if tokens_from is not None:
            variants = [Variant("unpruned", plain, [unpruned]),
                        _file_variant(model, hardware, settings, server, tokens_from, text_tokens,
                                      output_tokens, image_size, num_requests, seed, notes,
                                      parallelism)]
        elif keep_ratio is not None:
            pruned = make_workload(model, keep_ratio=keep_ratio, text_tokens=text_tokens,
                                   image_size=image_size, output_tokens=output_tokens,
                                   frames=frames)
            variants = [Variant("unpruned", plain, [unpruned]), Variant("pruned", pruner, [pruned])]
        else:
            variants = [Variant("server", plain, [unpruned])]
        return cls(model, hardware, settings, server, variants, "poisson", num_requests, seed,
                   text_tokens, output_tokens, notes, parallelism)

    @property
    def main(self) -> Variant:
        """The variant ``summary`` describes: the pruned server when there are two."""
        return self.variants[-1]

    def run(self, variant: Variant, rate, slo_ttft, slo_tpot):
        return variant.server.run(variant.requests_at(rate, self.num_requests, self.seed),
                                  slo_ttft, slo_tpot)

    def payload(self, rate, slo_ttft, slo_tpot, search, target) -> dict:
        runs, searches = {}, {}
        for variant in self.variants:
            if search:
                found = max_rate(lambda r, v=variant: self.run(v, r, slo_ttft, slo_tpot),
                                 rate if rate is not None else 1.0, target)
                searches[variant.name] = {
                    "max_rate_requests_per_s": found.max_rate_requests_per_s,
                    "target_attainment": found.target_attainment,
                    "trials": [{"rate": r, "attainment": a} for r, a in found.trials]}
                runs[variant.name] = found.run
            else:
                runs[variant.name] = self.run(variant, rate, slo_ttft, slo_tpot)
        main_rate = rate
        if search:
            main_rate = searches[self.main.name]["max_rate_requests_per_s"]
        payload = {
            "model": self.model.name,
            "hardware": self.hardware.name,
            "settings": self._settings(main_rate, slo_ttft, slo_tpot, search, target),
            "summary": runs[self.main.name].summary if runs[self.main.name] else None,
            "kv_cache": self.main.server.capacity.as_dict(),
            "mean_visual_tokens": _mean_visual(self.main),
            "server": server_payload(self.model, self.hardware, self.parallelism,
                                     self.main.server.capacity.pipeline_stage),
        }
        if len(self.variants) > 1:
            for variant in self.variants:
                run = runs[variant.name]
                payload[variant.name] = {
                    "mean_visual_tokens": _mean_visual(variant),
                    "kv_cache": variant.server.capacity.as_dict(),
                    "summary": run.summary if run else None}
        if search:
            payload["max_rate"] = searches
        return payload

    def rate_points(self, rates, slo_ttft, slo_tpot) -> dict[str, list[tuple[float, dict]]]:
        return {v.name: [(r, self.run(v, r, slo_ttft, slo_tpot).summary) for r in rates]
                for v in self.variants}

    def title(self) -> str:
        return (f"{self.model.name} on {self.hardware.name}, {self.settings.quant.label}, "
                f"{self.output_tokens} output tokens")

    def _settings(self, rate, slo_ttft, slo_tpot, search, target) -> dict:
        s = self.server_settings
        return {
            "source": self.source, "rate": rate if self.source == "poisson" else None,
            "num_requests": self.num_requests, "seed": self.seed,
            "text_tokens": self.text_tokens, "output_tokens": self.output_tokens,
            "quant": self.settings.quant.label, "accounting": self.settings.accounting.name,
            "flash_attention": self.settings.flash_attention,
            "max_num_seqs": s.max_num_seqs, "max_num_batched_tokens": s.max_num_batched_tokens,
            "chunked_prefill": s.chunked_prefill,
            "gpu_memory_utilization": s.gpu_memory_utilization,
            "block_size_tokens": s.block_size_tokens,
            "slo_ttft_s": slo_ttft, "slo_tpot_s": slo_tpot,
            "slo_target": target if search else None,
            "scheduler": "vLLM V1 style: running requests first, then FCFS admission; "
                         "preemption by recompute, newest first",
            "summary_of": self.main.name,
            "notes": self.notes,
        }


def _mean_visual(variant: Variant) -> float:
    """Mean visual tokens per request of the variant (the same at every rate)."""
    if variant.requests is not None:
        counts = [r.workload.num_visual_tokens for r in variant.requests]
    elif variant.choices is None:
        counts = [variant.workloads[0].num_visual_tokens]
    else:
        counts = [variant.workloads[int(c)].num_visual_tokens for c in variant.choices]
    return sum(counts) / len(counts)


def _file_variant(model, hardware, settings, server, path, text_tokens, output_tokens,
                  image_size, num_requests, seed, notes, parallelism=SINGLE) -> Variant:
    """The pruned server of ``--tokens-from``: one workload per image (per video)."""
    document = read_tokens_document(path)
    per_image = check_geometry(model, document, image_size)
    frames = model.num_frames
    groups = [document.images[i:i + frames] for i in range(0, len(document.images), frames)]
    cache: dict = {}
    chosen = _selection(model, document, groups[0], per_image, cache)
    descriptions = {_selection(model, document, g, per_image, cache).description for g in groups}
    if len(descriptions) > 1:
        notes.append("the file's images carry different selection settings; every pruned request "
                     f"is costed with the first's ({chosen.description})")
    notes.append(f"--tokens-from {document.path}: {len(groups)} "
                 f"{'videos' if frames > 1 else 'images'}, selection {chosen.description}")
    workloads = []
    for group in groups:
        kept = [row["num_kept"] for row in group]
        workloads.append(Workload(sum(kept), text_tokens, 1, output_tokens, image_size,
                                  tuple(kept) if frames > 1 else None))
    pruned_settings = replace(settings, selection=chosen.spec)
    server_ = Server(model, hardware, pruned_settings, server, parallelism)
    if not family_of(model).has_vision:  # check_geometry refuses these; kept for clarity
        raise WorkloadError(f"--tokens-from needs a vision model, not {model.name}")
    return Variant("pruned", server_, workloads, sample_indices(num_requests, len(workloads), seed))

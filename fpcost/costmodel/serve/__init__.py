"""``fpcost serve``'s simulator: a vLLM-style continuous-batching server whose iterations are
timed by fpcost's roofline (pure Python and numpy; no torch, click or rich).

- ``requests``: arrivals (Poisson, seeded) and per-request workloads; ``trace``: JSONL/CSV;
- ``capacity``: server settings and the KV cache in 16-token blocks;
- ``iteration``: one iteration's operators (``iteration_ops``) and their fast timing;
- ``scheduler``: the event loop (vLLM V1's scheduling); ``metrics``: the summary;
- ``search``: the highest arrival rate meeting the SLOs.
"""

from .capacity import KVCapacity, ServerSettings, kv_capacity
from .iteration import IterationBatch, IterationCost, PrefillChunk, iteration_ops
from .requests import Request, poisson_requests
from .run import ServeRun, serve
from .scheduler import SimulationResult, simulate

__all__ = ["IterationBatch", "IterationCost", "KVCapacity", "PrefillChunk", "Request", "ServeRun",
           "ServerSettings", "SimulationResult", "iteration_ops", "kv_capacity", "poisson_requests",
           "serve", "simulate"]

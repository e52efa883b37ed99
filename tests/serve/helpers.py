"""Shared builders for the serve tests: settings like the CLI's, and a stub iteration cost
that times every iteration at 1 s and records what it ran (for hand-checked schedules)."""

from fpcost.costmodel.accounting import get_accounting
from fpcost.costmodel.pipeline import PipelineSettings
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.serve.requests import Request
from fpcost.costmodel.workload import Workload


def settings_for(hardware, quant=None, flash_attention=True, accounting="fpcost"):
    return PipelineSettings(quant or QuantPlan(), get_accounting(accounting), flash_attention,
                            hardware.onchip_buffer_bytes)


class UnitCost:
    """Every iteration takes 1 s; ``batches`` records (decodes, context, chunks, vision)."""

    def __init__(self):
        self.batches = []

    def parts_time_s(self, num_decodes, decode_context, chunks, vision):
        self.batches.append((num_decodes, decode_context, tuple(chunks), tuple(vision)))
        return 1.0


def text_request(arrival, prompt, output):
    """A text-only request of ``prompt`` tokens generating ``output``."""
    return Request(float(arrival), Workload(0, prompt, 1, output))

"""fpcost: a roofline cost model of LLaVA-style multimodal models, with a real
freePruner visual-token pruning backend.

Importing this package is cheap: the cost model loads lazily and torch is never imported
from here (only ``fpcost.pruner`` imports torch).
"""

__version__ = "0.1.0"

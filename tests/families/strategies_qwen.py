"""Hypothesis strategies for the Qwen-VL family tests (kept beside them, as the pruner's are).

``qwen_grids``: lists of 1–3 patch grids (t = 1..3 temporal patches, h and w even, up to 80
patches a side: images up to 1120 px, and short videos) — what the tower runs in one batch.
"""

from hypothesis import strategies as st

from fpcost.costmodel.families.qwen_vl_layout import VisionGrid

even_sides = st.integers(1, 40).map(lambda n: 2 * n)
qwen_grid = st.builds(VisionGrid, st.integers(1, 3), even_sides, even_sides)
qwen_grids = st.lists(qwen_grid, min_size=1, max_size=3)

"""Model families: one group of modules per family, pure cost-model code (no torch).

Groundwork for the family plug-ins: ``qwen_vl_*`` hold everything fpcost knows about
Qwen2-VL and Qwen2.5-VL (the visual-token layout, the config reader, the vision tower's and
merger's operators, parameter counts, presets). Nothing here is wired into the pipeline yet.
"""

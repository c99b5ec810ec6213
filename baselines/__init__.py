"""Baseline distillation methods (random real subset, DM, MTT) as ddbench plugins.

Installed under the import name `ddbench_baselines` (folder `baselines/`): a top-level `baselines`
would clash with the unrelated PyPI package of that name.
"""

"""The role vocabularies, in one place at the bottom of the kernel: what a protocol setting can mean to the host
(`ddbench.api.Param(role=...)`), which `--eval-*` flag sets which of them, and what a method can be to the scores
(`ddbench.api.Method.role`). Plugins declare roles; the host reads them and names no plugin's keys or methods."""
from __future__ import annotations

# The roles a protocol setting can play. At most one key per protocol plays each role but SPEED.
IMPLEMENTATION = "implementation"  # which implementation computes the protocol (`--eval-impl`): speed, not accuracy
SPEED = "speed"  # any other setting that changes speed or memory only (threads, chunk sizes, batch of the test pass)
NETWORKS = "networks"  # how many networks are trained (`--eval-models`): a sample size, so runs are pooled
EPOCHS = "epochs"  # training length of each network (`--eval-epochs`): shown; the full-data reference ignores it
AUGMENTATION = "augmentation"  # the on/off switch (a bool) of training augmentation: the axis of the ARS score
# The arithmetic of the training and test passes (fp32, bf16): a setting that passed the protocol's equivalence
# test against the fp32 reference (docs/evaluation.md#precision) and so, like the implementation, names no
# different measurement. The precision a run used is recorded in its details.
PRECISION = "precision"
ROLES = (IMPLEMENTATION, SPEED, NETWORKS, EPOCHS, AUGMENTATION, PRECISION)
SINGLE_ROLES = (IMPLEMENTATION, NETWORKS, EPOCHS, AUGMENTATION, PRECISION)
# Settings of these roles do not change what an evaluation measures: runs that differ only there are comparable.
NOT_COMPARED = frozenset({IMPLEMENTATION, SPEED, NETWORKS, PRECISION})

# The `--eval-*` flags, one per role they set, in one table that the CLI, `resolve`, the reference commands and
# `compare` read: (role, flag, RunRequest field, argparse dest).
EVAL_FLAGS: tuple[tuple[str, str, str, str], ...] = (
    (NETWORKS, "--eval-models", "eval_networks", "eval_models"),
    (EPOCHS, "--eval-epochs", "eval_epochs", "eval_epochs"),
    (IMPLEMENTATION, "--eval-impl", "eval_impl", "eval_impl"),
)

# The roles a method can play (`Method.role`): the references the scores are measured against.
RANDOM_ROLE = "random-real"  # the random-real-subset reference (IOR)
FULL_ROLE = "full-data"  # the whole-training-set reference (HLR)
METHOD_ROLES = (RANDOM_ROLE, FULL_ROLE)

__all__ = ["IMPLEMENTATION", "SPEED", "NETWORKS", "EPOCHS", "AUGMENTATION", "PRECISION", "ROLES", "SINGLE_ROLES",
           "NOT_COMPARED", "EVAL_FLAGS", "RANDOM_ROLE", "FULL_ROLE", "METHOD_ROLES"]

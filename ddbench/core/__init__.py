"""The foundation: errors, atomic writes, seeds, the run record and its roles, statistics, the safe `.pt` reader,
and the value types the contracts exchange (params, samplers and policies, selection). Imports nothing of ddbench
but itself; every other package stands on it (tests/test_layers.py holds the order)."""

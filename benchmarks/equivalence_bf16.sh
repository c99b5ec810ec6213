#!/usr/bin/env bash
# The bf16 equivalence run of docs/evaluation.md#precision, resumable: the standard protocol's 1000 epochs, whole
# test set, random real IPC 1 and IPC 10 (seed 0), networks seeded (1000, i) in every variant. Each pair of
# networks takes the shared CPU lock on its own (two single-thread processes), so other heavy jobs interleave;
# each finished network is saved at once, and a rerun skips what is stored.
#   IPC 1:  the fp32 loop (reference) and bf16 (fast impl, micro-batches, bf16 autocast), networks 0-9 each
#   IPC 10: bf16 networks 0-9, against the fp32 loop networks 0-9 of the earlier CPU equivalence run
#           (benchmarks/results/equivalence-cpu-loop-{a,b}.json: same seeds, same set, same protocol)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOCK=${DDBENCH_STUDY_LOCK:-/tmp/ddbench-cpu.lock}
R=benchmarks/results
run() {  # ipc variant first last json
  for i in $(seq "$3" 2 "$4"); do
    flock "$LOCK" env OMP_NUM_THREADS=1 "$PY" benchmarks/bench_eval.py --equivalence 10 --equiv-ipc "$1" --epochs 1000 \
      --test-images 0 --equiv-impls "$2" --procs 2 --nets "$i-$((i + 1))" --json "$5"
    sleep 2  # let a waiting job take the lock
  done
}
run 1 loop 0 9 $R/equivalence-bf16-ipc1-loop.json
run 1 bf16 0 9 $R/equivalence-bf16-ipc1-bf16.json
run 10 bf16 0 9 $R/equivalence-bf16-ipc10-bf16.json
echo "== IPC 1"; "$PY" benchmarks/bench_eval.py --merge $R/equivalence-bf16-ipc1-loop.json,$R/equivalence-bf16-ipc1-bf16.json
echo "== IPC 10"; "$PY" benchmarks/bench_eval.py --merge $R/equivalence-cpu-loop-a.json,$R/equivalence-cpu-loop-b.json,$R/equivalence-bf16-ipc10-bf16.json

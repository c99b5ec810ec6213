#!/bin/bash
# docs/minmax.md#budgets-on-a-busy-machine: `--budget 10` runs of minmax-diffusion on a quiet machine and beside a
# process pinned to burn one core (taskset -c 0), generation only (--no-eval). Run it under the shared CPU lock:
#   flock /tmp/ddbench-cpu.lock bash benchmarks/busy_budget.sh OUT_DIR
# Prints each run's images per class, generation seconds and status (the set passed the host's budget checks).
set -u
OUT=${1:-/tmp/ddbench-busy}
DDBENCH=${DDBENCH:-ddbench}
run() { $DDBENCH run --method minmax-diffusion --budget 10 --seed "$1" --no-eval --out "$OUT" --no-progress --json \
          2> "$OUT.$2$1.err" | tail -1 | python3 -c "import json,sys; r=json.load(sys.stdin); \
print('$2 seed $1:', r['status'], r['images'], 'images =', r['images'] // 10 if r['images'] else 0, 'per class', r['error'] or '')"; }
mkdir -p "$OUT"
echo "quiet: $(uptime)"; run 7 quiet
taskset -c 0 python3 -c "while True: pass" & BURNER=$!
sleep 2
echo "busy: $(uptime)"; run 7 busy; run 8 busy
echo "busy end: $(uptime)"
kill $BURNER
run 8 quiet; echo "end: $(uptime)"

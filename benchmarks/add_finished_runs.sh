#!/usr/bin/env bash
# Stage (git add) the records of every finished benchmark run (a run directory with final.json)
# and the grids' reports; runs still training are left out, so their partial records never land.
#   bash benchmarks/add_finished_runs.sh && git commit -m "benchmark: results so far"
set -euo pipefail
cd "$(dirname "$0")/.."
for final in benchmarks/*/*/*/*/seed*/final.json; do
  [ -e "$final" ] && git add -- "$(dirname "$final")"
done
for out in benchmarks/*/results benchmarks/*/ablation_cpu; do
  [ -d "$out" ] && git add -- "$out"/*.csv "$out"/*.md "$out"/*.png "$out"/compare.json 2>/dev/null || true
done
git status --short -- benchmarks | grep -v '^??' || true

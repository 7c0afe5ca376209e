#!/usr/bin/env bash
# Issue 25's runs, one training process at a time, in priority order; resumable (dicc compare
# skips finished runs and resumes interrupted ones from their last checkpoint):
#   1. balanced_softmax IF=100 seed 0 + cRT                       (crt_parents.yaml)
#   2. the contrastive pilot, IF=100 seed 0: four variants + cRT  (contrastive.yaml)
#   3. the chosen variant (highest validation MCA of the pilot's 8 entries) at seeds 1, 2 (+ cRT)
#   4. balanced_softmax seeds 1, 2 + cRT; 5. dicc+bsm seeds 0-2 + cRT
#   6. IF=10: the chosen variant, balanced_softmax, dicc+bsm, seeds 0-2 (+ cRT)
#   7. the top two IF=100 entries (bsm+crt, the chosen variant and its +crt) at 20 epochs,
#      seeds 0-2 (long20.yaml; records and report in long20/, long20/summary.md)
# After every step: the finished derived runs of crt_parents/ (bsm+crt, dicc+bsm+crt) and every
# finished run of the chosen variant are copied (records only, no weights) into results/, the
# reports of the three grids and results/summary.md are rewritten and, with COMMIT=1 (default),
# the records are committed on the current branch.
#   nohup bash benchmarks/fer2013_lt/run_issue25.sh > /work/logs/grid.log 2>&1 &
# Environment: DATA (FER2013 root), PYTHON, THREADS (train.threads, default 1), COMMIT, WAIT_PID
# (wait for that process, e.g. a run started by hand, before training anything).
set -uo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-/work/shared/data/fer2013}
PYTHON=${PYTHON:-python}
THREADS=${THREADS:-1}
COMMIT=${COMMIT:-1}
B=benchmarks/fer2013_lt
export OMP_NUM_THREADS=$THREADS
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}

if [ -n "${WAIT_PID:-}" ]; then
  while kill -0 "$WAIT_PID" 2>/dev/null; do sleep 10; done
fi

say() { echo "[$(date -u +%H:%M:%S)] $*"; }

cpu_time() {  # CPU=user + system seconds of this shell's finished children so far (bash's `times`)
  times > "$B/logs/.times"  # called directly, never in $(...): a subshell's `times` counts its own children
  CPU=$(tail -1 "$B/logs/.times" | awk '{ split($1, a, /[ms]/); split($2, b, /[ms]/); printf "%.1f", a[1] * 60 + a[2] + b[1] * 60 + b[2] }')
}

# compare GRID LABEL SETTING SEED...: the trained entry LABEL and the entries derived from it
compare() {
  local grid=$1 label=$2 setting=$3 seed; shift 3
  local only=(--only "$label") d
  # and every entry made after it (the grid's `after: LABEL` entries: bsm+crt after balanced_softmax)
  for d in $("$PYTHON" -c 'import sys, yaml
print(" ".join(m["label"] for m in yaml.safe_load(open(sys.argv[1]))["methods"] if isinstance(m, dict) and m.get("after") == sys.argv[2]))' "$B/$grid.yaml" "$label"); do
    only+=(--only "$d")
  done
  for seed in "$@"; do
    local lab done_all=1  # every selected run finished already: nothing to do (no process, no report)
    for lab in "${only[@]}"; do
      [ "$lab" = --only ] && continue
      [ -f "$B/$grid/$setting/$lab/seed$seed/final.json" ] || done_all=0
    done
    [ "$done_all" = 1 ] && continue
    say "start $grid $setting/$label seed $seed"
    cpu_time; local t0=$CPU
    nice -n 19 "$PYTHON" -m dicc compare "$B/$grid.yaml" "${only[@]}" --setting "$setting" --seed "$seed" \
      --set "data.path=$DATA" --set "train.threads=$THREADS" --set train.progress=false --no-report \
      >> "$B/logs/issue25-$grid-${label//+/_}-$setting-seed$seed.log" 2>&1
    local rc=$?
    cpu_time
    say "done  $grid $setting/$label seed $seed rc=$rc cpu_s=$(awk -v a="$CPU" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')"
    land
  done
}

pilot_choice() {  # the pilot's chosen trained entry (the parent of the chosen entry when that is a +crt)
  "$PYTHON" - "$B/contrastive" <<'EOF'
import json, sys
from pathlib import Path
import yaml
labels = [m["label"] for m in yaml.safe_load(open("benchmarks/fer2013_lt/contrastive.yaml"))["methods"]]
best = None
for lab in labels:
    f = Path(sys.argv[1]) / "if100" / lab / "seed0" / "final.json"
    if f.is_file():
        v = json.loads(f.read_text())["best_val_mean_class_accuracy"]
        if best is None or v > best[0]:
            best = (v, lab)
print(best[1].removesuffix("+crt") if best else "")
EOF
}

chosen() {  # the choice, once the pilot is over (written by the driver after the pilot)
  cat "$B/contrastive/chosen.txt" 2> /dev/null || true
}

land() {
  local pick; pick=$(chosen)
  "$PYTHON" - "$pick" <<'EOF'
import shutil, sys
from pathlib import Path
B = Path("benchmarks/fer2013_lt")
pick = sys.argv[1]
todo = [(B / "crt_parents", lab) for lab in ("bsm+crt", "dicc+bsm+crt")]
if pick:
    todo += [(B / "contrastive", pick), (B / "contrastive", pick + "+crt")]
for src_root, lab in todo:
    for final in sorted(src_root.glob(f"*/{lab}/seed*/final.json")):
        src = final.parent
        dst = B / "results" / src.relative_to(src_root)
        if (dst / "final.json").is_file() and (dst / "final.json").read_bytes() == final.read_bytes():
            continue
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "*.png", "*.pt"))
        print(f"landed {src} -> {dst}", flush=True)
EOF
  local g  # not `grid`: land runs inside compare(), whose local `grid` it would overwrite
  for g in crt_parents contrastive long20 grid; do
    [ -d "$B/$g" ] || [ "$g" = grid ] || continue
    nice -n 19 "$PYTHON" -m dicc compare "$B/$g.yaml" --report-only --set "data.path=$DATA" > /dev/null 2>&1 \
      || say "report of $g.yaml failed"
  done
  nice -n 19 "$PYTHON" "$B/summarize.py" "$B/results/results.csv" > "$B/results/summary.md.tmp" 2> /dev/null \
    && mv "$B/results/summary.md.tmp" "$B/results/summary.md" || { rm -f "$B/results/summary.md.tmp"; say "summarize failed"; }
  nice -n 19 "$PYTHON" "$B/summarize.py" "$B/crt_parents/results.csv" --add "$B/contrastive/results.csv" \
    > "$B/issue25_summary.md.tmp" 2> /dev/null && mv "$B/issue25_summary.md.tmp" "$B/issue25_summary.md" \
    || { rm -f "$B/issue25_summary.md.tmp"; say "summarize (issue 25's runs) failed"; }
  if [ -f "$B/long20/results.csv" ]; then
    { nice -n 19 "$PYTHON" "$B/summarize.py" "$B/long20/results.csv" \
      && echo "## 20 epochs against 10, paired by seed (issue 25's runs)" && echo \
      && nice -n 19 "$PYTHON" "$B/summarize.py" "$B/crt_parents/results.csv" --add "$B/contrastive/results.csv" \
        --longer "$B/long20/results.csv"; } > "$B/long20/summary.md.tmp" 2> /dev/null \
      && mv "$B/long20/summary.md.tmp" "$B/long20/summary.md" \
      || { rm -f "$B/long20/summary.md.tmp"; say "summarize (long20) failed"; }
  fi
  [ "$COMMIT" = 1 ] || return 0
  (
    flock 9
    paths=()
    for final in $B/crt_parents/*/*/seed*/final.json $B/contrastive/*/*/seed*/final.json $B/long20/*/*/seed*/final.json \
      $B/results/*/*/seed*/final.json; do
      [ -e "$final" ] && paths+=("$(dirname "$final")")
    done
    [ -f "$B/issue25_summary.md" ] && paths+=("$B/issue25_summary.md")
    for out in $B/crt_parents $B/contrastive $B/long20 $B/results; do
      for f in "$out"/chosen.txt "$out"/*.csv "$out"/*.md "$out"/*.png "$out"/compare.json; do [ -e "$f" ] && paths+=("$f"); done
    done
    git add -- "${paths[@]}" 2> /dev/null
    if ! git diff --cached --quiet -- "${paths[@]}"; then
      git commit -q -m "fer2013_lt issue 25: finished runs' records and reports ($(date -u +%H:%M) UTC)" -- "${paths[@]}" \
        && say "committed $(git rev-parse --short HEAD)"
    fi
  ) 9> /tmp/issue25-git.lock
}

mkdir -p "$B/logs"
say "issue 25 driver, pid $$"
compare crt_parents balanced_softmax if100 0
for v in dicc+con_sbcl dicc+con_median dicc+con_sbcl_w0.1 dicc+con_sbcl_t0.07; do
  compare contrastive "$v" if100 0
done
[ -s "$B/contrastive/chosen.txt" ] || pilot_choice > "$B/contrastive/chosen.txt"
pick=$(chosen)
say "pilot's choice: ${pick:-none}"
land
[ -n "$pick" ] && compare contrastive "$pick" if100 1 2
compare crt_parents balanced_softmax if100 1 2
compare crt_parents dicc+bsm if100 0 1 2
[ -n "$pick" ] && compare contrastive "$pick" if10 0 1 2
compare crt_parents balanced_softmax if10 0 1 2
compare crt_parents dicc+bsm if10 0 1 2
compare long20 balanced_softmax if100 0 1 2
[ -n "$pick" ] && compare long20 "$pick" if100 0 1 2
say "all done"

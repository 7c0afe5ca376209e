#!/usr/bin/env bash
# The order this session ran the grid in (resumable; run again to continue):
# first the IF=100 methods that had no result yet, then IF=10, then the rest of IF=100.
#   bash benchmarks/fer2013_lt/run_stages.sh PATH/fer2013 > benchmarks/fer2013_lt/logs/stages.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: run_stages.sh PATH/fer2013}
RUN="python benchmarks/fer2013_lt/run_parallel.py --data $DATA --workers 2 --skip-ablation --set train.threads=1"
$RUN --setting if100 --only ce+posthoc_la --only reweight --only resample --only focal --only ldam_drw
$RUN --setting if10
$RUN

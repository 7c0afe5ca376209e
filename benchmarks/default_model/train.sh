#!/usr/bin/env bash
# The bundled model, end to end (resumable: run it again to continue where it stopped).
#   bash benchmarks/default_model/train.sh PATH/fer2013 [THREADS]
# 1. pilot.yaml: the recipe's augmentation and imbalance method, chosen on the validation hold-out
# 2. the long run with the chosen recipe (configs/fer2013-default-model.yaml + the choice)
# 3. choose.py: post-hoc logit adjustment and test-time augmentation, chosen on the same hold-out
# 4. package.py: the shipped file (dicc/assets/default_model.pt) and its model card
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: train.sh PATH/fer2013 [THREADS]}
THREADS=${2:-2}
HERE=benchmarks/default_model
dicc compare $HERE/pilot.yaml --set data.path="$DATA" --set train.threads="$THREADS" --set train.progress=false
python $HERE/choose.py pilot --pilot $HERE/pilot --out $HERE/recipe.json
RUN=$HERE/run
if [ -f $RUN/checkpoints/last.pt ] && [ ! -f $RUN/final.json ]; then
  dicc train --out $RUN --resume --set train.threads="$THREADS" --no-progress
elif [ ! -f $RUN/final.json ]; then
  dicc train -c configs/fer2013-default-model.yaml --data "$DATA" --out $RUN --no-progress \
    --set train.threads="$THREADS" $(python $HERE/choose.py overrides --recipe $HERE/recipe.json)
fi
python $HERE/choose.py posthoc --run $RUN --out $HERE/selection.json
python $HERE/package.py --run $RUN --selection $HERE/selection.json --data "$DATA"

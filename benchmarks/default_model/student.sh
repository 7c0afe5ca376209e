#!/usr/bin/env bash
# The bundled model, second version: a single-view student distilled from stronger teachers
# (resumable: run it again to continue where it stopped).
#   bash benchmarks/default_model/student.sh PATH/fer2013 [THREADS]
#   TEACHERS='[benchmarks/default_model/teachers/prev_w24_basic.pt]' EPOCHS=20 bash ... (the teachers
#   given: steps 1-2 skipped); STUDENT=DIR (default benchmarks/default_model/student), TARGETS=augmented
#   (the teachers score every augmented batch), NO_PACKAGE=1 (stop after choosing tau),
#   WIDTH=32 INIT=null LR=0.05 (a student of another width, from scratch: INIT is the checkpoint it
#   starts from, default the previous bundled model, which only fits width 24)
# 1. the teacher: vgg_fer width 48, the strong augmentation, CE, 80 epochs (teacher_sittings.log
#    lists each sitting's command)
# 2. choose.py teachers: which set of {the width-48 teacher, the previous bundled model} the
#    student learns from, on the validation hold-out (their 10-crop probabilities)
# 3. the student: vgg_fer width 24 from the previous bundled model's backbone, distilled from the
#    chosen teachers' 10-crop probabilities on every training image (distill.*)
# 4. choose.py posthoc --tta none: the student's post-hoc tau (one view: the fast default)
# 5. package.py: the .pt, the ONNX graph (int8 if it keeps validation accuracy within 0.3 points)
#    and the model card
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: student.sh PATH/fer2013 [THREADS]}
THREADS=${2:-2}
EPOCHS=${EPOCHS:-30}
HERE=benchmarks/default_model
TEACHER=$HERE/teacher_w48_strong
PREV=$HERE/teachers/prev_w24_basic.pt          # the bundled model of commit 0bbc2a9 (40 epochs, CE)
mkdir -p $HERE/teachers
[ -f $PREV ] || git show 0bbc2a9:src/dicc/assets/default_model.pt > $PREV

if [ -n "${TEACHERS:-}" ]; then
  echo "teachers given: $TEACHERS (the width-48 teacher and the choice between teachers skipped)"
else
  if [ -f $TEACHER/checkpoints/last.pt ] && [ ! -f $TEACHER/final.json ]; then
    dicc train --out $TEACHER --resume --no-progress --set train.threads="$THREADS"
  elif [ ! -f $TEACHER/final.json ]; then
    dicc train -c configs/fer2013-default-model.yaml --data "$DATA" --out $TEACHER --no-progress \
      --set train.threads="$THREADS" --set model.width=48 --set train.epochs=80
  fi
  [ -f $HERE/teachers.json ] || python $HERE/choose.py teachers --data "$DATA" \
    --member w48=$TEACHER --member prev=$PREV --out $HERE/teachers.json
  TEACHERS=$(python -c "import json; print('[' + ','.join(json.load(open('$HERE/teachers.json'))['teachers']) + ']')")
fi

STUDENT=${STUDENT:-$HERE/student}
TARGETS=${TARGETS:-images}      # distill.targets: images (cached, 10 crops) or augmented (every batch)
WIDTH=${WIDTH:-24}
INIT=${INIT:-$PREV}             # model.pretrained ("null": from scratch)
LR=${LR:-0.01}
if [ -f $STUDENT/checkpoints/last.pt ] && [ ! -f $STUDENT/final.json ]; then
  dicc train --out $STUDENT --resume --no-progress --set train.threads="$THREADS"
elif [ ! -f $STUDENT/final.json ]; then
  dicc train -c configs/fer2013-default-model.yaml --data "$DATA" --out $STUDENT --no-progress \
    --set train.threads="$THREADS" --set method.name=ce \
    --set augment.rotate=0 --set augment.scale=0 --set augment.erase=0 \
    --set model.width="$WIDTH" --set model.pretrained="$INIT" --set optim.lr="$LR" --set train.epochs="$EPOCHS" \
    --set "distill.teacher=$TEACHERS" --set distill.tta=crops --set distill.targets="$TARGETS" \
    --set distill.temperature=2 --set distill.weight=0.7
fi
python $HERE/choose.py posthoc --run $STUDENT --tta none --out $STUDENT/selection.json
[ -n "${NO_PACKAGE:-}" ] || python $HERE/package.py --run $STUDENT --selection $STUDENT/selection.json --data "$DATA"

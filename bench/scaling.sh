#!/usr/bin/env bash
# The paper's Figure 3 at small scale (issue 16): four AR shapes and one BERT run, each
# trained for the same number of tokens (STEPS x 32 images x 196 pixels), then probed
# layer by layer on a fixed subset (the first PROBE_TRAIN=10000 training and PROBE_TEST=5000
# test images); `igpt scaling` writes the table and draws probe accuracy against
# validation bits/dim and accuracy by relative depth (lane all does it at the end).
#   bench/scaling.sh FM_DIR OUT_DIR [STEPS] [lane]
# lane: all (default, one after another), a (8x256 AR) or b (the others), so two
# single-thread lanes can share a 2-core machine (then run `igpt scaling` by hand, as
# in the README). IGPT overrides the binary. A run interrupted resumes from its checkpoint.
set -euo pipefail
fm=${1:?usage: bench/scaling.sh FM_DIR OUT_DIR [STEPS] [lane]}
out=${2:?usage: bench/scaling.sh FM_DIR OUT_DIR [STEPS] [lane]}
steps=${3:-800}
lane=${4:-all}
igpt=${IGPT:-target/release/igpt}
probe_train=${PROBE_TRAIN:-10000}
probe_test=${PROBE_TEST:-5000}
mkdir -p "$out"
[ -f "$out/fm16.pal" ] || "$igpt" palette fit --data "$fm" --k 16 --side 14 --out "$out/fm16.pal"

run() { # name objective layers width heads
  local name=$1 obj=$2 l=$3 w=$4 h=$5 dir=$out/$1
  if [ ! -f "$dir/done" ]; then
    local resume=()
    [ -f "$dir/checkpoint.safetensors" ] && resume=(--resume)
    "$igpt" pretrain --data "$fm" --palette "$out/fm16.pal" --objective "$obj" \
      --layers "$l" --width "$w" --heads "$h" --side 14 --steps "$steps" --batch 32 \
      --lr 2e-3 --warmup 100 --eval-every 200 --val-images 1000 --seed 0 --threads 1 \
      --out "$dir" "${resume[@]}"
    touch "$dir/done"
  fi
  [ -f "$dir/probe/probe.json" ] || "$igpt" probe --checkpoint "$dir/checkpoint.safetensors" \
    --data "$fm" --train-images "$probe_train" --test-images "$probe_test" --threads 1 \
    --out "$dir/probe"
}

if [ "$lane" = all ] || [ "$lane" = b ]; then
  run ar-4x64 ar 4 64 4
  run ar-4x128 ar 4 128 4
  run ar-6x192 ar 6 192 6
  run bert-6x192 bert 6 192 6
fi
if [ "$lane" = all ] || [ "$lane" = a ]; then
  run ar-8x256 ar 8 256 8
fi
if [ "$lane" = all ]; then
  "$igpt" scaling --runs "$out"/ar-4x64 "$out"/ar-4x128 "$out"/ar-6x192 "$out"/ar-8x256 \
    "$out"/bert-6x192 --out "$out/report"
fi

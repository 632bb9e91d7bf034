#!/usr/bin/env bash
# Two igpt binaries side by side in one run: `bench train` (shapes a and b of compare.sh,
# 1 and 2 threads) and `bench infer` (the committed firmware model), alternating the
# binaries in every round so both see the same machine load.
#   bash bench/side-by-side.sh OLD_BINARY NEW_BINARY [ROUNDS]
# Prints one line per measurement: round, binary, what, figure.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
cd "$(dirname "$0")/.."
a=(--layers 4 --width 128 --heads 4 --side 16 --vocab 512 --batch 8 --steps 20)
b=(--layers 8 --width 256 --heads 8 --side 28 --vocab 16 --batch 4 --steps 6)
model=firmware-examples/models/fm-fw.igpt
for r in $(seq 1 "$rounds"); do
  for bin in "$old" "$new"; do
    name=$([ "$bin" = "$old" ] && echo old || echo new)
    for t in 1 2; do
      for shape in a b; do
        if [ $shape = a ]; then args=("${a[@]}"); else args=("${b[@]}"); fi
        v=$("$bin" bench train "${args[@]}" --threads $t 2>/dev/null | sed -n 's/^tokens_per_s=//p')
        echo "round $r $name train shape $shape threads $t tokens/s $v"
      done
    done
    v=$("$bin" bench infer --model $model --images 64 2>/dev/null | tr "\n" " ")
    echo "round $r $name infer: $v"
  done
done

#!/usr/bin/env bash
# Training throughput, igpt (dfdx + fused kernels) against PyTorch, side by side in one
# run, for the two shapes of the CPU-speed issue at 1 and 2 threads.
#   bench/compare.sh [STEPS]          (run from the repository root)
# Needs the release build (cargo build --release -p igpt) and bench/.venv (bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-10}
igpt=target/release/igpt
py=${TORCH_PYTHON:-bench/.venv/bin/python}
[ -x "$igpt" ] || { echo "build first: cargo build --release -p igpt" >&2; exit 1; }
[ -x "$py" ] || { echo "no PyTorch at $py: see bench/README.md" >&2; exit 1; }
configs=(
  "a --layers 4 --width 128 --heads 4 --side 16 --batch 8 --vocab 512"
  "b --layers 8 --width 256 --heads 8 --side 28 --batch 4 --vocab 16"
)
printf '%-7s %-7s %12s %12s %7s\n' config threads igpt torch ratio
for c in "${configs[@]}"; do
  name=${c%% *}; args=${c#* }
  for t in 1 2; do
    # shellcheck disable=SC2086
    ours=$("$igpt" bench train $args --steps "$steps" --threads "$t" | sed -n 's/^tokens_per_s=//p')
    # shellcheck disable=SC2086
    theirs=$(OMP_NUM_THREADS=$t "$py" bench/torch_train.py $args --steps "$steps" --threads "$t" | sed -n 's/^tokens_per_s=//p')
    printf '%-7s %-7s %12.1f %12.1f %7.2f\n' "$name" "$t" "$ours" "$theirs" "$(echo "$ours / $theirs" | bc -l)"
  done
done

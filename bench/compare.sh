#!/usr/bin/env bash
# Training throughput, igpt (dfdx + fused kernels) against PyTorch, side by side in one
# run, for the two shapes of the CPU-speed issue at 1 and 2 threads.
#   bench/compare.sh [STEPS]          (run from the repository root)
#   ISA=avx2 bench/compare.sh [STEPS] (both sides held to AVX2 + FMA on an AVX-512 CPU)
# Needs the release build (cargo build --release -p igpt) and bench/.venv (bench/README.md);
# ISA=avx2 needs the build without AVX-512 code:
#   CARGO_TARGET_DIR=target/avx2 cargo build --release -p igpt --no-default-features
# and holds PyTorch to AVX2 with ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS and
# ONEDNN_MAX_CPU_ISA. Each side prints the instruction set it ran.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-10}
isa=${ISA:-native}
torch_env=()
case $isa in
  native) igpt=${IGPT:-target/release/igpt} ;;
  avx2)
    igpt=${IGPT:-target/avx2/release/igpt}
    torch_env=(ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2)
    ;;
  *) echo "ISA=$isa: want native or avx2" >&2; exit 1 ;;
esac
py=${TORCH_PYTHON:-bench/.venv/bin/python}
[ -x "$igpt" ] || { echo "no $igpt: build it first (see the top of this script)" >&2; exit 1; }
[ -x "$py" ] || { echo "no PyTorch at $py: see bench/README.md" >&2; exit 1; }
configs=(
  "a --layers 4 --width 128 --heads 4 --side 16 --batch 8 --vocab 512"
  "b --layers 8 --width 256 --heads 8 --side 28 --batch 4 --vocab 16"
)
echo "igpt: $("$igpt" bench train --steps 1 --threads 1 | sed -n 's/^training_isa=//p')"
echo "torch: $(env "${torch_env[@]}" "$py" bench/torch_train.py --steps 1 | sed -n 's/^cpu_capability=//p')"
printf '%-7s %-7s %12s %12s %7s\n' config threads igpt torch ratio
for c in "${configs[@]}"; do
  name=${c%% *}; args=${c#* }
  for t in 1 2; do
    # shellcheck disable=SC2086
    ours=$("$igpt" bench train $args --steps "$steps" --threads "$t" | sed -n 's/^tokens_per_s=//p')
    # shellcheck disable=SC2086
    theirs=$(env "${torch_env[@]}" OMP_NUM_THREADS=$t "$py" bench/torch_train.py $args --steps "$steps" --threads "$t" | sed -n 's/^tokens_per_s=//p')
    printf '%-7s %-7s %12.1f %12.1f %7.2f\n' "$name" "$t" "$ours" "$theirs" "$(echo "$ours / $theirs" | bc -l)"
  done
done

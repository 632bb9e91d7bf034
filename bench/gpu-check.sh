#!/usr/bin/env bash
# bench/gpu-check.sh: igpt on dfdx's CUDA device, checked on a machine with an NVIDIA GPU
# (written for an H200 with a CUDA 13.0 driver, no package registry and no Rust there).
#
#   bench/gpu-check.sh build      HERE (x86-64, crates.io and PyPI reachable): builds the
#                                 CUDA binary and lays out bench/gpu/ to carry (~40 MB)
#   bench/gpu-check.sh            THERE, from the repository root, with bench/gpu/ carried:
#                                 the checks below, within about 8 minutes
#   bench/gpu-check.sh --dry-run  here, no GPU: the run half on the CPU build
#                                 (target/release/igpt, --device cpu, a tiny model), to
#                                 test this script's logic
#
# What the run does:
#   0. nvidia-smi; finds libcuda.so.1, libnvrtc.so.13 (+ builtins), libcublas.so.13 and
#      libcublasLt.so.13 (the driver folder, /usr/local/cuda*, the NVIDIA pip wheels of
#      any python3 there, $IGPT_CUDA_LIBS=DIR:DIR) and puts them on LD_LIBRARY_PATH; `ldd` must
#      find every library; recreates the header folders the binary has baked in (below)
#      and compiles dfdx's run-time kernels with NVRTC (bench/nvrtc-check.py).
#   a. Parity: `igpt bench parity --device cuda` on the HF fixtures: the CUDA forward pass
#      against HF's hidden states, probe features and logits (max abs diff <= 1e-4, the
#      f32 tolerance of tests/tests/hf_crosscheck.rs), CUDA logits against the CPU
#      reference path (<= 1e-4), the AR loss (<= 2e-5 nats) and every parameter gradient
#      (max abs diff <= 1e-4 of the tensor's largest |gradient|) against the CPU.
#   b. Every --device command end to end on a tiny model and 20 CIFAR images (carried):
#      pretrain (4 steps; its train and validation bits/dim must equal the CPU run's
#      within 5e-3: a smoke test; AdamW steps amplify f32 rounding), probe,
#      finetune and sample on the device.
#   c. Peak rates measured with PyTorch where python3 has it: an 8192^3 matmul in f32
#      (TF32 off) and in bf16.
#   d. Throughput: `igpt bench train --device cuda --preset S` (iGPT-S: 24 layers, width
#      512, 8 heads, 32x32 = 1024 tokens, k 512) at batch 8, 16, 32, 64 ($IGPT_BATCHES),
#      stopping at the first that fails (out of GPU memory); tokens/s, model TFLOP/s and
#      MFU.
#   e. Where the time goes, where Nsight Compute works: `ncu` times every kernel of one
#      training step at batch 8; kernels are grouped into cuBLAS and dfdx's own, and
#      their sum is set against the step's wall time (the rest: launch gaps, host syncs).
#
# FLOPs: 6·N per token (N: every parameter that multiplies, i.e. all but the embedding
# tables) plus attention 12·L·T·d (QK^T and AV, forward and backward, over the full T x T
# scores as dfdx computes them); `igpt bench train` prints both. MFU = model FLOP/s /
# peak. dfdx trains in f32 through cuBLAS sgemm (no TF32: dfdx sets no cuBLAS math
# mode), so the peak to hold it against is the f32 one; the bf16 MFU is printed to show
# the distance to a bf16 trainer. H200 SXM peaks from NVIDIA's H200 datasheet
# (nvidia.com/en-us/data-center/h200): FP32 67 TFLOP/s; TF32 Tensor Core 989 and BF16
# 1,979 TFLOP/s *with sparsity*, i.e. about 494 and 989 dense.
PEAK_FP32=67
PEAK_TF32=494
PEAK_BF16=989
#
# Building (`build`): bench/cuda-env.sh (IGPT_CUDA_LINK=1) installs nvcc, the headers,
# libnvrtc and cuBLAS 13.0 from PyPI and a libcuda.so stub for the linker; the binary is
# built with CUDA_ROOT=$BAKE/root and CARGO_TARGET_DIR=$BAKE/target, BAKE=/tmp/igpt-cuda
# ($IGPT_CUDA_BAKE), for PTX sm_90 ($IGPT_CUDA_COMPUTE_CAP=9.0). The binary is linked to
# libcuda.so.1, libnvrtc.so.13, libcublas.so.13 and libcublasLt.so.13: it needs them to
# start at all, so it is a separate binary from the CPU build.
#
# Paths baked in: dfdx compiles its reshape kernel (used for every permuted-then-reshaped
# tensor, e.g. the attention heads) and its concat/stack/to_dtype kernels at run time with
# NVRTC, with `#include "cuda_utils.cuh"` (-> cuda_fp16.h) and the include paths
# env!("CUDA_INCLUDE_DIR") = $CUDA_ROOT/include and env!("OUT_DIR") = dfdx's build
# folder, absolute paths fixed at build time; a missing header panics in dfdx. The build
# therefore puts dfdx's .cuh files into $BAKE/root/include beside the CUDA headers (so
# that folder alone suffices), records both paths in bench/gpu/baked.env and checks
# that the binary holds them; the run recreates both folders from bench/gpu/include
# (the CUDA 13.0 headers without cccl, plus dfdx's .cuh) before anything else.
#
# Whether cudarc 0.9 (CUDA 11.8 driver-API bindings) works on a CUDA 13 driver is what
# step 0 and the first CUDA call find out; a device that fails to start prints
# "cannot initialise CUDA device 0: <driver error>" with a diagnosis.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

G=bench/gpu
BAKE=${IGPT_CUDA_BAKE:-/tmp/igpt-cuda}
step() { printf '\n== %s (%ds)\n' "$*" "$SECONDS"; }
die() { echo "gpu-check: $*" >&2; exit 1; }

# ---------------------------------------------------------------- build (here) -------
build() {
  set -e
  export IGPT_CUDA_LINK=1 IGPT_CUDA_ROOT=$BAKE/root
  mkdir -p "$BAKE/root/include"
  # shellcheck source=bench/cuda-env.sh
  source bench/cuda-env.sh
  local dfdx
  dfdx=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name 'dfdx-0.13.*' | sort -V | tail -n 1)
  [ -n "$dfdx" ] || { cargo fetch -q; dfdx=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name 'dfdx-0.13.*' | sort -V | tail -n 1); }
  [ -n "$dfdx" ] || die "dfdx 0.13's sources not found"
  # The baked include folder: the CUDA headers (links) and dfdx's .cuh files.
  local f
  for f in "$IGPT_CUDA_PREFIX"/include/*; do ln -sfn "$f" "$BAKE/root/include/"; done
  cp "$dfdx"/src/tensor_ops/utilities/*.cuh "$BAKE/root/include/"
  step "cargo build --release -p igpt --features cuda (target $BAKE/target)"
  CARGO_TARGET_DIR=$BAKE/target cargo build --release -p igpt --features cuda
  local bin=$BAKE/target/release/igpt out_dir=""
  grep -qaF "$BAKE/root/include" "$bin" ||
    die "$bin does not hold $BAKE/root/include: a stale dfdx build; rm -rf $BAKE/target and rerun"
  for f in "$BAKE"/target/release/build/dfdx-*/out; do
    if [ -f "$f/cuda_utils.cuh" ] && grep -qaF "$f" "$bin"; then out_dir=$f; fi
  done
  [ -n "$out_dir" ] || die "no dfdx OUT_DIR of $BAKE/target is baked into $bin"
  step "bench/gpu"
  rm -rf "$G"
  mkdir -p "$G/kernels" "$G/fixtures"
  cp "$bin" "$G/igpt"
  strip --strip-debug "$G/igpt" 2>/dev/null || true
  cp -rL "$IGPT_CUDA_PREFIX/include" "$G/include"
  rm -rf "$G/include/cccl"
  cp "$dfdx"/src/tensor_ops/utilities/*.cuh "$G/include/"
  python3 - "$dfdx" "$G/kernels" <<'EOF'
import pathlib, re, sys
src, out = pathlib.Path(sys.argv[1]) / "src/tensor_ops", pathlib.Path(sys.argv[2])
for op in ["reshape_to", "concat", "stack", "concat_along", "to_dtype"]:
    text = (src / op / "cuda_kernel.rs").read_text()
    for name, body in re.findall(r'const (\w+): &str = "(.*?)";', text, re.S):
        body = body.replace('\\"', '"')
        for t in ["$Ty", "$Src", "$Dst", "$T"]:
            body = body.replace(t, "float")
        (out / f"{op}_{name.lower()}.cu").write_text(body)
EOF
  local fx=${IGPT_HF_FIXTURES:-tests/fixtures/hf-imagegpt}
  cp "$fx"/*.json "$fx"/*.safetensors "$G/fixtures/"
  mkdir -p "$G/data"
  cp data/cifar10-sample/test_batch.bin "$G/data/test_batch.bin"
  cp data/cifar10-sample/test_batch.bin "$G/data/data_batch_1.bin"
  cat >"$G/baked.env" <<EOF
# Written by bench/gpu-check.sh build: absolute paths the CUDA igpt binary holds.
IGPT_BAKED_INCLUDE=$BAKE/root/include
IGPT_BAKED_OUT_DIR=$out_dir
IGPT_CUDA_ARCH=sm_${CUDA_COMPUTE_CAP}
IGPT_BUILT="$(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null)"
EOF
  step "NVRTC compiles dfdx's run-time kernels with the carried headers alone"
  LD_LIBRARY_PATH=$IGPT_CUDA_PREFIX/lib python3 bench/nvrtc-check.py \
    "$IGPT_CUDA_PREFIX/lib/libnvrtc.so.13" "$G/kernels" "sm_$CUDA_COMPUTE_CAP" "$G/include" /nonexistent
  step "done"
  readelf -d "$G/igpt" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  needs \1/p'
  du -sh "$G" "$G/igpt"
  echo "carry $G to the GPU machine and run bench/gpu-check.sh there"
}

# ------------------------------------------------------------ run (GPU machine) ------
find_lib() { # NAME-GLOB DIR... -> first matching file
  local pat=$1 d f
  shift
  for d in "$@"; do
    for f in "$d"/$pat; do [ -e "$f" ] && { echo "$f"; return 0; }; done
  done
  return 1
}

run() {
  local dry=$1 bin dev model batches steps fixtures data tmp
  tmp=$(mktemp -d)
  if [ "$dry" = 1 ]; then
    bin=target/release/igpt dev=cpu
    [ -x "$bin" ] || die "dry run: build the CPU binary first (cargo build --release -p igpt)"
    model="--layers 2 --width 64 --heads 4 --side 8 --vocab 16"
    batches=${IGPT_BATCHES:-2 4}
    steps=${IGPT_STEPS:-2}
    fixtures=${IGPT_HF_FIXTURES:-tests/fixtures/hf-imagegpt}
    data=$tmp/data
    mkdir -p "$data"
    cp data/cifar10-sample/test_batch.bin "$data/test_batch.bin"
    cp data/cifar10-sample/test_batch.bin "$data/data_batch_1.bin"
    echo "gpu-check: DRY RUN on the CPU ($bin, --device cpu, a tiny model): tests this script, measures nothing"
  else
    bin=$G/igpt dev=cuda
    [ -x "$bin" ] || die "no $bin: run 'bench/gpu-check.sh build' on the build machine and carry bench/gpu"
    model="--preset S"
    batches=${IGPT_BATCHES:-8 16 32 64}
    steps=${IGPT_STEPS:-5}
    fixtures=$G/fixtures
    data=$G/data
  fi

  step "0. GPU, libraries, NVRTC headers"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true
  else
    echo "no nvidia-smi on PATH"
  fi
  if [ "$dry" = 0 ]; then
    # shellcheck source=/dev/null
    . "$G/baked.env"
    echo "binary built $IGPT_BUILT for $IGPT_CUDA_ARCH"
    local dirs=() d py
    [ -n "${IGPT_CUDA_LIBS:-}" ] && IFS=: read -ra dirs <<<"$IGPT_CUDA_LIBS"
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu \
             /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
      [ -d "$d" ] && dirs+=("$d")
    done
    for py in python3 /opt/*/.venv/bin/python3; do
      command -v "$py" >/dev/null || continue
      d=$("$py" -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null) || continue
      while read -r d; do
        for f in "$d"/nvidia/cu13/lib "$d"/nvidia/*/lib; do [ -d "$f" ] && dirs+=("$f"); done
      done <<<"$d"
    done
    local need=(libcuda.so.1 libnvrtc.so.13 'libnvrtc-builtins.so.13*' libcublas.so.13 libcublasLt.so.13)
    local ld="" lib n missing=0
    for n in "${need[@]}"; do
      if lib=$(find_lib "$n" "${dirs[@]}"); then
        echo "  $n: $lib"
        case ":$ld:" in *":$(dirname "$lib"):"*) ;; *) ld="$ld:$(dirname "$lib")" ;; esac
      else
        echo "  $n: NOT FOUND (searched ${dirs[*]}; set IGPT_CUDA_LIBS=DIR[:DIR])"
        missing=1
      fi
    done
    export LD_LIBRARY_PATH="${ld#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    local lddout
    lddout=$(ldd "$bin" 2>&1)
    if grep -q "not found" <<<"$lddout"; then
      grep "not found" <<<"$lddout"
      die "the binary cannot start: libraries missing (above)"
    fi
    [ "$missing" = 0 ] || echo "gpu-check: some libraries were not found, but ldd resolves the binary's own"
    # The folders the binary's NVRTC compiles read (see the header).
    for d in "$IGPT_BAKED_INCLUDE" "$IGPT_BAKED_OUT_DIR"; do
      mkdir -p "$d" || die "cannot create $d (baked into the binary)"
      [ -f "$d/cuda_fp16.h" ] && [ -f "$d/cuda_utils.cuh" ] || cp -r "$G/include/." "$d/"
    done
    local nvrtc
    nvrtc=$(find_lib libnvrtc.so.13 "${dirs[@]}") || nvrtc=libnvrtc.so.13
    if command -v python3 >/dev/null; then
      python3 bench/nvrtc-check.py "$nvrtc" "$G/kernels" "$IGPT_CUDA_ARCH" "$IGPT_BAKED_INCLUDE" "$IGPT_BAKED_OUT_DIR" ||
        echo "gpu-check: NVRTC cannot compile dfdx's run-time kernels: the CUDA runs below will panic in reshape"
    fi
  fi

  step "a. parity on $dev (tolerances in the header)"
  local parity=FAIL
  if timeout 180 "$bin" bench parity --device "$dev" --fixtures "$fixtures" 2>"$tmp/parity.err" | tee "$tmp/parity.out"; then
    parity=PASS
  else
    cat "$tmp/parity.err"
    grep -q "cannot initialise CUDA" "$tmp/parity.err" &&
      echo "gpu-check: the CUDA device did not start (diagnosis above): nothing else to run" && exit 1
  fi

  step "b. every --device command on $dev, tiny model (pretrain vs cpu within 5e-3 bits/dim)"
  local cmds=PASS tiny="--layers 2 --width 32 --heads 4 --side 8" d line
  "$bin" palette grid --channels 1 --levels 4 --out "$tmp/p.pal" >/dev/null || cmds=FAIL
  for d in cpu dev; do
    local on=cpu
    [ "$d" = dev ] && on=$dev
    # shellcheck disable=SC2086
    line=$(timeout 120 "$bin" pretrain --device "$on" --data "$data" --palette "$tmp/p.pal" $tiny \
      --steps 4 --batch 4 --warmup 1 --eval-every 2 --val-images 8 --out "$tmp/run-$d" 2>"$tmp/cmd.err") ||
      { cmds=FAIL; echo "pretrain on $on failed: $(tail -n 1 "$tmp/cmd.err")"; continue; }
    echo "pretrain $on: $line"
    sed -n 's/.*train \([0-9.]*\) bits\/dim, validation \([0-9.]*\) bits\/dim.*/\1 \2/p' <<<"$line" >"$tmp/bpd-$d"
  done
  if [ -s "$tmp/bpd-cpu" ] && [ -s "$tmp/bpd-dev" ]; then
    paste "$tmp/bpd-cpu" "$tmp/bpd-dev" | awk '{ d = ($1-$3)^2 > ($2-$4)^2 ? $1-$3 : $2-$4; if (d < 0) d = -d;
      printf "pretrain cpu vs device: max |difference| %.2e bits/dim (tol 5e-3)\n", d; exit !(d <= 5e-3) }' || cmds=FAIL
  fi
  local ck=$tmp/run-dev/checkpoint.safetensors
  for c in "probe --checkpoint $ck --data $data --out $tmp/probe" \
           "finetune --checkpoint $ck --data $data --steps 4 --batch 4 --eval-every 2 --out $tmp/ft" \
           "sample --checkpoint $ck --n 2 --out $tmp/s.png"; do
    # shellcheck disable=SC2086
    if line=$(timeout 120 "$bin" $c --device "$dev" 2>"$tmp/cmd.err" | tail -n 1); then
      echo "${c%% *} $dev: $line"
    else
      cmds=FAIL
      echo "${c%% *} on $dev failed: $(tail -n 1 "$tmp/cmd.err")"
    fi
  done
  echo "commands=$cmds"

  step "c. peak rates with PyTorch (8192^3 matmuls)"
  local meas_f32="" meas_bf16=""
  if [ "$dry" = 0 ] && command -v python3 >/dev/null &&
     timeout 90 python3 - >"$tmp/peak.out" 2>"$tmp/peak.err" <<'EOF'
import time, torch
torch.backends.cuda.matmul.allow_tf32 = False
n = 8192
for name, dt in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
    a = torch.randn(n, n, device="cuda", dtype=dt); b = torch.randn(n, n, device="cuda", dtype=dt)
    for _ in range(3): a @ b
    torch.cuda.synchronize(); t = time.perf_counter(); reps = 10
    for _ in range(reps): a @ b
    torch.cuda.synchronize(); s = (time.perf_counter() - t) / reps
    print(f"measured_{name}_tflops={2 * n**3 / s / 1e12:.1f}")
EOF
  then
    cat "$tmp/peak.out"
    meas_f32=$(sed -n 's/^measured_f32_tflops=//p' "$tmp/peak.out")
    meas_bf16=$(sed -n 's/^measured_bf16_tflops=//p' "$tmp/peak.out")
  else
    echo "skipped (dry run, or no PyTorch with CUDA: $(tail -n 1 "$tmp/peak.err" 2>/dev/null))"
  fi

  step "d. training throughput on $dev: $model, batches $batches, $steps timed steps"
  printf '%-6s %12s %12s %9s %9s %9s %9s\n' batch tokens/s TFLOP/s "MFU f32" "MFU bf16" "meas f32" "meas bf16"
  local b best=""
  for b in $batches; do
    # shellcheck disable=SC2086
    if ! timeout 150 "$bin" bench train --device "$dev" $model --batch "$b" --steps "$steps" \
        >"$tmp/train.out" 2>"$tmp/train.err"; then
      echo "batch $b failed: $(tail -n 1 "$tmp/train.err")"
      break
    fi
    local tps tf
    tps=$(sed -n 's/^tokens_per_s=//p' "$tmp/train.out")
    tf=$(sed -n 's/^model_tflops=//p' "$tmp/train.out")
    awk -v b="$b" -v tps="$tps" -v tf="$tf" -v p32="$PEAK_FP32" -v p16="$PEAK_BF16" \
        -v m32="${meas_f32:-0}" -v m16="${meas_bf16:-0}" 'BEGIN {
      printf "%-6s %12.0f %12.2f %8.1f%% %8.1f%% %9s %9s\n", b, tps, tf, 100*tf/p32, 100*tf/p16,
        (m32 > 0 ? sprintf("%.1f%%", 100*tf/m32) : "-"), (m16 > 0 ? sprintf("%.1f%%", 100*tf/m16) : "-") }'
    best="$b $tps $tf"
  done
  [ -n "$best" ] && grep -h "^bench train\|^train_flops" "$tmp/train.out"

  step "e. where the time goes (ncu, one step at batch ${IGPT_PROFILE_BATCH:-8})"
  if [ "$dry" = 0 ] && command -v ncu >/dev/null && [ "$SECONDS" -lt 300 ]; then
    local pb=${IGPT_PROFILE_BATCH:-8}
    # shellcheck disable=SC2086
    "$bin" bench train --device cuda $model --batch "$pb" --steps 1 >"$tmp/wall.out" 2>&1 || true
    # shellcheck disable=SC2086
    if timeout 200 ncu --metrics gpu__time_duration.sum --csv --print-units base \
        "$bin" bench train --device cuda $model --batch "$pb" --steps 1 >"$tmp/ncu.csv" 2>"$tmp/ncu.err"; then
      python3 - "$tmp/ncu.csv" "$(sed -n 's/^tokens_per_s=//p' "$tmp/wall.out")" "$pb" <<'EOF'
import csv, collections, re, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, rows = rows[0], rows[1:]
ki, mi, vi = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value")
per = collections.Counter()
for r in rows:
    if r[mi] == "gpu__time_duration.sum":
        per[r[ki]] += float(r[vi].replace(",", ""))
total = sum(per.values())
blas = re.compile(r"gemm|xmma|cutlass|cublas|sm\d+_|splitK|ampere|hopper", re.I)
groups = collections.Counter()
for k, v in per.items():
    if blas.search(k):
        groups["cuBLAS (matmuls)"] += v
    else:
        name = re.sub(r"_(f32|f64|u\w+|usize|bool)$", "", k.split("(")[0])
        groups["dfdx " + name] += v
# Two steps ran (one warm-up, one timed): the kernel time of one step is half.
tps, b = float(sys.argv[2] or 0), int(sys.argv[3])
step_wall = b * 1024 / tps if tps else 0
print(f"kernels: {len(per)} distinct, {total / 2e6:.1f} ms of kernel time per step"
      + (f"; wall time per step {step_wall * 1e3:.1f} ms, so {100 * (1 - total / 2e9 / step_wall):.0f}% of the wall is outside kernels (launch gaps, host syncs)" if step_wall else ""))
for g, v in groups.most_common(14):
    print(f"  {100 * v / total:5.1f}%  {g}")
EOF
    else
      echo "ncu failed: $(tail -n 2 "$tmp/ncu.err" | tr '\n' ' ')"
    fi
  else
    echo "skipped (dry run, no ncu, or past 300 s)"
  fi

  step "summary"
  echo "parity=$parity"
  echo "commands=$cmds"
  [ -n "$best" ] && echo "largest batch that ran: $best (batch, tokens/s, model TFLOP/s)"
  echo "elapsed ${SECONDS}s"
  rm -rf "$tmp"
  [ "$parity" = PASS ] && [ "$cmds" = PASS ]
}

case "${1:-run}" in
  build) build ;;
  run) run 0 ;;
  --dry-run | dry-run) run 1 ;;
  -h | --help) sed -n '2,20p' "$0" ;;
  *) die "unknown mode $1 (build, run, --dry-run)" ;;
esac

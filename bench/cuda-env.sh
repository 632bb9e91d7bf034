# shellcheck shell=bash
# bench/cuda-env.sh: a CUDA build environment from PyPI's CUDA 13.0 wheels, for building
# igpt with `--features cuda` on a machine with no GPU and no CUDA toolkit (CI, and the
# build of the binary that bench/gpu-check.sh runs). Source it from bash, in a subshell
# when the rest of the shell must not see it:
#
#   ( source bench/cuda-env.sh && cargo check -p igpt --features cuda )
#   ( IGPT_CUDA_LINK=1 source bench/cuda-env.sh && cargo build --release -p igpt --features cuda )
#
# What it sets up, once, under $IGPT_CUDA_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/igpt-cuda):
# - venv/: a Python venv holding nvidia-cuda-nvcc, nvidia-nvvm, nvidia-cuda-crt,
#   nvidia-cuda-runtime and nvidia-cuda-cccl 13.0 (~270 MB). They unpack into one
#   prefix, site-packages/nvidia/cu13, with bin/nvcc, nvvm/ and include/cuda.h. (The
#   CUDA 12 wheels hold no nvcc.) nvcc also needs a host C++ compiler (g++).
# - shim/nvidia-smi: NOT NVIDIA's tool. dfdx 0.13's build script always runs
#   `nvidia-smi --query-gpu=compute_cap --format=csv` (even with CUDA_COMPUTE_CAP set)
#   to pick the PTX target; this shim answers that one query with
#   $IGPT_CUDA_COMPUTE_CAP (default 9.0, the H100/H200) and fails on anything else.
#   It is put on PATH only when no working nvidia-smi is there, and only for the shell
#   that sources this file: it exists for compiling, never for running.
# - with IGPT_CUDA_LINK=1 (needed to link a binary; `cargo check` does not link):
#   nvidia-cuda-nvrtc and nvidia-cublas 13.0 in the same venv, and link/: libnvrtc.so,
#   libcublas.so, libcublasLt.so symlinks and a libcuda.so stub (SONAME libcuda.so.1,
#   built with cc from the driver symbols cudarc 0.9 declares) for the linker; the real
#   libcuda.so.1 comes with the driver on the GPU machine.
#
# Exports: CUDA_ROOT (the cu13 prefix, or $IGPT_CUDA_ROOT when set: cudarc's and dfdx's
# build scripts look for $CUDA_ROOT/include/cuda.h), PATH (nvcc, the shim),
# CUDA_COMPUTE_CAP (90), IGPT_CUDA_PREFIX (the cu13 prefix), and with IGPT_CUDA_LINK=1
# RUSTFLAGS gains -L for link/.
#
# Note: dfdx bakes $CUDA_ROOT/include and its own OUT_DIR into the binary (NVRTC compiles
# its reshape/concat/to_dtype kernels at run time with those include paths); see
# bench/gpu-check.sh for how the GPU machine gets them.

igpt_cuda_setup() {
  local cache=${IGPT_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/igpt-cuda}
  local cap=${IGPT_CUDA_COMPUTE_CAP:-9.0}
  local pins="nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85"
  local link_pins="nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14"
  local want=$pins
  [ "${IGPT_CUDA_LINK:-0}" = 1 ] && want="$pins $link_pins"
  local py=${IGPT_CUDA_PYTHON:-python3}
  command -v "$py" >/dev/null || { echo "cuda-env: no $py (needed to install the CUDA wheels)" >&2; return 1; }
  mkdir -p "$cache" || return 1

  # 1. The wheels: a venv, or a --target folder where venv is unavailable. The file
  # "installed" lists the pins already in place, one a line.
  local missing="" p
  for p in $want; do
    grep -qxF "$p" "$cache/installed" 2>/dev/null || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "cuda-env: installing$missing into $cache (once)" >&2
    if [ ! -x "$cache/venv/bin/python" ] && [ ! -d "$cache/site" ]; then
      rm -f "$cache/installed"
      "$py" -m venv "$cache/venv" >/dev/null 2>&1 || rm -rf "$cache/venv"
    fi
    if [ -x "$cache/venv/bin/python" ]; then
      # shellcheck disable=SC2086
      "$cache/venv/bin/python" -m pip install --disable-pip-version-check -q \
        --retries 5 --timeout 60 $missing || return 1
    else
      echo "cuda-env: python venv unavailable; using pip --target" >&2
      # shellcheck disable=SC2086
      "$py" -m pip install --disable-pip-version-check -q --retries 5 --timeout 60 \
        --target "$cache/site" $missing || return 1
    fi
    for p in $missing; do echo "$p" >>"$cache/installed"; done
  fi
  local site
  site=$(find "$cache/venv" "$cache/site" -maxdepth 5 -type d -path '*/nvidia/cu13' 2>/dev/null | head -n 1)
  if [ -z "$site" ] || [ ! -x "$site/bin/nvcc" ] || [ ! -f "$site/include/cuda.h" ]; then
    echo "cuda-env: the wheels in $cache hold no nvidia/cu13/bin/nvcc and include/cuda.h; remove $cache and retry" >&2
    return 1
  fi
  command -v "${CXX:-g++}" >/dev/null || command -v c++ >/dev/null ||
    { echo "cuda-env: nvcc needs a host C++ compiler (g++)" >&2; return 1; }

  # 2. The nvidia-smi shim, only where no real one answers.
  local shim=$cache/shim
  mkdir -p "$shim"
  cat >"$shim/nvidia-smi" <<EOF
#!/bin/sh
# igpt's compile-time shim (bench/cuda-env.sh), NOT NVIDIA's nvidia-smi: it answers only
# dfdx 0.13's build-script query for the GPU's compute capability.
if [ "\$*" = "--query-gpu=compute_cap --format=csv" ]; then
  printf 'compute_cap\n%s\n' "$cap"
  exit 0
fi
echo "igpt cuda-env shim, not nvidia-smi: answers only --query-gpu=compute_cap --format=csv" >&2
exit 1
EOF
  chmod +x "$shim/nvidia-smi"
  local real
  real=$(nvidia-smi --query-gpu=compute_cap --format=csv 2>/dev/null || true)
  if [ "${real%%$'\n'*}" = compute_cap ] && [ "$(command -v nvidia-smi)" != "$shim/nvidia-smi" ]; then
    echo "cuda-env: using the real nvidia-smi ($(command -v nvidia-smi))" >&2
  else
    export PATH="$shim:$PATH"
  fi

  # 3. Link libraries (a binary, not a check).
  if [ "${IGPT_CUDA_LINK:-0}" = 1 ]; then
    local link=$cache/link
    mkdir -p "$link"
    local lib
    for lib in nvrtc cublas cublasLt; do
      [ -f "$site/lib/lib$lib.so.13" ] || { echo "cuda-env: no $site/lib/lib$lib.so.13" >&2; return 1; }
      ln -sf "$site/lib/lib$lib.so.13" "$link/lib$lib.so"
    done
    if [ ! -f "$link/libcuda.so" ]; then
      local sys
      sys=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 1 -type d 2>/dev/null |
        while read -r d; do ls "$d"/cudarc-0.9.*/src/driver/sys.rs 2>/dev/null; done | sort -V | tail -n 1)
      if [ -z "$sys" ]; then
        (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo fetch -q) || return 1
        sys=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 1 -type d |
          while read -r d; do ls "$d"/cudarc-0.9.*/src/driver/sys.rs 2>/dev/null; done | sort -V | tail -n 1)
      fi
      [ -n "$sys" ] || { echo "cuda-env: cudarc 0.9's sources not found (cargo fetch)" >&2; return 1; }
      grep -oE 'pub fn cu[A-Za-z0-9_]+' "$sys" | sed 's/pub fn //' | sort -u |
        sed 's/.*/void &(void) {}/' >"$link/libcuda-stub.c"
      "${CC:-cc}" -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/libcuda-stub.c" || return 1
    fi
    export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-L native=$link"
  fi

  export IGPT_CUDA_PREFIX=$site
  export CUDA_ROOT=${IGPT_CUDA_ROOT:-$site}
  export PATH="$site/bin:$PATH"
  export CUDA_COMPUTE_CAP=${cap/./}
  echo "cuda-env: CUDA_ROOT=$CUDA_ROOT, nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute capability $cap" >&2
}

igpt_cuda_setup || { echo "cuda-env: setup failed" >&2; return 1 2>/dev/null || exit 1; }

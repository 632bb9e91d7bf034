#!/usr/bin/env bash
# Builds both firmware examples and runs them under QEMU, checking that every firmware
# prediction equals the host core's on the same model file and images. Used by CI.
#
#   bash firmware-examples/run-qemu.sh            # from the repository root
#
# Needs: the pinned Rust toolchain with thumbv7em-none-eabihf, the Fashion-MNIST package
# (/usr/share/datasets/fashion-mnist) and data/cifar10-sample. Installs QEMU 7.2
# into $IGPT_QEMU_DIR (default ~/.cache/igpt-qemu) when qemu-system-arm is not on PATH.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="$root/firmware-examples/target/fw"
mkdir -p "$work"
passed=0
failed=0

if ! command -v qemu-system-arm >/dev/null; then
  qdir="${IGPT_QEMU_DIR:-$HOME/.cache/igpt-qemu}"
  if [ ! -x "$qdir/usr/bin/qemu-system-arm" ]; then
    echo "installing QEMU into $qdir"
    # Debian's qemu-system-arm conflicts with the preinstalled qemu-utils: unpack the
    # package instead of installing it, after its libraries.
    apt-get update -qq || exit 1
    apt-get install -y -qq --no-install-recommends libfdt1 libcapstone4 libpmem1 \
      librdmacm1 libibverbs1 libslirp0 libvdeplug2 >/dev/null || exit 1
    # dpkg -x does not create missing parents (a fresh machine has no ~/.cache).
    mkdir -p "$qdir" || exit 1
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download qemu-system-arm >/dev/null && dpkg -x qemu-system-arm_*.deb "$qdir") || exit 1
    rm -rf "$tmp"
  fi
  export PATH="$qdir/usr/bin:$PATH"
fi
qemu-system-arm --version | head -1

# IGPT_FEATURES: the features the caller's test build used (CI: mpi), so this reuses
# its target/debug/igpt instead of building igpt a second time without them.
cargo build -q -p igpt ${IGPT_FEATURES:+--features "$IGPT_FEATURES"} || exit 1
igpt="$root/target/debug/igpt"
fm=/usr/share/datasets/fashion-mnist
cifar="$root/data/cifar10-sample"

# run NAME DIR: build and run one firmware under QEMU with a time limit.
run() {
  local name=$1 dir=$2 log="$work/$1.log"
  echo "== $name"
  if (cd "$root/firmware-examples/$dir" && cargo build -q --release) &&
     (cd "$root/firmware-examples/$dir" && timeout 600 cargo run -q --release </dev/null) 2>&1 | tee "$log" &&
     [ "${PIPESTATUS[0]}" -eq 0 ] && grep -q "predictions equal the host's" "$log" &&
     ! grep -q "MISMATCH\|HardFault\|panicked" "$log"; then
    passed=$((passed + 1))
  else
    echo "$name: FAILED (see $log)"
    failed=$((failed + 1))
  fi
}

# 1. classify: the committed Fashion-MNIST model; the host's predictions are computed
#    now, with this build of igpt-core, on the first 20 test images.
"$igpt" export-vectors --model firmware-examples/models/fm-fw.igpt --data "$fm" \
  --count 20 --out "$work/fm-fw.vec" || exit 1
IGPT_VECTORS="$work/fm-fw.vec" run classify classify

# 2. igpt-s: a seeded iGPT-S (24 layers, width 512, 512 colours) at 8x8 with a seeded
#    probe head on layer 12, one CIFAR-10 test image.
if [ ! -f "$work/igpt-s.igpt" ]; then
  "$igpt" palette grid --channels 3 --levels 8 --out "$work/grid512.pal" &&
  "$igpt" init --palette "$work/grid512.pal" --preset S --side 8 --seed 0 \
    --out "$work/igpt-s.safetensors" --probe-head "$work/igpt-s-head.json" --probe-layer 12 &&
  "$igpt" export --checkpoint "$work/igpt-s.safetensors" --probe "$work/igpt-s-head.json" \
    --out "$work/igpt-s.igpt" && rm -f "$work/igpt-s.safetensors" || exit 1
fi
"$igpt" export-vectors --model "$work/igpt-s.igpt" --data "$cifar" --count 1 \
  --out "$work/igpt-s.vec" || exit 1
IGPT_S_MODEL="$work/igpt-s.igpt" IGPT_S_VECTORS="$work/igpt-s.vec" run igpt-s igpt-s

echo "firmware: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env python3
"""Compiles dfdx's run-time CUDA kernels with NVRTC, as the igpt CUDA binary will.

dfdx 0.13 compiles its reshape (and concat, stack, to_dtype) kernels at run time with
NVRTC, with include paths fixed when it was built (`$CUDA_ROOT/include`, dfdx's
OUT_DIR) and the architecture of `CUDA_COMPUTE_CAP`. This script runs that compile
without a GPU (NVRTC needs none), so a missing header shows up before the GPU run:

    nvrtc-check.py LIBNVRTC KERNEL_DIR ARCH INCLUDE_DIR...

KERNEL_DIR holds the kernel sources (`*.cu`, written by `bench/gpu-check.sh build`
from dfdx's sources). Prints one line per kernel; exits 1 if any fails.
"""
import ctypes
import pathlib
import sys


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: nvrtc-check.py LIBNVRTC KERNEL_DIR ARCH INCLUDE_DIR...", file=sys.stderr)
        return 2
    lib_path, kernel_dir, arch, includes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as e:
        print(f"nvrtc-check: cannot load {lib_path}: {e}")
        return 1
    kernels = sorted(pathlib.Path(kernel_dir).glob("*.cu"))
    if not kernels:
        print(f"nvrtc-check: no *.cu in {kernel_dir}")
        return 1
    failed = 0
    for k in kernels:
        prog = ctypes.c_void_p()
        r = lib.nvrtcCreateProgram(ctypes.byref(prog), k.read_bytes(), k.name.encode(), 0, None, None)
        if r != 0:
            print(f"{k.name}: nvrtcCreateProgram error {r}")
            failed += 1
            continue
        opts = [f"--gpu-architecture={arch}".encode()]
        opts += [f"--include-path={i}".encode() for i in includes]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        r = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
        text = log.value.decode(errors="replace").strip().replace("\n", " | ")
        if r == 0:
            print(f"{k.name}: ok")
        else:
            failed += 1
            print(f"{k.name}: NVRTC error {r}: {text[:600]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

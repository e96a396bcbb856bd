#!/usr/bin/env bash
# Compile-check every csrc/cuda/*.cu with nvcc against the installed torch's headers (works with the CPU
# wheel: it ships the ATen/cuda and c10/cuda headers), with the flags torch.utils.cpp_extension passes
# plus setup.py's NVCC_FLAGS. Objects go to a temp dir; also prints each kernel's resource usage with
# QTIP_PTXAS_VERBOSE=1. Exits non-zero on the first error; warnings are errors with QTIP_WERROR=1.
#   usage: csrc/cuda/compile_check.sh [file.cu ...]     (default: all)
#   env:   NVCC (default /usr/local/cuda-13.0/bin/nvcc, else nvcc on PATH), QTIP_ARCHS (default "80 90")
set -euo pipefail
cd "$(dirname "$0")/../.."
NVCC=${NVCC:-/usr/local/cuda-13.0/bin/nvcc}
[ -x "$NVCC" ] || NVCC=$(command -v nvcc)
TORCH_DIR=$(python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
ABI=$(python -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
OUT=${QTIP_OBJ_DIR:-$(mktemp -d /tmp/qtip_cuda_check.XXXXXX)}
# The CPU wheel lacks c10/cuda/impl/cuda_cmake_macros.h (generated at torch's build time; a CUDA wheel has
# it): supply the one line it holds, only where the installed torch does not.
SHIM=()
if [ ! -f "$TORCH_DIR/include/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  mkdir -p "$OUT/shim/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$OUT/shim/c10/cuda/impl/cuda_cmake_macros.h"
  SHIM=(-I"$OUT/shim")
fi
GENCODE=()
for a in ${QTIP_ARCHS:-80 90}; do GENCODE+=(-gencode "arch=compute_$a,code=sm_$a"); done
FLAGS=(-c -std=c++20 -O3 --fmad=false --expt-relaxed-constexpr
       -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
       -D__CUDA_NO_HALF2_OPERATORS__ -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C
       -D_GLIBCXX_USE_CXX11_ABI=$ABI
       -I"$TORCH_DIR/include" -I"$TORCH_DIR/include/torch/csrc/api/include" "${SHIM[@]}" -Icsrc
       -Xcompiler -fPIC -Xcompiler -Wall -Xcudafe --display_error_number "${GENCODE[@]}")
[ "${QTIP_PTXAS_VERBOSE:-0}" = 1 ] && FLAGS+=(-Xptxas -v)
[ "${QTIP_WERROR:-0}" = 1 ] && FLAGS+=(-Werror all-warnings)
FILES=("$@")
[ ${#FILES[@]} -eq 0 ] && FILES=(csrc/cuda/*.cu)
echo "nvcc: $("$NVCC" --version | tail -1)"
echo "torch headers: $TORCH_DIR/include (CXX11 ABI=$ABI); objects in $OUT"
for f in "${FILES[@]}"; do
  obj="$OUT/$(basename "${f%.cu}").o"
  echo "== $f"
  echo "$NVCC ${FLAGS[*]} $f -o $obj"
  start=$(date +%s)
  "$NVCC" "${FLAGS[@]}" "$f" -o "$obj"
  echo "   ok ($(( $(date +%s) - start )) s, $(stat -c %s "$obj") bytes)"
done
echo "all ${#FILES[@]} file(s) compiled"

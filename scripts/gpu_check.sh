#!/usr/bin/env bash
# The GPU check, for a machine with one NVIDIA GPU, a CUDA torch in python3,
# CMake and ninja, but no network and none of shardtune's other dependencies:
# those travel as Debian packages in .deps/debs (scripts/gpu_check_fetch.sh
# downloads them on a Debian 12 machine) and are unpacked here.
#
# Builds shardtune against the CUDA libtorch found there, runs the GPU tests
# at world size 1 (collectives, model parity, a training step against the
# CPU's, every ZeRO stage and offload), times GPT-2 124M against the same
# model in plain PyTorch, fine-tunes a 5.5B model with ZeRO 3 + offload
# (scripts/gpu_check_train.sh), and prints tables last. The full log goes to $OUT/log
# (or build-gpu/gpu_check.log).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-build-gpu}
mkdir -p "$out"
log="$out/log"
exec > >(tee "$log") 2>&1
start=$(date +%s)

deps=/tmp/shardtune-deps
mkdir -p "$deps"
for f in .deps/debs/*.deb; do dpkg -x "$f" "$deps"; done
lib="$deps/usr/lib/x86_64-linux-gnu"
export PATH="$deps/usr/bin:$PATH"
export LD_LIBRARY_PATH="$lib:$lib/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OPAL_PREFIX="$deps/usr"          # relocated Open MPI finds its plugins here
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# pkg-config finds the unpacked .pc files, their paths moved under $deps.
export PKG_CONFIG_LIBDIR="$lib/pkgconfig:$deps/usr/share/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$deps"
pkgconfig=$(command -v pkg-config || echo "$deps/usr/bin/pkgconf")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

status=()
step() {  # step NAME COMMAND...: runs it, records PASS/FAIL
  local name=$1; shift
  local t0=$(date +%s)
  echo "=== $name: $*"
  if "$@"; then status+=("$name|PASS|$(( $(date +%s) - t0 ))s"); return 0; fi
  status+=("$name|FAIL|$(( $(date +%s) - t0 ))s"); return 1
}

build=build-gpu
step configure cmake -S . -B $build -G Ninja -DSHARDTUNE_PYTHON=python3 -DSHARDTUNE_WITH_CUDA=ON \
  -DCMAKE_PREFIX_PATH="$deps/usr" \
  -DMPI_CXX_SKIP_MPICXX=ON -DMPI_CXX_LIB_NAMES=mpi -DMPI_mpi_LIBRARY="$lib/openmpi/lib/libmpi.so" \
  -DMPI_CXX_HEADER_DIR="$lib/openmpi/include" -DMPIEXEC_EXECUTABLE="$deps/usr/bin/mpirun" \
  -DSHARDTUNE_CCACHE=OFF -DPKG_CONFIG_EXECUTABLE="$pkgconfig" \
  -DHDF5_ROOT="$lib/hdf5/serial" -DHDF5_C_COMPILER_EXECUTABLE=/nonexistent \
  && step build cmake --build $build -j "$(nproc)" --target shardtune test_comm model_tool \
  && step shardtune_version $build/shardtune version \
  && step nccl_collectives_np1 $build/tests/test_comm --gtest_filter='*nccl*:*Nccl*'
step mpi_collectives_np1 $build/tests/test_comm --gtest_filter='*mpi_float32*:Communicator.*' >/dev/null
# Models against transformers on the GPU: float32, then bfloat16.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
step hf_parity_cuda_fp32 python3 tests/model/hf_parity.py --tool $build/tests/model_tool \
  --work /tmp/parity32 --device cuda --dtype float32
step hf_parity_cuda_bf16 python3 tests/model/hf_parity.py --tool $build/tests/model_tool \
  --work /tmp/parity16 --device cuda --dtype bfloat16
grep -A30 "^HF parity" "$log" | grep -v "Loading\|Writing" > "$out/parity_tables.txt" || true

# The trainer on the GPU: a step against the CPU, ZeRO stages, benchmarks.
source scripts/gpu_check_train.sh

echo
echo "== GPU check ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)), $(( $(date +%s) - start )) s"
printf '%-24s %-6s %s\n' step result time
for s in "${status[@]}"; do IFS='|' read -r a b c <<<"$s"; printf '%-24s %-6s %s\n' "$a" "$b" "$c"; done
echo
cat "$out/train_table.txt"

#!/usr/bin/env bash
# The test command: sets up, builds, starts a local one-node Slurm
# (scripts/slurm_local.sh) and two emulated hosts (scripts/cluster_local.sh)
# and runs every test (ctest, including the multi-rank ones under mpirun -np
# 2 and -np 4, the slurm_* ones under sbatch and srun and the multinode_*
# ones across the hosts), then builds the torch-free
# modules with AddressSanitizer + UndefinedBehaviorSanitizer and runs their
# tests, then runs the libFuzzer harnesses for 10 s each (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
bash scripts/build.sh
# A one-node Slurm for the slurm_* tests (installs slurm-wlm and munge if needed).
bash scripts/slurm_local.sh start
# llama.cpp's own HF -> GGUF converter, for gguf_llamacpp_converter.
bash scripts/fetch_llamacpp_converter.sh
# Two emulated hosts for the multinode_* tests, taken down however ctest ends.
bash scripts/cluster_local.sh up 2
trap 'bash scripts/cluster_local.sh down' EXIT
# Two tests at a time on 2 cores: multi-rank tests declare their ranks
# (PROCESSORS) and the Slurm, multinode and timing tests run alone.
(cd build && ctest --output-on-failure --timeout 600 -j2)
bash scripts/cluster_local.sh down
trap - EXIT

echo "== torch-free modules under ASan + UBSan"
SHARDTUNE_BUILD_DIR=build-asan bash scripts/build.sh \
  -DSHARDTUNE_WITH_TORCH=OFF -DSHARDTUNE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
(cd build-asan && ctest --output-on-failure --timeout 300)

echo "== fuzzers (libFuzzer, ASan + UBSan), 10 s each"
bash scripts/fuzz.sh 10
echo "test.sh: all tests passed in $(( $(date +%s) - start )) s"

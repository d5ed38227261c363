#!/usr/bin/env bash
# The main job: sets up, builds, and runs shardtune on 2 MPI ranks of this
# machine: the rank table, then the communication benchmark with the raw MPI
# baseline side by side, then a correctness sweep over every collective and
# dtype. (The training demo replaces this once the trainer exists.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/build.sh
out=build/demo
mkdir -p "$out"

echo; echo "== shardtune info on 2 ranks"
bash scripts/mpirun.sh -np 2 build/shardtune info configs/example.yaml

echo; echo "== all_reduce bandwidth, shardtune vs raw MPI, 2 ranks"
bash scripts/mpirun.sh -np 2 build/benchmarks/shardtune_bench_comm \
  -b 1K -e 64M -f 4 -o all_reduce --baseline --json "$out/comm_all_reduce.json"

echo; echo "== every collective and dtype, 2 ranks (correctness: #wrong must be 0)"
bash scripts/mpirun.sh -np 2 build/benchmarks/shardtune_bench_comm \
  -b 8 -e 4M -f 32 -o all -d all -n 5 --json "$out/comm_all.json"

echo; echo "demo: done; results in $out/comm_all_reduce.json and $out/comm_all.json"

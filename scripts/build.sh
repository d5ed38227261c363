#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and builds shardtune into build/ (Release).
#   SHARDTUNE_BUILD_DIR   build folder [build]
#   extra arguments go to cmake's configure step
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
venv=${SHARDTUNE_VENV:-/opt/shardtune/venv}
build=${SHARDTUNE_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DSHARDTUNE_PYTHON="$venv/bin/python" "$@" >"$build.configure.log" 2>&1 \
  || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)"

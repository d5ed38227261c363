#!/usr/bin/env bash
# consumer_test.sh BUILD_DIR CONSUMER_SRC: installs the build into a scratch
# prefix, then configures, builds and runs a project that finds it with
# find_package(shardtune).
set -euo pipefail
build=$1; src=$2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
torch_dir=$(grep -m1 '^Torch_DIR:' "$build/CMakeCache.txt" | cut -d= -f2-)
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DTorch_DIR="$torch_dir" >"$work/configure.log" 2>&1 \
  || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
"$work/build/consumer"

#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang; torch-free modules with ASan +
# UBSan) into build-fuzz/ and runs each for SECONDS (default 20) from its
# seed corpus (tests/fuzz/corpus/<name>/, copied: the repository is never
# written). Fails on any finding (a crash, a sanitizer report, an exception
# other than the InputError bad input must give); the reproducer is left in
# build-fuzz/findings/.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-20}
export CC=clang CXX=clang++
SHARDTUNE_BUILD_DIR=build-fuzz bash scripts/build.sh -DSHARDTUNE_WITH_TORCH=OFF -DSHARDTUNE_FUZZ=ON \
  -DSHARDTUNE_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
mkdir -p build-fuzz/findings
for name in gguf tokenizer_json config_yaml jsonl_chat shard_attrs safetensors; do
  work=build-fuzz/corpus-$name
  rm -rf "$work"
  cp -r "tests/fuzz/corpus/$name" "$work"
  echo "== fuzz_$name for ${seconds} s"
  rc=0
  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    build-fuzz/tests/fuzz/fuzz_$name "$work" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=262144 -artifact_prefix=build-fuzz/findings/$name- -print_final_stats=1 \
    >"build-fuzz/fuzz_$name.log" 2>&1 || rc=$?
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)|runtime error|terminate called" \
    "build-fuzz/fuzz_$name.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "build-fuzz/fuzz_$name.log"
    echo "fuzz_$name: a finding (exit $rc; reproducer in build-fuzz/findings/)"
    exit 1
  fi
done
echo "fuzz.sh: no findings"

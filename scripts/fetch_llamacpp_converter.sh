#!/usr/bin/env bash
# llama.cpp's own HF -> GGUF converter (convert_hf_to_gguf.py, its
# conversion/ package and its gguf-py), for the test that holds shardtune's
# GGUF reading against files it writes (tests/formats/llamacpp_converter.py).
# PyPI ships it inside llama-cpp-python's source archive (MIT); only those
# files are taken, nothing is built or installed.
#
#   bash scripts/fetch_llamacpp_converter.sh [DEST=/opt/shardtune/llama.cpp-convert]
set -euo pipefail
version=0.3.36
dest=${1:-/opt/shardtune/llama.cpp-convert}
venv=${SHARDTUNE_VENV:-/opt/shardtune/venv}
if [ -f "$dest/.version" ] && [ "$(cat "$dest/.version")" = "$version" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch_llamacpp_converter: llama.cpp's converter from llama-cpp-python $version (source archive)"
"$venv/bin/python" -m pip download -q --no-deps --no-binary :all: --dest "$tmp" "llama-cpp-python==$version"
top=llama_cpp_python-$version/vendor/llama.cpp
tar -xzf "$tmp/llama_cpp_python-$version.tar.gz" -C "$tmp" \
  "$top/convert_hf_to_gguf.py" "$top/conversion" "$top/gguf-py" "$top/LICENSE"
rm -rf "$dest.new"
mkdir -p "$(dirname "$dest")"
mv "$tmp/$top" "$dest.new"
echo "$version" >"$dest.new/.version"
rm -rf "$dest"
mv "$dest.new" "$dest"

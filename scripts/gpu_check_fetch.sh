#!/usr/bin/env bash
# Downloads (on Debian 12) the packages scripts/gpu_check.sh unpacks on a GPU
# machine that has no network: Open MPI and its libraries, yaml-cpp, spdlog,
# fmt, GoogleTest and nlohmann-json, into .deps/debs (git-ignored).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .deps/debs && cd .deps/debs
apt-get download libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common \
  libevent-core-2.1-7 libevent-pthreads-2.1-7 libevent-2.1-7 libhwloc15 libpmix2 libfabric1 \
  libucx0 libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 libpsm2-2 libpsm-infinipath1 \
  libnuma1 libmunge2 libltdl7 libxnvctrl0 libpciaccess0 \
  libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 \
  libgtest-dev nlohmann-json3-dev \
  libhdf5-dev libhdf5-103-1 libaec0 libsz2 libsentencepiece-dev libsentencepiece0 \
  libpcre2-dev libpcre2-8-0 libicu-dev libicu72 pkgconf-bin libpkgconf3

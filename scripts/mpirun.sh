#!/usr/bin/env bash
# mpirun with the flags a single machine needs: as root it must be allowed
# explicitly, more ranks than cores must be allowed, and ranks are not pinned
# to single cores (each rank runs cores/ranks intra-op threads).
#   scripts/mpirun.sh -np 2 build/shardtune info
set -euo pipefail
flags=(--oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
exec mpirun "${flags[@]}" "$@"

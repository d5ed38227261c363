#!/usr/bin/env bash
# Launches shardtune with one rank per GPU on one or more nodes.
#
#   launch/mpirun.sh [--hostfile FILE | --hosts h1,h2] [--gpus-per-node N] [--net-if IFACE] [--dry-run] -- CMD...
#   launch/mpirun.sh --hostfile hosts --net-if ib0 -- build/shardtune train configs/llama-sft.yaml
#
# Ranks are placed N per node (N = --gpus-per-node, or the GPUs nvidia-smi
# lists here, or 1) and left unbound (each rank sizes its own thread pool to
# cores / ranks on the node); each rank uses cuda:<local rank>. --net-if names the interface MPI's
# bootstrap and NCCL's sockets use (NCCL_SOCKET_IFNAME, btl_tcp_if_include);
# InfiniBand is found by NCCL itself (see the README). The environment of
# this shell (NCCL_*, UCX_*, OMP_*) travels to every rank.
set -euo pipefail
hosts=""; hostfile=""; gpus=""; net_if=""; dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --hostfile) hostfile=$2; shift 2 ;;
    --hosts) hosts=$2; shift 2 ;;
    --gpus-per-node) gpus=$2; shift 2 ;;
    --net-if) net_if=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    *) echo "launch/mpirun.sh: unknown option $1 (put the command after --)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: launch/mpirun.sh [options] -- CMD..." >&2; exit 2; }
if [ -z "$gpus" ]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "${gpus:-0}" -gt 0 ] || gpus=1
fi
nodes=1
if [ -n "$hostfile" ]; then
  nodes=$(grep -cvE '^\s*(#|$)' "$hostfile")
elif [ -n "$hosts" ]; then
  nodes=$(echo "$hosts" | tr ',' '\n' | grep -c .)
fi
args=(-np $((nodes * gpus)) --map-by "ppr:${gpus}:node" --bind-to none)
[ -n "$hostfile" ] && args+=(--hostfile "$hostfile")
[ -n "$hosts" ] && args+=(--host "$(echo "$hosts" | sed "s/\(,\|$\)/:${gpus}\1/g")")
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
# More ranks than cores on this machine (a CPU test run): allow it.
[ "$nodes" -eq 1 ] && [ "$gpus" -gt "$(nproc)" ] && args+=(--oversubscribe)
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
exports=()
if [ -n "$net_if" ]; then
  # A wrong name is caught here, before any rank starts (on other hosts
  # Open MPI refuses it: "None of the TCP networks specified ... could be found").
  if [ ! -e "/sys/class/net/$net_if" ]; then
    echo "launch/mpirun.sh: --net-if $net_if: no such network interface on $(hostname) (it has: $(ls /sys/class/net | paste -sd ' '))" >&2
    exit 2
  fi
  export NCCL_SOCKET_IFNAME=$net_if
  exports+=(--mca btl_tcp_if_include "$net_if" --mca oob_tcp_if_include "$net_if")
fi
for v in $(env | grep -oE '^(NCCL|UCX|OMP|SHARDTUNE)_[A-Za-z0-9_]+' | sort -u); do exports+=(-x "$v"); done
cmd=(mpirun "${args[@]}" "${exports[@]}" "$@")
if [ "$dry" -eq 1 ]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"

#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, from Debian's packages
# (slurm-wlm, munge): slurmctld and slurmd on this host, a `debug`
# partition of this node's CPUs, MpiDefault=pmix (Debian's Open MPI is built
# with PMIx, so `srun --mpi=pmix` starts ranks that find each other).
#   bash scripts/slurm_local.sh start    # install if needed, start, wait until the node is idle
#   bash scripts/slurm_local.sh stop
#   bash scripts/slurm_local.sh status
#   bash scripts/slurm_local.sh munge    # install if needed, start munged only
# Idempotent: start on a running cluster only checks it. Runs as root (as in
# CI); its state lives in SLURM_LOCAL_DIR [/var/lib/shardtune-slurm], its
# config in /etc/slurm/slurm.conf (written only if it was not there, or was
# written by this script).
set -euo pipefail
cmd=${1:-start}
state=${SLURM_LOCAL_DIR:-/var/lib/shardtune-slurm}
conf=/etc/slurm/slurm.conf
mark="# written by shardtune scripts/slurm_local.sh"
host=$(hostname -s)

install() {
  local missing=()
  for p in slurm-wlm munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "slurm_local: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

write_config() {
  if [ -f "$conf" ] && ! grep -q "$mark" "$conf"; then
    echo "slurm_local: $conf exists and was not written by this script; leaving it" >&2
    return
  fi
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p /etc/slurm "$state/ctld" "$state/d" /var/log/slurm
  cat >"$conf" <<EOF
$mark
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
# The time-limit warning signal reaches jobs within a minute of it.
MessageTimeout=10
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

running() { pgrep -x "$1" >/dev/null; }
# This cluster's slurmctld or slurmd, by its pid file: the emulated hosts of
# scripts/cluster_local.sh run daemons of the same names.
daemon_pid() {
  local pid
  pid=$(cat "$state/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

# munged with a key (made once): Slurm's authentication, here and on the
# emulated hosts of scripts/cluster_local.sh.
start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  fi
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  running munged || runuser -u munge -- munged 2>/dev/null || munged --force
}

start() {
  install
  write_config
  start_munge
  daemon_pid slurmctld >/dev/null || slurmctld
  daemon_pid slurmd >/dev/null || slurmd
  # Wait until the node is idle (or mixed/allocated: in use, so up).
  for _ in $(seq 120); do
    st=$(sinfo -h -N -n "$host" -o %t 2>/dev/null | head -1 || true)
    case "$st" in
      idle|mix|mixed|alloc|allocated) echo "slurm_local: node $host is $st"; return 0 ;;
      down*|drain*|drng*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  echo "slurm_local: the node never came up; /var/log/slurm/slurmctld.log and slurmd.log say why" >&2
  sinfo -N >&2 || true
  return 1
}

stop() {
  local pid
  for d in slurmd slurmctld; do
    if pid=$(daemon_pid "$d"); then kill "$pid"; fi
  done
  for _ in $(seq 40); do
    daemon_pid slurmd >/dev/null || daemon_pid slurmctld >/dev/null || break
    sleep 0.25
  done
  echo "slurm_local: stopped (munged left running)"
}

case "$cmd" in
  start) start ;;
  munge) install; start_munge ;;
  stop) stop ;;
  status) sinfo -N; squeue ;;
  *) echo "usage: slurm_local.sh start|stop|status|munge" >&2; exit 2 ;;
esac

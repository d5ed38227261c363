#!/usr/bin/env bash
# Emulated hosts on this machine, for multi-node tests: each host is a
# network + UTS + mount namespace with its own hostname (node1..nodeN), its
# own address on a bridge that exists only inside this machine, an sshd
# (Open MPI's launcher reaches the other hosts over ssh), a node-local
# /scratch of its own and the shared folders every host sees (this
# machine's file system: the build tree wherever it is, /tmp included, and
# $CLUSTER_DIR/shared for checkpoints), and Slurm across them (slurmctld on node1, a slurmd on
# each: `srun -N 2` and `sbatch --nodes=2` from any host).
#
#   bash scripts/cluster_local.sh up N      # N hosts (idempotent: on an up cluster of N it only brings
#                                           # back links and sshds a test took down)
#   bash scripts/cluster_local.sh down      # everything up made goes away
#   bash scripts/cluster_local.sh status
#   bash scripts/cluster_local.sh exec I CMD...   # CMD on host I (node I's namespaces)
#
# Two networks, as a cluster has a management network and a fabric: node I
# is 10.77.0.I/24 on eth0 (its name resolves there; ssh goes there) and
# 10.78.0.I/24 on eth1 (for --net-if eth1), each on a bridge of its own
# (stbr0, stbr1: this machine's side, .254). Inside the hosts, /etc/hosts
# names every node and ssh needs no password (a key made for the cluster, in
# $CLUSTER_DIR). Needs root and iproute2; installs openssh-server,
# slurm-wlm and munge if missing. CLUSTER_DIR [/var/lib/shardtune-cluster].
set -euo pipefail
dir=${CLUSTER_DIR:-/var/lib/shardtune-cluster}
bridge=stbr0
net=10.77.0
# The second network (eth1).
bridge1=stbr1
net1=10.78.0

die() { echo "cluster_local: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "needs root (namespaces, a bridge, sshd)"

install() {
  command -v ip >/dev/null || die "iproute2 is missing"
  if [ ! -x /usr/sbin/sshd ]; then
    echo "cluster_local: installing openssh-server"
    # Installing must not start an sshd on this machine's own network.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server
    [ "$made_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
  fi
  # slurm-wlm and munge installed (the hosts bind their Slurm config over
  # /etc/slurm), munged running.
  bash "$(dirname "${BASH_SOURCE[0]}")/slurm_local.sh" munge
}

# The pid of host I's namespace holder (a sleep whose namespaces are the host's).
holder() { cat "$dir/node$1/holder.pid" 2>/dev/null || true; }
alive() { local p; p=$(holder "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
enter() { local i=$1; shift; nsenter -t "$(holder "$i")" --net --uts --mount -- "$@"; }
count() { cat "$dir/nodes" 2>/dev/null || echo 0; }

up() {
  local n=$1
  [[ "$n" =~ ^[1-9][0-9]?$ ]] && [ "$n" -le 16 ] || die "up N: N from 1 to 16, not '$n'"
  if [ "$(count)" -ne 0 ]; then
    [ "$(count)" -eq "$n" ] || die "a cluster of $(count) hosts is up; run down first"
    for i in $(seq "$n"); do
      alive "$i" || die "host node$i is gone; run down, then up"
      # A host a test took down (links cut, processes killed) comes back.
      ip link set "st-n$i" up
      ip link set "st-m$i" up
      [ -n "$(ip netns pids "st-node$i" | xargs -r ps -o comm= -p | grep -x sshd || true)" ] ||
        enter "$i" /usr/sbin/sshd -f "$dir/node$i/sshd_config"
      # Slurm marked a host it lost as down: its slurmd registers anew.
      if [ "$(enter 1 sinfo -h -N -n "node$i" -o %t 2>/dev/null)" != idle ]; then
        pkill -f "slurmd -N node$i" || true
        sleep 0.5
        enter "$i" slurmd -N "node$i"
        enter 1 scontrol update nodename="node$i" state=resume 2>/dev/null || true
      fi
    done
    wait_slurm
    echo "cluster_local: $n hosts up"
    return 0
  fi
  install
  mkdir -p "$dir/shared"
  chmod 1777 "$dir/shared"
  # One key for the cluster: root on any host reaches root on every other.
  [ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -f "$dir/id_ed25519"
  [ -f "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -f "$dir/host_ed25519"
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
  cat >"$dir/ssh_config" <<EOF
Host *
  User root
  IdentityFile $dir/id_ed25519
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
  # A host that vanishes (its link cut) ends the session within 15 s, so
  # mpirun learns that its daemon there is gone and ends the job (after
  # the ranks' own comm.timeout_s in the tests, which name the host).
  ServerAliveInterval 5
  ServerAliveCountMax 3
EOF
  {
    echo "127.0.0.1 localhost"
    for i in $(seq "$n"); do echo "$net.$i node$i"; done
  } >"$dir/hosts"
  ip link add "$bridge" type bridge 2>/dev/null || true
  ip addr replace "$net.254/24" dev "$bridge"
  ip link set "$bridge" up
  ip link add "$bridge1" type bridge 2>/dev/null || true
  ip addr replace "$net1.254/24" dev "$bridge1"
  ip link set "$bridge1" up
  write_slurm_config "$n"
  mkdir -p /run/shardtune-node
  echo "$n" >"$dir/nodes"
  # This machine's cgroup tree, where each host's namespaces can bind it.
  mkdir -p "$dir/cgroup"
  mountpoint -q "$dir/cgroup" || mount --rbind /sys/fs/cgroup "$dir/cgroup"
  for i in $(seq "$n"); do
    local d="$dir/node$i"
    mkdir -p "$d/scratch" "$d/run" "$d/tmp"
    chmod 1777 "$d/tmp"
    ip netns add "st-node$i"
    ip link add "st-n$i" type veth peer name eth0 netns "st-node$i"
    ip link set "st-n$i" master "$bridge" up
    ip -n "st-node$i" addr add "$net.$i/24" dev eth0
    ip -n "st-node$i" link set eth0 up
    ip -n "st-node$i" link set lo up
    ip link add "st-m$i" type veth peer name eth1 netns "st-node$i"
    ip link set "st-m$i" master "$bridge1" up
    ip -n "st-node$i" addr add "$net1.$i/24" dev eth1
    ip -n "st-node$i" link set eth1 up
    # The holder: in the host's network namespace, with a UTS and mount
    # namespace of its own (hostname, /etc/hosts, /scratch).
    ip netns exec "st-node$i" unshare --uts --mount --propagation private --fork -- sh -c "
      hostname node$i
      mount --bind '$dir/hosts' /etc/hosts
      mkdir -p /scratch && mount --bind '$d/scratch' /scratch
      mount --bind '$d/tmp' /run/shardtune-node  # node-local files of Slurm's PMIx (mpi.conf)
      mount --bind '$dir/etc-slurm' /etc/slurm  # the emulated cluster's Slurm, not this machine's
      # The host's own /sys shows its interfaces but no cgroups (slurmd needs them): this machine's.
      mount --rbind '$dir/cgroup' /sys/fs/cgroup
      echo \$\$ >'$d/holder.pid'
      exec sleep infinity" </dev/null >/dev/null 2>&1 &
    for _ in $(seq 50); do alive "$i" && [ "$(enter "$i" hostname 2>/dev/null)" = "node$i" ] && break; sleep 0.1; done
    alive "$i" || die "host node$i did not start"
    cat >"$d/sshd_config" <<EOF
ListenAddress $net.$i
HostKey $dir/host_ed25519
PidFile $d/run/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AcceptEnv OMPI_* PMIX_* SHARDTUNE_* NCCL_* OMP_*
EOF
    mkdir -p /run/sshd
    enter "$i" /usr/sbin/sshd -f "$d/sshd_config"
  done
  start_slurm "$n"
  # Every host reaches every other over ssh before anything relies on it.
  for i in $(seq "$n"); do
    for j in $(seq "$n"); do
      local got=""
      for _ in $(seq 50); do
        got=$(enter "$i" ssh -F "$dir/ssh_config" "node$j" hostname 2>/dev/null || true)
        [ "$got" = "node$j" ] && break
        sleep 0.1
      done
      [ "$got" = "node$j" ] || die "node$i cannot reach node$j over ssh"
    done
  done
  echo "cluster_local: $n hosts up (node1..node$n on $net.0/24, shared folder $dir/shared)"
}

# Slurm across the hosts: slurmctld on node1, a slurmd on every host, the
# config in $dir/etc-slurm (each host sees it as /etc/slurm), state and logs
# under $dir/slurm.
write_slurm_config() {
  local n=$1 mem
  rm -rf "$dir/slurm" "$dir/etc-slurm"
  mkdir -p "$dir/slurm/ctld" "$dir/etc-slurm"
  cp -r /etc/slurm/plugstack.conf* "$dir/etc-slurm/" 2>/dev/null || true
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  {
    echo "ClusterName=emulated"
    echo "SlurmctldHost=node1($net.1)"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "MpiDefault=pmix"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "ReturnToService=2"
    echo "StateSaveLocation=$dir/slurm/ctld"
    echo "SlurmdSpoolDir=$dir/slurm/d-%n"
    echo "SlurmctldPidFile=$dir/slurm/slurmctld.pid"
    echo "SlurmdPidFile=$dir/slurm/slurmd-%n.pid"
    echo "SlurmctldLogFile=$dir/slurm/slurmctld.log"
    echo "SlurmdLogFile=$dir/slurm/slurmd-%n.log"
    echo "JobCompType=jobcomp/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "SchedulerType=sched/backfill"
    echo "KillWait=5"
    echo "MinJobAge=300"
    echo "InactiveLimit=0"
    echo "SlurmctldTimeout=30"
    echo "SlurmdTimeout=10"  # a lost host is down (and its jobs requeued) within about 10 s
    echo "MessageTimeout=10"
    for i in $(seq "$n"); do
      echo "NodeName=node$i NodeAddr=$net.$i CPUs=$(nproc) RealMemory=$mem State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=node[1-$n] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
  } >"$dir/etc-slurm/slurm.conf"
  # /tmp is this machine's, shared by the hosts (a clone under /tmp must be
  # seen by all); PMIx's client folders, named by job and step alone, go to
  # a node-local folder instead.
  echo "PMIxCliTmpDirBase=/run/shardtune-node" >"$dir/etc-slurm/mpi.conf"
}

start_slurm() {
  local n=$1
  enter 1 slurmctld
  for i in $(seq "$n"); do enter "$i" slurmd -N "node$i"; done
  wait_slurm
}

wait_slurm() {
  for _ in $(seq 120); do
    [ "$(enter 1 sinfo -h -o %t 2>/dev/null | sort -u)" = "idle" ] && return 0
    sleep 0.5
  done
  die "Slurm's nodes never came up ($dir/slurm/*.log say why)"
}

down() {
  local n
  n=$(count)
  for i in $(seq 16); do
    local p
    p=$(holder "$i")
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      # Every process in the host's namespaces (sshd, ranks) goes with it.
      for q in $(ip netns pids "st-node$i" 2>/dev/null); do kill -9 "$q" 2>/dev/null || true; done
      kill -9 "$p" 2>/dev/null || true
    fi
    ip netns del "st-node$i" 2>/dev/null || true
    ip link del "st-n$i" 2>/dev/null || true
    ip link del "st-m$i" 2>/dev/null || true
    rm -rf "$dir/node$i"
  done
  ip link del "$bridge" 2>/dev/null || true
  ip link del "$bridge1" 2>/dev/null || true
  if mountpoint -q "$dir/cgroup"; then umount -R "$dir/cgroup"; fi
  rm -rf "$dir/nodes" "$dir/slurm" "$dir/etc-slurm"
  rmdir /run/shardtune-node 2>/dev/null || true
  echo "cluster_local: down (was $n hosts)"
}

status() {
  local n
  n=$(count)
  [ "$n" -gt 0 ] || { echo "cluster_local: no cluster"; return 1; }
  for i in $(seq "$n"); do
    if alive "$i"; then
      echo "node$i: eth0 $(enter "$i" ip -4 -o addr show dev eth0 | awk '{print $4}'), eth1 $(enter "$i" ip -4 -o addr show dev eth1 | awk '{print $4}'), sshd $(enter "$i" pgrep -c sshd || echo 0)"
    else
      echo "node$i: gone"
    fi
  done
}

case "${1:-}" in
  up) up "${2:-2}" ;;
  down) down ;;
  status) status ;;
  exec)
    [ $# -ge 3 ] || die "exec I CMD..."
    i=$2; shift 2
    alive "$i" || die "no host node$i"
    enter "$i" "$@"
    ;;
  *) echo "usage: cluster_local.sh up N | down | status | exec I CMD..." >&2; exit 2 ;;
esac

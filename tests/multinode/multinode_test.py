"""Ranks on separate hosts: emulated hosts on this machine
(scripts/cluster_local.sh: network + UTS + mount namespaces, sshd in each),
shardtune launched from node1 with launch/mpirun.sh over ssh, as on a
cluster.

    multinode_test.py SCENARIO --shardtune BIN --work DIR

  rank_table  2 hosts x 2 ranks: the rank table names node1, node1, node2,
              node2 with local ranks 0, 1, 0, 1
  net_if      --net-if eth1 carries the ranks' traffic on eth1 (its byte
              counters grow, eth0's hardly); a name no host has exits 2
              before any rank starts, naming it
  bitwise     training on 2 hosts x 2 ranks equals 1 host x 4 ranks bitwise
              (every loss, every final parameter) at ZeRO 0 and 3
  node_local  checkpoints in the shared folder are complete; a checkpoint.dir
              on each host's own /scratch is refused before training,
              naming the ranks that cannot see rank 0's folder
  slurm       srun -N 2 --ntasks-per-node 2 from node2 places 2 ranks on each
              host; sbatch --nodes=2 launch/slurm.sbatch trains bitwise as
              1 host x 4 ranks under mpirun
  slow_link   node2's eth1 at 1 Gbit/s (tc tbf): the comm benchmark across the
              hosts shows it; plan given that bandwidth predicts the step
              time on 2 hosts within 25%, free and throttled
  host_lost   node2's links cut mid-run: every rank on both hosts ends within
              comm.timeout_s + 5 s, rank 0's message naming node2's ranks
  slurm_lost  node2's links cut while launch/slurm.sbatch trains on 2 hosts x
              2 ranks: the job goes on with 2 ranks on node1 from the latest
              checkpoint (resharded), and its losses and final parameters
              match an uninterrupted 4-rank run (same samples)

The cluster must be up (scripts/test.sh brings it up and down:
`bash scripts/cluster_local.sh up 2`); without it the test is skipped
(exit 77) with a message, except under CI=true, where it fails.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from scenario import Fail, check, losses, prep_licences, run_scenario, unavailable  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CLUSTER = os.path.join(ROOT, "scripts", "cluster_local.sh")
CLUSTER_DIR = os.environ.get("CLUSTER_DIR", "/var/lib/shardtune-cluster")

CONFIG = """
model: {arch: gpt2, hidden_size: 64, num_layers: 2, num_heads: 4, max_positions: 64}
data: {train: DATA/lic-train-*.h5, seq_len: 32, micro_batch: 2, global_batch: 8}
optim: {lr: 0.003, warmup_steps: 2, schedule: cosine}
train: {steps: 6, seed: 7}
eval: {every: 0, at_start: false}
checkpoint: {every: 0, keep: 1}
log: {every: 1, progress: "off", tensorboard: false}
dist: {intra_op_threads: 1}
"""


def on_node(i, *cmd, timeout=300, env=None):
    """CMD on host node<i>, its output and exit code."""
    full = ["bash", CLUSTER, "exec", str(i), "env", "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
            f"OMPI_MCA_plm_rsh_args=-F {CLUSTER_DIR}/ssh_config", *(env or []), *cmd]
    return subprocess.run(full, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def launch(*args, hosts="node1,node2", per_node=2, net_if="eth1", timeout=300):
    """launch/mpirun.sh on node1 across hosts; cwd is carried by --wdir."""
    cmd = [os.path.join(ROOT, "launch", "mpirun.sh"), "--hosts", hosts, "--gpus-per-node", str(per_node)]
    if net_if:
        cmd += ["--net-if", net_if]
    return on_node(1, *cmd, "--", *args, timeout=timeout)


def counters(i, iface):
    p = on_node(i, "cat", f"/sys/class/net/{iface}/statistics/rx_bytes", f"/sys/class/net/{iface}/statistics/tx_bytes")
    return sum(int(x) for x in p.stdout.split())


def rank_table(a):
    """The rank table across hosts; and the cluster script's own bad input."""
    for args, said in ((["up", "0"], "up N: N from 1 to 16, not '0'"), (["up", "17"], "up N: N from 1 to 16, not '17'"),
                       (["up", "two"], "up N: N from 1 to 16, not 'two'"),
                       (["up", "3"], "a cluster of 2 hosts is up; run down first"),
                       (["exec", "9", "true"], "no host node9"), (["exec", "1"], "exec I CMD..."),
                       (["reboot"], "usage: cluster_local.sh up N | down | status | exec I CMD...")):
        p = subprocess.run(["bash", CLUSTER, *args], capture_output=True, text=True)
        check(p.returncode == 2 and said in p.stderr, f"cluster_local.sh {' '.join(args)}: exit 2, {said!r}")
    p = launch(a.shardtune, "info")
    if p.returncode != 0:
        print(p.stderr)
    check(p.returncode == 0, f"shardtune info across 2 hosts ran (exit {p.returncode})")
    print(p.stdout)
    rows = [line.split() for line in p.stdout.splitlines() if line.strip()[:1].isdigit()]
    got = [(int(r[0]), int(r[1]), int(r[2]), r[4]) for r in rows]
    check(got == [(0, 0, 2, "node1"), (1, 1, 2, "node1"), (2, 0, 2, "node2"), (3, 1, 2, "node2")],
          f"rank table: 2 hosts x 2 local ranks ({got})")


def train(a, name, zero, across):
    out = os.path.join(CLUSTER_DIR, "shared", "multinode", name)
    shutil.rmtree(out, ignore_errors=True)
    cfg = os.path.join(a.work, "tiny.yaml")
    args = [a.shardtune, "train", cfg, f"train.output_dir={out}", f"parallel.zero_stage={zero}"]
    p = launch(*args) if across else launch(*args, hosts="node1", per_node=4, net_if=None)
    if p.returncode != 0:
        print(p.stdout, p.stderr)
    check(p.returncode == 0, f"{name}: trained (exit {p.returncode})")
    return out


def net_if(a):
    before = {i: (counters(i, "eth0"), counters(i, "eth1")) for i in (1, 2)}
    train(a, "net_if", 0, True)
    after = {i: (counters(i, "eth0"), counters(i, "eth1")) for i in (1, 2)}
    for i in (1, 2):
        eth0, eth1 = (after[i][k] - before[i][k] for k in (0, 1))
        print(f"node{i}: eth0 {eth0} bytes, eth1 {eth1} bytes")
        check(eth1 > 1_000_000 and eth1 > 10 * eth0, f"node{i}: the training traffic went over eth1 ({eth1} bytes, eth0 {eth0})")
    p = launch(a.shardtune, "info", net_if="ib7")
    check(p.returncode == 2 and "--net-if ib7: no such network interface on node1" in p.stderr,
          f"--net-if ib7 exits 2 before any rank starts, naming it (exit {p.returncode}: {p.stderr.strip()[-300:]})")


def bitwise(a):
    for zero in (0, 3):
        ref = train(a, f"one_host_z{zero}", zero, False)
        got = train(a, f"two_hosts_z{zero}", zero, True)
        la, lb = losses(ref), losses(got)
        check(sorted(la) == list(range(1, 7)) and la == lb, f"ZeRO {zero}: 2 hosts x 2 ranks, losses bitwise those of 1 host x 4")
        ckpt = lambda o: load_file(os.path.join(os.path.realpath(os.path.join(o, "checkpoints", "latest")),
                                                "model.safetensors"))
        pa, pb = ckpt(ref), ckpt(got)
        check(sorted(pa) == sorted(pb) and all(np.array_equal(pa[k], pb[k]) for k in pa),
              f"ZeRO {zero}: final parameters bitwise equal")


def node_local(a):
    """Checkpoints on the shared folder are seen by all; a node-local folder
    (each host's own /scratch) is refused before training, saying so, and
    leaves no checkpoint behind."""
    out = train(a, "shared_ckpt", 2, True)
    check(os.path.exists(os.path.join(out, "checkpoints", "step_00000006", "DONE")),
          "a checkpoint in the shared folder: complete")
    cfg = os.path.join(a.work, "tiny.yaml")
    on_node(1, "rm", "-rf", "/scratch/ckpt")
    on_node(2, "rm", "-rf", "/scratch/ckpt")
    p = launch(a.shardtune, "train", cfg, f"train.output_dir={a.work}/node_local", "checkpoint.dir=/scratch/ckpt")
    print(p.stderr[-600:])
    check(p.returncode == 2 and "checkpoint.dir /scratch/ckpt is not one folder for every rank: rank(s) 2, 3 do not "
          "see what rank 0 (host node1) wrote there (node-local storage?)" in p.stderr,
          f"a node-local checkpoint.dir is refused, naming the ranks that cannot see it (exit {p.returncode})")
    left = on_node(1, "find", "/scratch/ckpt").stdout.split() + on_node(2, "find", "/scratch/ckpt").stdout.split()
    check(all(os.path.basename(x) == "ckpt" for x in left), f"no checkpoint written on either host ({left})")


def ranks_alive(pattern):
    """Pids of shardtune ranks (their command line holds pattern) on every host."""
    got = []
    for ns in ("st-node1", "st-node2"):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(a_shardtune) and pattern in cmd:
                got.append(pid)
    return got


def wait_for_step(out, alive, step):
    """Until the run writing to out has logged step (2 minutes at most) while alive() holds."""
    deadline = time.time() + 120
    while not (os.path.exists(os.path.join(out, "metrics.jsonl")) and losses(out).get(step)):
        if time.time() > deadline or not alive():
            raise Fail(f"the run never reached step {step}")
        time.sleep(0.1)


def cut_node2():
    """Both of node2's links down (`cluster_local.sh up 2` brings them back); the time of the cut."""
    cut = time.time()
    for link in ("st-n2", "st-m2"):
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
    return cut


def host_lost(a):
    """node2 cut off (both its links down) mid-run: every rank on both hosts
    ends within comm.timeout_s + 5 s and rank 0's message names node2 and
    its ranks 2 and 3."""
    global a_shardtune
    a_shardtune = a.shardtune
    timeout_s = 10
    cfg = os.path.join(a.work, "long.yaml")
    with open(os.path.join(a.work, "tiny.yaml")) as f:
        text = f.read().replace("steps: 6", "steps: 100000")
    with open(cfg, "w") as f:
        f.write(text + f"comm: {{timeout_s: {timeout_s}}}\n")
    out = os.path.join(CLUSTER_DIR, "shared", "multinode", "host_lost")
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["bash", CLUSTER, "exec", "1", "env", "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
           f"OMPI_MCA_plm_rsh_args=-F {CLUSTER_DIR}/ssh_config", os.path.join(ROOT, "launch", "mpirun.sh"),
           "--hosts", "node1,node2", "--gpus-per-node", "2", "--net-if", "eth1", "--",
           a.shardtune, "train", cfg, f"train.output_dir={out}"]
    log = open(os.path.join(a.work, "host_lost.log"), "w+")  # not a pipe: nothing blocks on a full one
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        wait_for_step(out, lambda: proc.poll() is None, 5)
        check(len(ranks_alive(out)) == 4, "4 ranks running on 2 hosts")
        cut = cut_node2()
        ended = None
        while time.time() < cut + timeout_s + 20:
            if ended is None and not ranks_alive(out):
                ended = time.time() - cut
            if ended is not None and (proc.poll() is not None or time.time() > cut + ended + 5):
                break
            time.sleep(0.1)
        launcher = time.time() - cut if proc.poll() is not None else None
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["bash", CLUSTER, "up", "2"], capture_output=True)  # links and sshd back
    log.seek(0)
    stderr = log.read()
    print("\n".join(line for line in stderr.splitlines() if "[info]" not in line)[-2000:])
    check(ended is not None and ended <= timeout_s + 5,
          f"every rank on both hosts ended {ended:.1f} s after the cut (comm.timeout_s {timeout_s} + 5)")
    # Reported, not asserted: once a rank has called MPI_Abort, Open MPI's
    # mpirun may wait on for its daemon on the unreachable host.
    print(f"the launcher: {'ended %.1f s after the cut' % launcher if launcher else 'still waiting 5 s after the ranks (killed)'}")
    check(re.search(r"rank 2 \(host node2, pid \d+\) does not answer.*rank 3 \(host node2, pid \d+\) does not answer",
                    stderr) is not None, "rank 0's message names host node2 and its ranks 2 and 3")


def slurm(a):
    """Slurm across the hosts (slurmctld on node1, a slurmd on each): srun
    -N 2 --ntasks-per-node 2 --mpi=pmix places 2 ranks on each host, and
    sbatch --nodes=2 launch/slurm.sbatch trains bitwise as 1 host x 4 ranks
    under mpirun."""
    net = ["OMPI_MCA_btl_tcp_if_include=eth1", "OMPI_MCA_oob_tcp_if_include=eth1"]
    p = on_node(2, "srun", "-N", "2", "--ntasks-per-node", "2", "--mpi=pmix", "--chdir", ROOT, a.shardtune, "info",
                env=net)
    if p.returncode != 0:
        print(p.stdout, p.stderr)
    rows = [line.split() for line in p.stdout.splitlines() if line.strip()[:1].isdigit()]
    got = [(int(r[0]), int(r[1]), r[4]) for r in rows]
    check(got == [(0, 0, "node1"), (1, 1, "node1"), (2, 0, "node2"), (3, 1, "node2")],
          f"srun from node2: 2 hosts x 2 local ranks ({got})")
    ref = train(a, "slurm_ref", 0, False)
    out = os.path.join(CLUSTER_DIR, "shared", "multinode", "slurm_job")
    shutil.rmtree(out, ignore_errors=True)
    log = os.path.join(CLUSTER_DIR, "shared", "multinode", "slurm_job.out")
    p = on_node(1, "sbatch", "--wait", "--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1",
                f"--output={log}", f"--chdir={ROOT}", os.path.join(ROOT, "launch", "slurm.sbatch"),
                os.path.join(a.work, "tiny.yaml"), f"train.output_dir={out}",
                env=net + [f"SHARDTUNE={a.shardtune}"])
    if p.returncode != 0:
        print(p.stdout, p.stderr, open(log).read() if os.path.exists(log) else "")
    check(p.returncode == 0, f"sbatch --nodes=2 launch/slurm.sbatch ran (exit {p.returncode})")
    with open(log) as f:
        text = f.read()
    check("2 node(s), 4 task(s)" in text, "the job had 2 nodes and 4 tasks")
    la, lb = losses(ref), losses(out)
    check(sorted(la) == list(range(1, 7)) and la == lb, "its losses are bitwise those of 1 host x 4 ranks")


def slurm_lost(a):
    """node2 lost while launch/slurm.sbatch trains on 2 hosts x 2 ranks:
    Slurm drops node2 from the job (--no-kill), the script starts 2 ranks
    on node1 from the step-10 checkpoint (saved by 4), and steps 11-30 and
    the final parameters match those of an uninterrupted 4-rank run."""
    cfg = os.path.join(a.work, "lost.yaml")
    with open(os.path.join(a.work, "tiny.yaml")) as f:
        text = f.read().replace("steps: 6", "steps: 30").replace("checkpoint: {every: 0, keep: 1}",
                                                                  "checkpoint: {every: 10, keep: 2}")
    with open(cfg, "w") as f:
        f.write(text + "comm: {timeout_s: 10}\n")
    ref = os.path.join(CLUSTER_DIR, "shared", "multinode", "lost_ref")
    shutil.rmtree(ref, ignore_errors=True)
    p = launch(a.shardtune, "train", cfg, f"train.output_dir={ref}", hosts="node1", per_node=4, net_if=None)
    check(p.returncode == 0, f"the reference: 1 host x 4 ranks, 30 steps (exit {p.returncode})")
    out = os.path.join(CLUSTER_DIR, "shared", "multinode", "lost_job")
    shutil.rmtree(out, ignore_errors=True)
    log = os.path.join(CLUSTER_DIR, "shared", "multinode", "lost_job.out")
    if os.path.exists(log):
        os.remove(log)
    # Each step sleeps 0.3 s (SHARDTUNE_FAULT slow), so the cut falls mid-run.
    p = on_node(1, "sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=0",
                "--cpus-per-task=1", f"--output={log}", f"--chdir={ROOT}", os.path.join(ROOT, "launch", "slurm.sbatch"),
                cfg, f"train.output_dir={out}",
                env=["OMPI_MCA_btl_tcp_if_include=eth1", "OMPI_MCA_oob_tcp_if_include=eth1", f"SHARDTUNE={a.shardtune}",
                     "SHARDTUNE_FAULT=slow@0.3"])
    check(p.returncode == 0, f"sbatch took the job ({p.stderr.strip()[-200:]})")
    job = p.stdout.strip().split(";")[0]

    def state():  # the job's state and exit code, polled (sbatch --wait polls up to 32 s apart)
        got = re.search(r"JobState=(\S+).* ExitCode=(\d+):", on_node(1, "scontrol", "-o", "show", "job", job).stdout)
        return (got.group(1), int(got.group(2))) if got else ("UNKNOWN", -1)

    try:
        wait_for_step(out, lambda: state()[0] in ("PENDING", "RUNNING"), 13)
        cut = cut_node2()
        deadline = cut + 240
        while state()[0] in ("PENDING", "RUNNING", "COMPLETING") and time.time() < deadline:
            time.sleep(0.5)
        took = time.time() - cut
        final, rc = state()
    finally:
        on_node(1, "scancel", job)
        subprocess.run(["bash", CLUSTER, "up", "2"], capture_output=True)  # links, sshd and node2's slurmd back
    with open(log) as f:
        text = f.read()
    print("\n".join(line for line in text.splitlines() if "[info]" not in line)[-3000:])
    check(final == "COMPLETED" and rc == 0, f"the job ended {final} (exit {rc}), {took:.0f} s after the cut")
    check("node(s) node2 lost" in text and "resuming on node1 with 2 rank(s)" in text,
          "the job said node2 was lost and resumed on node1 with 2 ranks")
    check(re.search(r"resumed from \S*step_00000010.*saved by 4 rank", text) is not None,
          "the 2 ranks resumed from the step-10 checkpoint saved by 4")
    want, got = losses(ref), losses(out)
    check(sorted(got) == list(range(1, 31)), "every step 1-30 logged")
    worst = max(abs(got[s] - want[s]) / abs(want[s]) for s in range(11, 31))
    check(worst < 1e-6, f"losses of steps 11-30 match the uninterrupted 4-rank run (max rel diff {worst:.1e})")
    ckpt = lambda o: load_file(os.path.join(os.path.realpath(os.path.join(o, "checkpoints", "latest")),
                                            "model.safetensors"))
    pa, pb = ckpt(ref), ckpt(out)
    d = max(float(np.abs(pa[k] - pb[k]).max() / (np.abs(pa[k]).max() + 1e-12)) for k in pa)
    check(d < 1e-6, f"final parameters within 1e-6 relative ({d:.1e})")


def busbw(a):
    """shardtune_bench_comm's all_reduce bus bandwidth (GB/s) at 64 MiB, one rank per host over eth1."""
    bench = os.path.join(os.path.dirname(a.shardtune), "benchmarks", "shardtune_bench_comm")
    p = launch(bench, "-b", "64M", "-e", "64M", "-n", "6", "-w", "2", "--rounds", "1", per_node=1)
    if p.returncode != 0:
        print(p.stdout, p.stderr)
    check(p.returncode == 0, "the comm benchmark ran across the hosts")
    row = [line.split() for line in p.stdout.splitlines() if line.strip().startswith("67108864")][0]
    return float(row[6])


WIDE = """
model: {arch: gpt2, hidden_size: 256, num_layers: 4, num_heads: 4, max_positions: 128}
data: {train: DATA/lic-train-*.h5, seq_len: 128, micro_batch: 4, global_batch: 8}
optim: {lr: 0.001, warmup_steps: 0}
train: {steps: 10, seed: 7}
eval: {every: 0, at_start: false}
checkpoint: {every: 0, at_end: false, resume: never}
log: {every: 1, progress: "off", tensorboard: false}
dist: {intra_op_threads: 1}
"""


def step_measured_and_planned(a, cfg, name, inter):
    """The median step time of 10 steps on 2 hosts x 1 rank (the first left
    out), and plan's prediction given the measured inter-host bus bandwidth."""
    out = os.path.join(CLUSTER_DIR, "shared", "multinode", name)
    shutil.rmtree(out, ignore_errors=True)
    p = launch(a.shardtune, "train", cfg, f"train.output_dir={out}", per_node=1)
    if p.returncode != 0:
        print(p.stdout, p.stderr)
    check(p.returncode == 0, f"{name}: trained on 2 hosts x 1 rank")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f if '"train"' in line]
    measured = float(np.median([r["time"]["step"] for r in recs[1:]]))
    p = subprocess.run([a.shardtune, "plan", cfg, "--ranks", "2", "--ranks-per-node", "1", "--inter-busbw", f"{inter}",
                        "--json"], capture_output=True, text=True)
    check(p.returncode == 0, f"{name}: plan --ranks 2 --ranks-per-node 1 --inter-busbw {inter:.3f}")
    plan = json.loads(p.stdout)
    return measured, plan["step_s"], plan["time"]["exposed_comm_s"]


def slow_link(a):
    """node2's eth1 throttled to 1 Gbit/s (tc tbf; this kernel has no netem,
    so no added delay): the comm benchmark across the hosts shows it, and
    plan, given the bus bandwidth the benchmark measured, predicts the step
    time on 2 hosts within 25%, free and throttled."""
    cfg = os.path.join(a.work, "wide.yaml")
    with open(cfg, "w") as f:
        f.write(WIDE.replace("DATA", os.path.join(a.work, "data")))
    rows = []
    free = busbw(a)
    rows.append(("free", free, *step_measured_and_planned(a, cfg, "link_free", free)))
    subprocess.run(["bash", CLUSTER, "exec", "2", "tc", "qdisc", "replace", "dev", "eth1", "root", "tbf", "rate",
                    "1gbit", "burst", "64kb", "latency", "50ms"], check=True)
    try:
        slow = busbw(a)
        rows.append(("1 Gbit/s", slow, *step_measured_and_planned(a, cfg, "link_slow", slow)))
    finally:
        subprocess.run(["bash", CLUSTER, "exec", "2", "tc", "qdisc", "del", "dev", "eth1", "root"])
    print("link       busbw GB/s  step measured s  planned s  (exposed comm planned)  planned/measured")
    for name, bw, measured, planned, comm in rows:
        print(f"{name:<10} {bw:>10.3f} {measured:>16.3f} {planned:>10.3f} {comm:>23.3f} {planned / measured:>17.2f}")
    check(slow <= 0.125 and free > 3 * slow,
          f"the throttled link shows: {slow:.3f} GB/s (1 Gbit/s = 0.125 GB/s) against {free:.3f} free")
    for name, _, measured, planned, _ in rows:
        check(abs(planned / measured - 1) <= 0.25, f"{name}: planned step {planned:.3f} s within 25% of {measured:.3f} s")


SCENARIOS = {f.__name__: f for f in (rank_table, net_if, bitwise, node_local, host_lost, slurm, slurm_lost,
                                      slow_link)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--shardtune", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    a.shardtune = os.path.abspath(a.shardtune)
    a.work = os.path.abspath(a.work)
    if subprocess.run(["bash", CLUSTER, "status"], capture_output=True).returncode != 0:
        return unavailable("no emulated cluster: run `bash scripts/cluster_local.sh up 2` (scripts/test.sh does)")
    os.makedirs(a.work, exist_ok=True)
    data = os.path.join(a.work, "data")
    prep_licences(a.shardtune, data, ("GPL-3", "Apache-2.0"))
    with open(os.path.join(a.work, "tiny.yaml"), "w") as f:
        f.write(CONFIG.replace("DATA", data))
    return run_scenario(a.scenario, SCENARIOS[a.scenario], a)


if __name__ == "__main__":
    sys.exit(main())

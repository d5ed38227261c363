"""Training under a real Slurm (scripts/slurm_local.sh start), one ctest entry per scenario.

    slurm_test.py SCENARIO --shardtune BIN --work DIR

    batch      sbatch launch/slurm.sbatch trains on 2 tasks: the rank table
               (ranks, local ranks, host) is right, the job ends COMPLETED
               with exit 0, metrics and the final checkpoint are there
    preempt    `scancel --signal=USR1 --batch` mid-run: the ranks save at a
               step boundary, the job requeues itself and resumes from that
               checkpoint, and ends with the losses of an uninterrupted run
    time_limit the time-limit warning (--signal=B:USR1@S) saves and ends the
               job COMPLETED before its limit (SHARDTUNE_REQUEUE=0); a
               warning before training began ends it at once, unsaved, and
               the job is submitted again
    early_stop USR1 while the job prints its rank table: it ends at once,
               COMPLETED, with nothing trained or saved (SHARDTUNE_REQUEUE=0)
    rank_killed one rank killed (SIGKILL) ends the job within seconds, with
               srun's error naming the task in the log
    srun_info  `srun -n 2 shardtune info` prints the rank table

Without Slurm (no sinfo answering) a scenario exits 77, which ctest counts
as skipped, except under CI=true, where it fails: CI starts the cluster.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from scenario import Fail, check, losses, prep_licences, run_scenario, unavailable  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SBATCH = os.path.join(HERE, "..", "..", "launch", "slurm.sbatch")
TINY = """
model: {arch: gpt2, hidden_size: 64, num_layers: 2, num_heads: 4, max_positions: 64}
data: {train: DATA/lic-train-*.h5, seq_len: 32, micro_batch: 2, global_batch: 8}
optim: {lr: 0.003, warmup_steps: 2, schedule: cosine}
train: {steps: STEPS, seed: 7, output_dir: OUT}
eval: {every: 0}
checkpoint: {every: 0, keep: 2}
log: {every: 1, progress: "off"}
dist: {intra_op_threads: 1}
"""


class Env:
    def __init__(self, args):
        self.bin = os.path.abspath(args.shardtune)
        self.work = os.path.abspath(args.work)
        self.data = os.path.join(self.work, "data")
        prep_licences(self.bin, self.data, ("GPL-3", "Apache-2.0"))

    def config(self, name, steps):
        out = os.path.join(self.work, name)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        path = os.path.join(self.work, name + ".yaml")
        with open(path, "w") as f:
            f.write(TINY.replace("DATA", self.data).replace("OUT", out).replace("STEPS", str(steps)))
        return path, out

    def sbatch(self, name, cfg, *options, env=None):
        log = os.path.join(self.work, name + ".log")
        if os.path.exists(log):
            os.remove(log)
        p = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0",
                            "--cpus-per-task=1", f"--job-name=st-{name}", f"--output={log}", *options, SBATCH, cfg],
                           capture_output=True, text=True, env=dict(os.environ, SHARDTUNE=self.bin, **(env or {})))
        if p.returncode != 0:
            raise Fail(f"sbatch failed: {p.stderr}")
        return p.stdout.strip().split(";")[0], log


def job(jobid):
    p = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S*)", p.stdout))


def wait_job(jobid, timeout=240, done=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")):
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = job(jobid)
        if j.get("JobState") in done:
            return j
        time.sleep(0.5)
    subprocess.run(["scancel", jobid])
    raise Fail(f"job {jobid} did not end within {timeout} s: {job(jobid).get('JobState')}")


def wait_step(out, step, timeout=120):
    path = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                steps = [json.loads(l)["step"] for l in f if '"train"' in l]
            if steps and max(steps) >= step:
                return
        time.sleep(0.2)
    raise Fail(f"{path} never reached step {step}")


def read(path):
    with open(path) as f:
        return f.read()


def rank_table(text):
    """(rank, local_rank, local_world, host) rows of `shardtune info`."""
    return [(int(m[0]), int(m[1]), int(m[2]), m[4])
            for m in re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s*$", text, re.M)]


# ---------------------------------------------------------------- scenarios

def batch(env):
    cfg, out = env.config("batch", 20)
    jobid, log = env.sbatch("batch", cfg)
    j = wait_job(jobid)
    text = read(log)
    print(text[-1500:])
    check(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0", f"job {jobid} COMPLETED, exit 0:0 ({j['JobState']} {j['ExitCode']})")
    host = socket.gethostname()
    check(rank_table(text) == [(0, 0, 2, host), (1, 1, 2, host)], f"rank table: ranks 0, 1; local ranks 0, 1 of 2; host {host}")
    check(sorted(losses(out)) == list(range(1, 21)), "metrics for steps 1-20")
    check(os.path.exists(os.path.join(out, "checkpoints", "step_00000020", "DONE")), "the final checkpoint is complete")


def preempt(env):
    cfg, ref = env.config("preempt_ref", 40)
    subprocess.run(["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none", env.bin, "train", cfg],
                   check=True, capture_output=True, env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
                                                           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
    cfg, out = env.config("preempt", 40)
    t0 = time.time()
    jobid, log = env.sbatch("preempt", cfg, env={"SHARDTUNE_FAULT": "slow@0.1"})
    wait_step(out, 5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", jobid], check=True)
    j = job(jobid)
    # The first run saves and requeues the job; Slurm holds a requeued job
    # back for two minutes (its begin time): let it start once it has been
    # pending a few seconds (at once, slurmd may still refuse the old credential).
    deadline = time.time() + 180
    released, pending_since = False, None
    while int(j.get("Restarts", "0")) == 0 or j["JobState"] != "COMPLETED" or sorted(losses(out))[-1:] != [40]:
        if time.time() > deadline:
            raise Fail(f"job {jobid} did not finish its requeued run: {j.get('JobState')}, restarts {j.get('Restarts')}")
        # (While it is requeued, the killed first run may show as FAILED for a moment.)
        if j.get("JobState") in ("FAILED", "CANCELLED", "TIMEOUT") and int(j.get("Restarts", "0")) == 0:
            raise Fail(f"job {jobid} ended {j['JobState']} {j.get('ExitCode')} without a requeue")
        if j.get("JobState") == "PENDING" and int(j.get("Restarts", "0")) > 0 and not released:
            pending_since = pending_since or time.time()
            if time.time() - pending_since > 5:
                subprocess.run(["scontrol", "update", f"JobId={jobid}", "StartTime=now"], capture_output=True)
                released = True
        time.sleep(0.5)
        j = job(jobid)
    text = read(log)
    print(text[-2500:])
    check("SIGUSR1: the ranks save and stop" in text and "requeued to resume" in text, "the batch script forwarded USR1 and requeued")
    saved = re.findall(r"checkpoint (\S+step_(\d+))", text)
    check(saved and "resumed from" in text, f"the ranks saved ({saved[0][0] if saved else 'nothing'}) and the rerun resumed")
    check(j["ExitCode"] == "0:0" and j["Restarts"] == "1", f"job COMPLETED after 1 restart, exit 0:0 ({j['ExitCode']})")
    a, b = losses(ref), losses(out)
    check(sorted(b) == list(range(1, 41)) and all(a[s] == b[s] for s in a), "every step's loss equals the uninterrupted run's, bitwise")
    print(f"preempt: {time.time() - t0:.1f} s from submission to the end of the requeued run")


def time_limit(env):
    # Slurm sends the warning at the resolution of its own timers: it can come
    # while the job still prints its rank table, before training began. The
    # script then stops at once with nothing new to save, and says so; the
    # job is submitted again (at most 3 times) for the save this checks.
    for attempt in range(1, 4):
        cfg, out = env.config("time_limit", 100000)
        t0 = time.time()
        jobid, log = env.sbatch("time_limit", cfg, "--time=1", "--signal=B:USR1@50", "--no-requeue",
                                env={"SHARDTUNE_FAULT": "slow@0.05", "SHARDTUNE_REQUEUE": "0"})
        j = wait_job(jobid, timeout=150)
        elapsed = time.time() - t0
        text = read(log)
        print(text[-1500:])
        check(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0", f"job COMPLETED, exit 0:0 before its 60 s limit ({j['JobState']}, {elapsed:.0f} s)")
        check("SIGUSR1: the ranks save and stop" in text, "the time-limit warning reached the batch script")
        if "stopped before training began" in text:
            check(not os.path.exists(os.path.join(out, "checkpoints")),
                  f"job {attempt}: the warning came before training began; nothing trained, nothing saved")
            continue
        saved = re.findall(r"checkpoint \S+step_(\d+)", text)
        check(saved and os.path.exists(os.path.join(out, "checkpoints", f"step_{int(saved[-1]):08d}", "DONE")),
              f"a complete checkpoint at step {saved[-1] if saved else '?'}")
        return
    raise Fail("in 3 jobs the time-limit warning came before training began")


def early_stop(env):
    cfg, out = env.config("early_stop", 100)
    jobid, log = env.sbatch("early_stop", cfg, "--no-requeue", env={"SHARDTUNE_REQUEUE": "0"})
    deadline = time.time() + 60
    while not (os.path.exists(log) and "task(s)" in read(log)):  # the script's first line: its trap is next
        if time.time() > deadline:
            raise Fail(f"job {jobid} never started")
        time.sleep(0.05)
    time.sleep(0.2)  # the rank table's srun takes a second or more
    subprocess.run(["scancel", "--signal=USR1", "--batch", jobid], check=True)
    j = wait_job(jobid, timeout=60)
    text = read(log)
    print(text[-1500:])
    check(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0", f"job COMPLETED, exit 0:0 ({j['JobState']} {j['ExitCode']})")
    check("stopped before training began" in text and "training gpt2" not in text,
          "the warning during the rank table stops the job before training")
    check(not os.path.exists(os.path.join(out, "checkpoints")), "nothing saved")


def rank_killed(env):
    cfg, out = env.config("rank_killed", 100000)
    jobid, log = env.sbatch("rank_killed", cfg, env={"SHARDTUNE_FAULT": "slow@0.05"})
    wait_step(out, 3)
    pids = subprocess.run(["pgrep", "-f", f"{env.bin} train {cfg}"], capture_output=True, text=True).stdout.split()
    ranks = [p for p in pids if "srun" not in read(f"/proc/{p}/cmdline")]
    check(len(ranks) == 2, f"two rank processes ({ranks})")
    t0 = time.time()
    os.kill(int(ranks[-1]), 9)
    j = wait_job(jobid, timeout=60)
    took = time.time() - t0
    text = read(log)
    print(text[-1500:])
    check(j["JobState"] == "FAILED", f"the job FAILED ({j['JobState']} {j['ExitCode']})")
    check(took < 20, f"it ended {took:.1f} s after the kill")
    check(re.search(r"srun: error: .*task \d+: Killed", text) is not None, "the log names the killed task")


def srun_info(env):
    p = subprocess.run(["srun", "-n", "2", "--mpi=pmix", env.bin, "info"], capture_output=True, text=True, timeout=120)
    print(p.stdout, p.stderr)
    host = socket.gethostname()
    check(p.returncode == 0, "srun -n 2 shardtune info exits 0")
    check(rank_table(p.stdout) == [(0, 0, 2, host), (1, 1, 2, host)], "the rank table has ranks 0 and 1 on this host")


SCENARIOS = {f.__name__: f for f in (batch, preempt, time_limit, early_stop, rank_killed, srun_info)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--shardtune", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    up = shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    if not up:
        return unavailable("no Slurm answers; start one with: bash scripts/slurm_local.sh start")
    return run_scenario(args.scenario, SCENARIOS[args.scenario], Env(args))


if __name__ == "__main__":
    sys.exit(main())

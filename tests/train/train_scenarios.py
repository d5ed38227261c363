"""End-to-end trainer scenarios, one per ctest entry.

    train_scenarios.py SCENARIO --shardtune BIN --mpirun MPIRUN --work DIR

Each scenario runs `shardtune train` (under mpirun for several ranks) on a
tiny GPT-2 over token shards made from Debian's licence texts, and checks
what the issue asks: golden losses, bitwise resume after SIGKILL,
resharded resume, kill -9 mid-checkpoint and mid-pruning, pruning that
spares newer checkpoints, fresh starts refused beside old checkpoints,
corrupted checkpoints (flipped bytes too) refused,
SIGTERM saves and exits 0, a signal while the ranks start stops at step 1
saved, a failing rank ends all ranks, export, TensorBoard event files.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from scenario import Fail, check, losses, prep_licences, run_scenario  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "assets", "losses", "tiny_gpt2.json")
MPI_FLAGS = ["--oversubscribe", "--bind-to", "none"]

TINY = """
model: {arch: gpt2, hidden_size: 64, num_layers: 2, num_heads: 4, max_positions: 64}
data: {train: DATA/lic-train-*.h5, val: DATA/lic-val-*.h5, seq_len: 32, micro_batch: 2, global_batch: 8}
optim: {lr: 0.003, warmup_steps: 2, schedule: cosine}
train: {steps: 20, seed: 7}
eval: {max_samples: 32}
checkpoint: {every: 0, keep: 3}
log: {every: 1, progress: "off"}
dist: {intra_op_threads: 1}
"""


class Env:
    def __init__(self, args):
        self.bin = args.shardtune
        self.mpirun = args.mpirun
        self.work = os.path.abspath(args.work)
        self.data = os.path.join(self.work, "data")

    def prepare(self):
        os.makedirs(self.work, exist_ok=True)
        prep_licences(self.bin, self.data, ("GPL-3", "Apache-2.0", "Artistic"), val_fraction=0.05)

    def config(self, name, extra="", sizes=True):
        """The tiny config; without sizes, no model line (a model from
        model.init or model.config takes none: they would be refused)."""
        path = os.path.join(self.work, name + ".yaml")
        text = TINY.replace("DATA", self.data)
        if not sizes:
            text = "\n".join(line for line in text.splitlines() if not line.startswith("model:")) + "\n"
        with open(path, "w") as f:
            f.write(text + extra)
        return path

    def cmd(self, np_, *args):
        if np_ == 0:  # no launcher at all
            return [self.bin, *args]
        return [self.mpirun, "-np", str(np_), *MPI_FLAGS, self.bin, *args]

    def run(self, np_, *args, env=None, expect_rc=0, timeout=300):
        full_env = dict(os.environ, **(env or {}))
        p = subprocess.run(self.cmd(np_, *args), env=full_env, capture_output=True, text=True, timeout=timeout)
        if expect_rc is not None and p.returncode != expect_rc:
            print(p.stdout)
            print(p.stderr)
            raise Fail(f"{' '.join(args[:2])} on {np_} rank(s): exit {p.returncode}, expected {expect_rc}")
        return p

    def train(self, np_, name, overrides=(), extra="", **kw):
        out = os.path.join(self.work, name)
        shutil.rmtree(out, ignore_errors=True)
        from_model = any(o.startswith(("model.init=", "model.config=")) for o in overrides)
        cfg = self.config(name, extra, sizes=not from_model)
        return self.run(np_, "train", cfg, f"train.output_dir={out}", *overrides, **kw), out, cfg


def params(ckpt):
    return load_file(os.path.join(ckpt, "model.safetensors"))


def latest(out):
    return os.path.realpath(os.path.join(out, "checkpoints", "latest"))


def rel_diff(a, b):
    """||a - b|| / ||a|| over all parameters together.

    Not per element: a parameter whose true gradient is zero (GPT-2's key
    bias: softmax ignores a shift of every score) gets gradients of rounding
    noise, which Adam normalises to lr-sized steps; another summation order
    (another world size) draws other noise.
    """
    num = sum(float(((a[k].astype(np.float64) - b[k]) ** 2).sum()) for k in a)
    den = sum(float((a[k].astype(np.float64) ** 2).sum()) for k in a)
    return (num / den) ** 0.5


def kill_when(env, args, fault, path, never):
    """Runs args on 2 ranks with SHARDTUNE_FAULT=fault and kills the whole
    job (SIGKILL) as soon as path exists; Fail(never) if it never does."""
    proc = subprocess.Popen(env.cmd(2, *args), env=dict(os.environ, SHARDTUNE_FAULT=fault),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while not os.path.exists(path):
        if time.time() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise Fail(never)
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# ---------------------------------------------------------------- scenarios

def golden(env, update):
    """The first 20 losses on 1 and on 2 ranks match the committed file."""
    runs = {}
    for np_ in (1, 2):
        _, out, _ = env.train(np_, f"golden_np{np_}")
        runs[np_] = losses(out)
        check(sorted(runs[np_]) == list(range(1, 21)), f"{np_} rank(s): 20 loss records")
    if update:
        with open(GOLDEN, "w") as f:
            json.dump({"config": "tests/train/train_scenarios.py TINY, byte tokenizer, GPL-3 + Apache-2.0 + Artistic",
                       "losses": [runs[1][s] for s in range(1, 21)]}, f, indent=1)
        print("wrote", GOLDEN)
    with open(GOLDEN) as f:
        want = json.load(f)["losses"]
    for np_ in (1, 2):
        got = [runs[np_][s] for s in range(1, 21)]
        worst = max(abs(g - w) / abs(w) for g, w in zip(got, want))
        check(worst < 1e-5, f"{np_} rank(s) match the golden losses (max rel diff {worst:.2e})")
    check(runs[1][20] < runs[1][1] - 1.0, "the loss falls")


def checkpointing(env, _):
    """Activation checkpointing (recomputed blocks) gives bitwise the losses
    and parameters of keeping activations, at ZeRO 0-2 on 1 and 2 ranks;
    ZeRO 3, which always recomputes, refuses to keep them."""
    base = ["train.steps=6", "checkpoint.every=6"]
    for np_ in (1, 2):
        for stage in (0, 1, 2):
            over = base + [f"parallel.zero_stage={stage}"]
            _, ref, _ = env.train(np_, f"ckpt_none_np{np_}_z{stage}", over + ["train.activation_checkpointing=none"])
            for every in (1, 2):
                p, out, _ = env.train(np_, f"ckpt_blocks_np{np_}_z{stage}_e{every}",
                                      over + ["train.activation_checkpointing=blocks", f"train.checkpoint_every={every}"])
                check(f"activation checkpointing every {every} block" in p.stderr, "the run says it recomputes")
                a, b = losses(ref), losses(out)
                check(len(a) == 6 and all(a[s] == b[s] for s in a),
                      f"{np_} rank(s), ZeRO {stage}, every {every}: losses bitwise equal")
                pa, pb = params(latest(ref)), params(latest(out))
                check(all(np.array_equal(pa[k], pb[k]) for k in pa),
                      f"{np_} rank(s), ZeRO {stage}, every {every}: parameters bitwise equal")
    p = env.run(0, "config", env.config("ckpt_z3_none"), "parallel.zero_stage=3",
                "train.activation_checkpointing=none", expect_rc=2)
    check("train.activation_checkpointing: none is not available at parallel.zero_stage 3" in p.stderr,
          "ZeRO 3 without recomputation is refused by name")


def resume_kill(env, _):
    """SIGKILL at step 7 and resume on the same world size: bitwise equal."""
    over = ["parallel.zero_stage=2", "checkpoint.every=4"]
    _, ref, _ = env.train(2, "resume_ref", over)
    p, out, cfg = env.train(2, "resume_kill", over, env={"SHARDTUNE_FAULT": "kill@1:6"}, expect_rc=None)
    check(p.returncode != 0, f"the killed run failed (exit {p.returncode})")
    check(os.path.basename(latest(out)) == "step_00000004", "its newest complete checkpoint is step 4")
    p = env.run(2, "train", cfg, f"train.output_dir={out}", *over)
    check("resumed from" in p.stderr and "step_00000004" in p.stderr, "the rerun resumed from step 4")
    a, b = losses(ref), losses(out)
    check(all(a[s] == b[s] for s in range(1, 21)), "losses of every step are bitwise equal")
    pa, pb = params(latest(ref)), params(latest(out))
    check(all(np.array_equal(pa[k], pb[k]) for k in pa), "final parameters are bitwise equal")
    oa = load_file(os.path.join(latest(ref), "optim", "rank_00001.safetensors"))
    ob = load_file(os.path.join(latest(out), "optim", "rank_00001.safetensors"))
    check(all(np.array_equal(oa[k], ob[k]) for k in oa), "final optimizer state is bitwise equal")


def reshard(env, _):
    """Saved on 2 ranks (ZeRO 1) at step 10, resumed on 1 (ZeRO 0) and on 4 (ZeRO 3 + offload)."""
    _, ref, _ = env.train(2, "reshard_ref", ["parallel.zero_stage=1"])
    _, saved, cfg = env.train(2, "reshard_saved", ["parallel.zero_stage=1", "checkpoint.every=10"],
                              env={"SHARDTUNE_FAULT": "kill@0:12"}, expect_rc=None)
    check(os.path.basename(latest(saved)) == "step_00000010", "checkpoint at step 10 on 2 ranks")
    want, want_params = losses(ref), params(latest(ref))
    for np_, stage, offload in ((1, 0, "none"), (4, 3, "cpu")):
        out = os.path.join(env.work, f"reshard_np{np_}")
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(os.path.join(saved, "checkpoints", "step_00000010"),
                        os.path.join(out, "checkpoints", "step_00000010"))
        p = env.run(np_, "train", cfg, f"train.output_dir={out}", f"parallel.zero_stage={stage}",
                    f"optim.offload={offload}")
        check("saved by 2 rank(s)" in p.stderr, f"{np_} rank(s), ZeRO {stage}: resumed from the 2-rank checkpoint")
        got = losses(out)
        worst = max(abs(got[s] - want[s]) / abs(want[s]) for s in range(11, 21))
        check(worst < 1e-6, f"{np_} rank(s): losses of steps 11-20 match (same samples; max rel diff {worst:.1e})")
        d = rel_diff(want_params, params(latest(out)))
        check(d < 1e-6, f"{np_} rank(s): final parameters within 1e-6 relative ({d:.1e})")


def kill_mid_checkpoint(env, _):
    """kill -9 while the step-8 checkpoint is being written."""
    cfg = env.config("midckpt")
    out = os.path.join(env.work, "midckpt")
    shutil.rmtree(out, ignore_errors=True)
    tmp = os.path.join(out, "checkpoints", "step_00000008.tmp")
    kill_when(env, ["train", cfg, f"train.output_dir={out}", "checkpoint.every=4"], "stall_checkpoint@8:60",
              os.path.join(tmp, "trainer_state.json"), "the step-8 checkpoint never reached its last file")
    check(os.path.isdir(tmp) and not os.path.exists(os.path.join(tmp, "DONE")), "step 8 was left half-written")
    check(os.path.basename(latest(out)) == "step_00000004", "latest still names step 4")
    p = env.run(1, "eval", cfg, "--checkpoint", latest(out))
    check("val_loss" in p.stdout, "step 4 is loadable (eval)")
    p = env.run(2, "train", cfg, f"train.output_dir={out}", "checkpoint.every=4")
    check("resumed from" in p.stderr and "step_00000004" in p.stderr, "resume took step 4, not the partial one")
    check(not os.path.exists(tmp), "the partial checkpoint was cleaned up")


def corrupt(env, _):
    """Truncated or damaged checkpoints are refused with the path and the reason."""
    _, out, cfg = env.train(2, "corrupt_src", ["checkpoint.every=10"])
    good = os.path.join(out, "checkpoints", "step_00000010")

    def damaged(name, damage, reason, export=True):
        bad = os.path.join(env.work, "corrupt", name)
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(good, bad)
        damage(bad)
        for argv in (["train", cfg, f"train.output_dir={env.work}/corrupt_run", f"checkpoint.resume={bad}"],
                     ["export", "--checkpoint", bad, "--output", f"{env.work}/corrupt_export"])[:2 if export else 1]:
            p = env.run(1, *argv, expect_rc=2)
            check(bad in p.stderr and reason in p.stderr, f"{name}: {argv[0]} refuses it: {reason!r}")

    def truncate(path, keep):
        with open(path, "r+b") as f:
            f.truncate(keep)

    damaged("truncated_optim", lambda d: truncate(os.path.join(d, "optim", "rank_00001.safetensors"), 1000),
            "rank_00001.safetensors")
    damaged("truncated_model", lambda d: truncate(os.path.join(d, "model.safetensors"), 5000), "model.safetensors")
    damaged("no_done", lambda d: os.remove(os.path.join(d, "DONE")), "DONE is missing")
    damaged("missing_rank", lambda d: os.remove(os.path.join(d, "optim", "rank_00001.safetensors")),
            "rank_00001.safetensors is missing")

    def garble(d):
        with open(os.path.join(d, "trainer_state.json"), "w") as f:
            f.write("{not json")
    damaged("bad_state", garble, "trainer_state.json")

    def flip(path, at_end):
        # One byte of tensor data (the last byte of the file is the last tensor's).
        with open(path, "r+b") as f:
            f.seek(-at_end, os.SEEK_END)
            b = f.read(1)
            f.seek(-at_end, os.SEEK_END)
            f.write(bytes([b[0] ^ 0x10]))
    damaged("flipped_model_byte", lambda d: flip(os.path.join(d, "model.safetensors"), 3), "fails its checksum")
    # export reads no optimizer state; resuming does.
    damaged("flipped_optim_byte", lambda d: flip(os.path.join(d, "optim", "rank_00000.safetensors"), 5),
            "fails its checksum", export=False)
    def nan_in(path, name):
        # A NaN with checksums recomputed (dropped): the finite check, not the checksum, must catch it.
        from safetensors import safe_open
        from safetensors.numpy import save_file
        with safe_open(path, "np") as f:
            meta = {k: v for k, v in (f.metadata() or {}).items() if not k.startswith("crc32c:")}
            tensors = {k: f.get_tensor(k).copy() for k in f.keys()}
        tensors[name].reshape(-1)[0] = np.nan
        save_file(tensors, path, metadata=meta)
    damaged("nan_model_weight", lambda d: nan_in(os.path.join(d, "model.safetensors"), "transformer.wte.weight"),
            "tensor 'transformer.wte.weight' holds NaN")
    damaged("nan_optimizer_moment", lambda d: nan_in(os.path.join(d, "optim", "rank_00000.safetensors"), "exp_avg"),
            "rank_00000.safetensors: tensor 'exp_avg' holds NaN", export=False)
    # The source checkpoint is untouched and still resumes.
    p = env.run(2, "train", cfg, f"train.output_dir={out}", "checkpoint.every=10")
    check("resumed from" in p.stderr, "the good checkpoint still resumes")


def prune_kill(env, _):
    """kill -9 in the middle of deleting an old checkpoint: only complete,
    loadable checkpoints remain under step_N names, and resume works."""
    cfg = env.config("prune")
    out = os.path.join(env.work, "prune")
    shutil.rmtree(out, ignore_errors=True)
    kill_when(env, ["train", cfg, f"train.output_dir={out}", "checkpoint.every=2", "checkpoint.keep=1"],
              "stall_prune@6:60", os.path.join(out, "checkpoints", "step_00000004.deleting"),
              "step 4 was never being deleted")
    ckdir = os.path.join(out, "checkpoints")
    names = sorted(n for n in os.listdir(ckdir) if n.startswith("step_") and n[5:].isdigit())
    check(names == ["step_00000006"], f"only the complete step 6 keeps a checkpoint name ({names})")
    check(os.path.basename(latest(out)) == "step_00000006", "latest names step 6")
    p = env.run(1, "eval", cfg, "--checkpoint", latest(out))
    check("val_loss" in p.stdout, "step 6 is loadable (eval)")
    p = env.run(2, "train", cfg, f"train.output_dir={out}", "checkpoint.every=2", "checkpoint.keep=1",
                "train.steps=8")
    check("resumed from" in p.stderr and "step_00000006" in p.stderr, "resume took step 6")
    left = sorted(os.listdir(ckdir))
    check(left == ["latest", "step_00000008"], f"the half-deleted folder was cleaned up, step 6 pruned ({left})")


def prune_newer_and_fresh_start(env, _):
    """Pruning never deletes a newer checkpoint (another run's); resume: never
    into a folder that holds checkpoints is refused unless overwrite."""
    _, out, cfg = env.train(1, "newer", ["checkpoint.every=4", "train.steps=12", "checkpoint.keep=2"])
    ck = os.path.join(out, "checkpoints")
    env.run(1, "train", cfg, f"train.output_dir={out}", f"checkpoint.resume={ck}/step_00000008",
            "checkpoint.every=2", "checkpoint.keep=1", "train.steps=10")
    left = sorted(os.listdir(ck))
    check(left == ["latest", "step_00000010", "step_00000012"],
          f"a resumed run's pruning keeps the newer step 12 and drops step 8 ({left})")
    check(os.path.basename(latest(out)) == "step_00000010", "latest names the newest written, step 10")
    p = env.run(1, "train", cfg, f"train.output_dir={out}", "checkpoint.resume=never", expect_rc=2)
    check("already holds" in p.stderr and ck in p.stderr and "checkpoint.overwrite" in p.stderr,
          "resume: never beside earlier checkpoints is refused, naming the folder")
    check(sorted(os.listdir(ck)) == left, "and nothing was deleted")
    env.run(1, "train", cfg, f"train.output_dir={out}", "checkpoint.resume=never", "checkpoint.overwrite=true",
            "train.steps=4", "checkpoint.every=4")
    check(sorted(os.listdir(ck)) == ["latest", "step_00000004"], "checkpoint.overwrite: a fresh run replaces them")


def proc_status(pid):
    """/proc/PID/status as a dict, or {} once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def children(pid):
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(d))
    return found


def sigterm(env, _):
    """SIGTERM to one rank under mpirun: every rank saves, all exit 0."""
    cfg = env.config("sigterm")
    out = os.path.join(env.work, "sigterm")
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(env.cmd(2, "train", cfg, f"train.output_dir={out}", "train.steps=1000000",
                                    "log.every=1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 120
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        if time.time() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise Fail("training never started")
        time.sleep(0.05)
    ranks = children(proc.pid)
    check(len(ranks) == 2, f"found the 2 rank processes {ranks}")
    os.kill(int(ranks[1]), signal.SIGTERM)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise Fail("the job did not end after SIGTERM")
    check(proc.returncode == 0, f"mpirun exited 0 (got {proc.returncode})")
    check("stopped by a signal, saved" in stdout, "the trainer says it stopped and saved")
    ckpt = latest(out)
    check(os.path.exists(os.path.join(ckpt, "DONE")), f"a complete checkpoint: {os.path.basename(ckpt)}")
    check(all(os.path.exists(os.path.join(ckpt, "optim", f"rank_0000{r}.safetensors")) for r in (0, 1)),
          "both ranks saved their optimizer state")


def signal_at_start(env, _):
    """SIGUSR1 while the ranks start, before MPI is up: they train one step,
    save it and exit 0 (the signal is neither fatal nor lost)."""
    cfg = env.config("signal_at_start")
    out = os.path.join(env.work, "signal_at_start")
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(env.cmd(2, "train", cfg, f"train.output_dir={out}", "train.steps=1000000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    usr1 = 1 << (signal.SIGUSR1 - 1)
    binary = os.path.realpath(env.bin)
    signalled = {}  # pid: its thread count when signalled
    deadline = time.time() + 60
    while len(signalled) < 2:
        if proc.poll() is not None:
            stdout, stderr = proc.communicate()
            print(stdout[-1500:], stderr[-1500:])
            raise Fail(f"the job ended (exit {proc.returncode}) before both ranks were signalled ({signalled})")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise Fail(f"the 2 ranks never caught SIGUSR1 (signalled: {signalled})")
        for pid in children(proc.pid):
            # Once the rank (shardtune already, not the launcher's fork
            # before exec, which catches USR1 too) catches USR1. The
            # executable is read before the status: a status read first could
            # be the fork's, with the exec landing between the two reads.
            try:
                exe = os.path.realpath(f"/proc/{pid}/exe")
            except OSError:
                continue
            if exe != binary:
                continue
            st = proc_status(pid)
            if pid not in signalled and int(st.get("SigCgt", "0"), 16) & usr1:
                os.kill(pid, signal.SIGUSR1)
                signalled[pid] = int(st["Threads"])
        time.sleep(0.001)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise Fail("the job did not end after SIGUSR1")
    print(stdout[-1500:], stderr[-1500:])
    # MPI's start makes threads: a rank signalled with one thread had not begun it.
    check(1 in signalled.values(), f"a rank was signalled before MPI started (threads then: {signalled})")
    check(proc.returncode == 0, f"mpirun exited 0 (got {proc.returncode})")
    check("steps 0 -> 1 " in stdout and "stopped by a signal, saved" in stdout,
          "the ranks trained one step, saved and stopped")
    check(sorted(losses(out)) == [1], "metrics for step 1 alone")
    check(os.path.exists(os.path.join(out, "checkpoints", "step_00000001", "DONE")),
          "the checkpoint of step 1 is complete")


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def bad_steps(env, _):
    """A non-finite loss (so gradients) on one rank: every rank skips that
    update, the metrics count it, the weights stay as they were; a run of
    train.max_bad_steps such steps stops the run, no checkpoint of them
    written. A malformed SHARDTUNE_FAULT is refused like a bad setting."""
    every = ["checkpoint.every=1", "checkpoint.keep=20", "train.steps=7"]
    p, clean, _ = env.train(2, "bad_clean", every)
    logged = p.stdout + p.stderr
    check(re.search(r"step 7/7 loss [0-9.]+ lr \S+ grad_norm [0-9.]+ \d+ tok/s elapsed \d\d:\d\d eta 00:00", logged)
          is not None, "without a terminal, one plain line per interval with the elapsed time and ETA")
    _, out, _ = env.train(2, "bad_two", every, env={"SHARDTUNE_FAULT": "nan@1:3:2"})
    recs = {r["step"]: r for r in metrics(out) if r["type"] == "train"}
    ref = losses(clean)
    check([s for s in sorted(recs) if recs[s]["skipped"]] == [4, 5], "steps 4 and 5 (NaN on rank 1) were skipped")
    check(all(recs[s]["loss"] == ref[s] for s in (1, 2, 3)), "the steps before them as a clean run's")
    check(recs[5]["loss"] == "NaN" and recs[7]["skipped_steps"] == 2, "the metrics record the NaN and count 2 skipped")
    ck = lambda o, n: params(os.path.join(o, "checkpoints", f"step_{n:08d}"))
    w3, w5 = ck(out, 3), ck(out, 5)
    check(all(np.array_equal(w3[k], w5[k]) for k in w3), "the weights after the skipped steps are those of step 3")
    check(all(np.isfinite(v).all() for n in range(1, 8) for v in ck(out, n).values()),
          "every checkpoint holds finite weights")
    check(np.isfinite(recs[7]["loss"]) and rel_diff(ck(clean, 7), ck(out, 7)) > 0,
          "training went on after them (finite loss at step 7)")

    p, out, _ = env.train(2, "bad_run", every + ["train.max_bad_steps=3"], env={"SHARDTUNE_FAULT": "nan@0:2:100"},
                          expect_rc=None)
    check(p.returncode not in (0, 2) and "3 steps in a row (to step 5) had a non-finite loss" in p.stderr
          and "The last checkpoint is of step 4" in p.stderr, f"3 bad steps in a row stop the run (exit {p.returncode})")
    done = sorted(d for d in os.listdir(os.path.join(out, "checkpoints")) if d.startswith("step_"))
    check(done == [f"step_{n:08d}" for n in range(1, 5)], f"checkpoints of steps 1-4 alone ({done})")

    for bad in ("throw@1:3x", "nan@1:3", "kill@-1:2", "slow@nan", "explode@1:1"):
        p, _, _ = env.train(1, "bad_fault", ["train.steps=1"], env={"SHARDTUNE_FAULT": bad}, expect_rc=2)
        check(f"SHARDTUNE_FAULT: '{bad}' is not" in p.stderr, f"SHARDTUNE_FAULT={bad} refused (exit 2)")


def tensorboard_points(folder):
    """{tag: [(step, value)]} and the config text, as TensorBoard reads the
    event files of folder (its EventAccumulator, purging what a restart
    marker drops)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(folder, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    points = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    texts = [t.tensor_proto.string_val[0].decode() for t in acc.Tensors("config")] if "config" in acc.Tags()["tensors"] else []
    return points, texts


def expected_points(out):
    """metrics.jsonl as TensorBoard points: every number of each record (the
    last record of a step: a resumed run wrote it again) under type/key."""
    last = {}
    for r in metrics(out):
        last[(r["type"], r["step"])] = r
    points = {}

    def walk(prefix, step, obj):
        for k, v in obj.items():
            if isinstance(v, dict):
                walk(f"{prefix}/{k}", step, v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                points.setdefault(f"{prefix}/{k}", []).append((step, float(np.float32(v))))

    for (kind, step), r in sorted(last.items()):
        walk(kind, step, {k: v for k, v in r.items() if k not in ("type", "step")})
    return points


def tensorboard(env, _):
    """log.tensorboard: rank 0's event files hold every scalar of
    metrics.jsonl and the config; after a kill and a resume from step 4, the
    first attempt's points past step 4 do not show; false writes none, a
    folder puts them there."""
    over = ["checkpoint.every=4", "train.steps=8", "eval.every=2"]
    p, out, cfg = env.train(2, "tb", over, env={"SHARDTUNE_FAULT": "kill@1:6"}, expect_rc=None)
    check(p.returncode != 0 and os.path.basename(latest(out)) == "step_00000004", "the killed run saved step 4 only")
    first = {r["step"] for r in metrics(out) if r["type"] == "train"}
    check(max(first) >= 5, f"the first attempt logged steps past the checkpoint ({sorted(first)})")
    env.run(2, "train", cfg, f"train.output_dir={out}", *over)
    folder = os.path.join(out, "tensorboard")
    check(len([f for f in os.listdir(folder) if f.startswith("events.out.tfevents.")]) == 2,
          "one event file per attempt")
    got, texts = tensorboard_points(folder)
    want = expected_points(out)
    check(sorted(got) == sorted(want), f"the same tags as metrics.jsonl's numbers ({sorted(set(got) ^ set(want))})")
    for tag in want:
        check(got[tag] == want[tag], f"{tag}: TensorBoard {got[tag]} == metrics.jsonl {want[tag]}")
    check([s for s, _ in got["train/loss"]] == list(range(1, 9)), "train/loss: steps 1-8, each once")
    check([s for s, _ in got["eval/val_loss"]] == [2, 4, 6, 8], "eval/val_loss at steps 2, 4, 6, 8")
    for tag in ("train/lr", "train/grad_norm", "train/tokens_per_s", "train/time/fwd_bwd", "train/memory/params"):
        check(tag in got, f"{tag} is written")
    check(len(texts) == 2 and all("seq_len: 32" in t for t in texts), "the config as text, once per attempt")

    _, off, _ = env.train(1, "tb_off", ["train.steps=2", "log.tensorboard=false"])
    check(not os.path.exists(os.path.join(off, "tensorboard")), "log.tensorboard=false writes no event file")
    there = os.path.join(env.work, "tb_elsewhere")
    shutil.rmtree(there, ignore_errors=True)
    _, out, _ = env.train(1, "tb_dir", ["train.steps=2", f"log.tensorboard={there}"])
    got, _ = tensorboard_points(there)
    check(got == expected_points(out), "log.tensorboard=DIR writes there, the same points")
    for bad in ("yes", "False", "''"):
        p, _, _ = env.train(1, "tb_bad", ["train.steps=1", f"log.tensorboard={bad}"], expect_rc=2)
        check("log.tensorboard" in p.stderr and "true, false or a folder" in p.stderr, f"log.tensorboard={bad} refused")


def failing_rank(env, _):
    """A rank that throws mid-step ends every rank, non-zero, promptly."""
    start = time.time()
    p, _, _ = env.train(2, "failing", ["train.steps=1000000"], env={"SHARDTUNE_FAULT": "throw@1:3"},
                        expect_rc=None, timeout=60)
    took = time.time() - start
    check(p.returncode != 0, f"the job failed (exit {p.returncode})")
    check("injected failure" in p.stderr and "rank 1" in p.stderr, "the error names the failing rank")
    check(took < 30, f"all ranks ended within {took:.1f} s")
    # A rank killed outright: shardtune's own message names it too, not only mpirun's.
    start = time.time()
    p, _, _ = env.train(2, "killed", ["train.steps=1000000"], env={"SHARDTUNE_FAULT": "kill@1:3"}, expect_rc=None,
                        timeout=60)
    took = time.time() - start
    check(p.returncode != 0 and "shardtune: error on rank 0 of 2: rank 1 (host " in p.stderr and " died:" in p.stderr,
          f"a killed rank is named by the others (exit {p.returncode}, {took:.1f} s)")


def export_roundtrip(env, _):
    """Pretrain, export; LoRA fine-tune from the export with ZeRO 2; export merged
    and as an adapter; transformers/peft load both and agree; eval matches."""
    import torch
    from transformers import AutoModelForCausalLM
    from peft import PeftModel
    _, pre, cfg = env.train(2, "export_pre", ["train.steps=6"])
    base = os.path.join(env.work, "export_base")
    env.run(0, "export", "--checkpoint", latest(pre), "--output", base, "--overwrite")
    _, fresh, _ = env.train(1, "export_config", ["train.steps=2", f"model.config={base}/config.json"])
    got = load_file(os.path.join(latest(fresh), "model.safetensors"))
    check(got["transformer.wte.weight"].shape == (260, 64), "model.config: random init of the exported architecture")
    p, _, _ = env.train(1, "export_config_size", ["train.steps=2", f"model.config={base}/config.json",
                                                  "model.hidden_size=32"], expect_rc=2)
    check("model.hidden_size: has no effect with model.config set" in p.stderr,
          "a random-init size beside model.config is refused, not dropped")
    lora = ["train.steps=6", f"model.init={base}", "model.lora.rank=4", "model.lora.targets=[c_attn, c_fc]",
            "parallel.zero_stage=2", "optim.lr=0.01"]
    _, ft, cfg = env.train(2, "export_lora", lora)
    merged, adapter = os.path.join(env.work, "export_merged"), os.path.join(env.work, "export_adapter")
    env.run(0, "export", "--checkpoint", latest(ft), "--output", merged, "--overwrite")
    env.run(0, "export", "--checkpoint", latest(ft), "--output", adapter, "--adapter", "--overwrite")
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    m = AutoModelForCausalLM.from_pretrained(merged).eval()
    b = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        lm, lb, lp = m(ids).logits, b(ids).logits, plain(ids).logits
    d = float((lm - lb).abs().max())
    check(d < 1e-4, f"merged export and base + PEFT adapter agree (max |diff| {d:.1e})")
    check(float((lm - lp).abs().max()) > 1e-3, "the adapter changed the model")
    p = env.run(2, "eval", cfg, "--checkpoint", latest(ft), *lora)
    check("val_loss" in p.stdout, "eval of the LoRA checkpoint on 2 ranks")


SCENARIOS = {f.__name__: f for f in (golden, checkpointing, resume_kill, reshard, kill_mid_checkpoint, prune_kill,
                                      prune_newer_and_fresh_start, corrupt, sigterm, signal_at_start, failing_rank, bad_steps,
                                      export_roundtrip, tensorboard)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--shardtune", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--update-golden", action="store_true")
    args = ap.parse_args()
    env = Env(args)
    env.prepare()
    return run_scenario(args.scenario, SCENARIOS[args.scenario], env, args.update_golden)


if __name__ == "__main__":
    sys.exit(main())

"""`shardtune plan` against measurement.

    plan_vs_measured.py --shardtune BIN --mpirun MPIRUN --work DIR [--steps N]

For several configurations (ZeRO 0-3, with and without activation
checkpointing and optimizer offload, on 1, 2 and 4 ranks) it trains a small
GPT-2 for a few steps and compares what `shardtune plan --json` predicted
with what the run's metrics say: parameters, gradients and optimizer state
within 10% of the engine's accounting, the step time within 25% of the
measured median (rows with more ranks than cores are shown, not checked:
the planner does not model ranks time-sharing cores); and Gemma 2's
soft-capped attention, whose seq x seq scores the planner counts, against
the peak resident set it adds (within 25%). A row that misses
is measured once more (timings here are noisy). Prints the table; exits 1
if any row misses.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from scenario import prep_licences  # noqa: E402

MPI_FLAGS = ["--oversubscribe", "--bind-to", "none"]
CONFIG = """
model: {arch: gpt2, hidden_size: 256, num_layers: 4, num_heads: 4, max_positions: 256, vocab_size: 8192}
data: {train: DATA/lic-train-*.h5, seq_len: 256, micro_batch: 4, global_batch: 16}
optim: {lr: 0.001, warmup_steps: 0}
train: {steps: STEPS}
eval: {every: 0, at_start: false}
checkpoint: {every: 0, at_end: false, resume: never}
log: {every: 1, progress: "off"}
dist: {intra_op_threads: 1}
"""
# ranks, ZeRO stage, activation checkpointing, optimizer offload
CASES = [
    (1, 0, "none", "none"),
    (2, 1, "blocks", "none"),
    (2, 2, "none", "none"),
    (2, 3, "auto", "cpu"),
    (4, 3, "auto", "none"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shardtune", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    data = os.path.join(work, "data")
    prep_licences(args.shardtune, data, ("GPL-3", "Apache-2.0", "LGPL-3"))
    cfg = os.path.join(work, "plan.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.replace("DATA", data).replace("STEPS", str(args.steps)))

    def run_case(ranks, stage, ckpt, offload):
        over = [f"parallel.zero_stage={stage}", f"train.activation_checkpointing={ckpt}", f"optim.offload={offload}"]
        out = os.path.join(work, f"np{ranks}-z{stage}-{ckpt}-{offload}")
        shutil.rmtree(out, ignore_errors=True)
        p = subprocess.run([args.shardtune, "plan", cfg, *over, "--ranks", str(ranks), "--json"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(p.stderr)
        plan = json.loads(p.stdout)
        p = subprocess.run([args.mpirun, "-np", str(ranks), *MPI_FLAGS, args.shardtune, "train", cfg, *over,
                            f"train.output_dir={out}"], capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(p.stderr)
        recs = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"train"' in l]
        mem = recs[-1]["memory"]
        step = statistics.median(r["time"]["step"] for r in recs[2:])
        row = {"case": f"{ranks} rank(s), ZeRO {stage}, ckpt {ckpt}, offload {offload}"}
        for key in ("params", "grads", "optimizer"):
            row[key] = (plan["memory"][key], mem[key])
        row["step_s"] = (plan["step_s"], step)
        misses = [f"{row['case']}: {key} predicted {row[key][0]:.0f}, engine {row[key][1]:.0f}"
                  for key in ("params", "grads", "optimizer") if abs(row[key][0] - row[key][1]) > 0.10 * row[key][1]]
        # More ranks than cores: they time-share the cores and the MPI
        # progress of the waiting ones; the planner does not model that, so
        # the row is shown, not checked.
        row["timed"] = ranks <= cores
        if row["timed"] and abs(row["step_s"][0] - step) > 0.25 * step:
            misses.append(f"{row['case']}: step predicted {row['step_s'][0]:.3f} s, measured median {step:.3f} s")
        return row, misses

    cores = os.cpu_count()
    rows, bad = [], []
    for case in CASES:
        row, misses = run_case(*case)
        if misses:  # this machine's timings are noisy: measure a miss once more
            print("measuring again:", "; ".join(misses))
            row, misses = run_case(*case)
        rows.append(row)
        bad += misses

    print(f"{'case':<44} {'params MB':>16} {'grads MB':>16} {'optimizer MB':>16} {'step s':>15} {'ratio':>6}")
    for r in rows:
        cells = [f"{r[k][0] / 1e6:7.2f}/{r[k][1] / 1e6:<7.2f}" for k in ("params", "grads", "optimizer")]
        ratio = r["step_s"][0] / r["step_s"][1]
        print(f"{r['case']:<44} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} "
              f"{r['step_s'][0]:6.3f}/{r['step_s'][1]:<7.3f} {ratio:6.2f}{'' if r['timed'] else ' (more ranks than cores)'}")
    print("(predicted/measured: parameters, gradients and optimizer state per rank; step time, measured median)")
    bad += softcap_activations(args, work, data)
    for b in bad:
        print("MISS:", b)
    return 1 if bad else 0


GEMMA2 = """{"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"], "vocab_size": 512,
 "max_position_embeddings": 1024, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
 "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 16, "hidden_activation": "gelu_pytorch_tanh",
 "query_pre_attn_scalar": 16, "sliding_window": 4096, "attn_logit_softcapping": CAP,
 "final_logit_softcapping": null, "tie_word_embeddings": true, "torch_dtype": "float32"}"""


def softcap_activations(args, work, data):
    """Gemma 2's soft-capped attention keeps seq x seq scores per head (no
    fused kernel takes a cap): the planner's activation difference between
    the model with and without the cap is held to the measured difference
    of the peak resident set (within 25%)."""
    got = {}
    for cap in ("50.0", "null"):
        folder = os.path.join(work, f"gemma2-cap-{cap}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            f.write(GEMMA2.replace("CAP", cap))
        cfg = os.path.join(work, f"gemma2-cap-{cap}.yaml")
        out = os.path.join(work, f"gemma2-cap-{cap}-run")
        shutil.rmtree(out, ignore_errors=True)
        with open(cfg, "w") as f:
            f.write(f"model: {{config: {folder}}}\n"
                    f"data: {{train: {data}/lic-train-*.h5, seq_len: 1024, micro_batch: 4, global_batch: 4}}\n"
                    f"train: {{steps: 3, output_dir: {out}}}\neval: {{every: 0, at_start: false}}\n"
                    "checkpoint: {every: 0, at_end: false, resume: never}\nlog: {every: 1, progress: \"off\"}\n"
                    "dist: {intra_op_threads: 1}\n")
        p = subprocess.run([args.shardtune, "plan", cfg, "--json"], capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(p.stderr)
        planned = json.loads(p.stdout)["memory"]["activations"]
        p = subprocess.run([args.shardtune, "train", cfg], capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(p.stderr)
        recs = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"train"' in l]
        got[cap] = (planned, max(r["memory"]["peak_host"] for r in recs))
    plan_d = got["50.0"][0] - got["null"][0]
    meas_d = got["50.0"][1] - got["null"][1]
    print(f"gemma2 soft-capped attention, 4 layers, seq 1024, micro-batch 4: activations with - without the cap: "
          f"planned {plan_d / 2**20:.0f} MiB, measured peak resident set {meas_d / 2**20:.0f} MiB")
    if abs(plan_d - meas_d) > 0.25 * meas_d:
        return [f"gemma2 soft-cap activations: planned {plan_d / 2**20:.0f} MiB, measured {meas_d / 2**20:.0f} MiB"]
    return []


if __name__ == "__main__":
    sys.exit(main())

"""Checks and tables of the GPU check's training part (scripts/gpu_check_train.sh).

    gpu_check_compare.py step CPU_RUN GPU_RUN
        one fp32 step on the GPU equals the CPU's: loss, gradient norm and the
        updated parameters within 1e-4 relative (exit 1 otherwise)
    gpu_check_compare.py table GPU_NAME GPT2_RUN PYTORCH_JSON BIG_RUN
        the tokens/s and MFU table
"""
import json
import sys


def last_train_record(run):
    try:
        with open(run + "/metrics.jsonl") as f:
            return [json.loads(line) for line in f if '"train"' in line][-1]
    except (OSError, IndexError):
        return None


def step(cpu, gpu):
    import numpy as np
    from safetensors.numpy import load_file
    c, g = last_train_record(cpu), last_train_record(gpu)
    a = load_file(cpu + "/checkpoints/latest/model.safetensors")
    b = load_file(gpu + "/checkpoints/latest/model.safetensors")
    num = sum(float(((a[k].astype(np.float64) - b[k]) ** 2).sum()) for k in a)
    den = sum(float((a[k].astype(np.float64) ** 2).sum()) for k in a)
    params = (num / den) ** 0.5
    loss = abs(c["loss"] - g["loss"]) / abs(c["loss"])
    norm = abs(c["grad_norm"] - g["grad_norm"]) / abs(c["grad_norm"])
    print(f"loss rel {loss:.1e}, grad_norm rel {norm:.1e}, parameters rel (L2) {params:.1e}")
    return 0 if max(loss, norm, params) < 1e-4 else 1


def table(gpu, gpt2_run, pytorch_json, big_run):
    st, big = last_train_record(gpt2_run), last_train_record(big_run)
    try:
        with open(pytorch_json) as f:
            pt = json.load(f)
    except (OSError, ValueError):
        pt = None
    print(f"GPT-2 124M, bf16, 8 x 1024 tokens per step, {gpu}")
    print(f"{'impl':<14} {'tokens/s':>10} {'MFU':>7}")
    for name, r in (("shardtune", st), ("pytorch-eager", pt)):
        if r:
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
            print(f"{name:<14} {r['tokens_per_s']:>10.0f} {mfu:>7}")
    if st and pt:
        print(f"ratio shardtune / pytorch-eager: {st['tokens_per_s'] / pt['tokens_per_s']:.3f}")
    if big:
        m = big["memory"]
        print(f"Llama-shaped 5.5B, ZeRO 3 + CPU offload, 1 x 1024 tokens: {big['tokens_per_s']:.0f} tokens/s, "
              f"step {big['time']['step']:.1f} s (optimizer {big['time']['optim']:.1f} s), "
              f"peak GPU {m['peak_device'] / 2**30:.1f} GiB, peak host {m['peak_host'] / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "step":
        sys.exit(step(*sys.argv[2:4]))
    sys.exit(table(*sys.argv[2:6]))

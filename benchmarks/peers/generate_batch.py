#!/usr/bin/env python3
"""Batched generation, shardtune vs transformers, on the same held-out chat
prompts, model, threads and batch:

  shardtune eval --generate --batch-size 1   (one prompt at a time, KV cache)
  shardtune eval --generate --batch-size B   (left-padded batches, KV cache)
  transformers' generate, batches of B, left padding, greedy

Prints the seconds each spends generating (shardtune: the sum of its
answers' latencies, i.e. the batches' times; transformers: the generate
calls), the ratios, and how many greedy answers agree.

    benchmarks/peers/generate_batch.py --shardtune build/shardtune --model FILE.gguf|DIR \\
        --heldout heldout.jsonl [--batch 8] [--max-new-tokens 32] [--threads 2] [--work DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import time


def shardtune_run(a, batch, out):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    r = subprocess.run([a.shardtune, "eval", "--generate", a.heldout, "--model", a.model, "--batch-size", str(batch),
                        "--max-new-tokens", str(a.max_new_tokens), "--output", out],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(r.stderr)
    ex = [json.loads(l) for l in open(os.path.join(out, "examples.jsonl"))]
    return sum(e["latency_s"] for e in ex), [e["answer"] for e in ex]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shardtune", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="build/bench-generate")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    one_s, one = shardtune_run(a, 1, os.path.join(a.work, "b1"))
    bat_s, bat = shardtune_run(a, a.batch, os.path.join(a.work, f"b{a.batch}"))

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(a.threads)
    if a.model.endswith(".gguf"):
        d, f = os.path.dirname(os.path.abspath(a.model)), os.path.basename(a.model)
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    else:
        tok = AutoTokenizer.from_pretrained(a.model)
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    prompts = []
    for line in open(a.heldout, encoding="utf-8"):
        if line.strip():
            msgs = json.loads(line)["messages"]
            last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
            prompts.append(tok.apply_chat_template(msgs[:last], add_generation_prompt=True, tokenize=False))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    eos = [end] + ([tok.eos_token_id] if tok.eos_token_id is not None else [])
    hf, hf_s = [], 0.0
    with torch.no_grad():
        for i in range(0, len(prompts), a.batch):
            enc = tok(prompts[i:i + a.batch], return_tensors="pt", padding=True, add_special_tokens=False)
            t0 = time.perf_counter()
            out = model.generate(**enc, max_new_tokens=a.max_new_tokens, do_sample=False, eos_token_id=eos,
                                 pad_token_id=tok.pad_token_id)
            hf_s += time.perf_counter() - t0
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                while row and row[-1] == tok.pad_token_id and tok.pad_token_id not in eos:
                    row.pop()
                if row and row[-1] in eos:
                    row = row[:-1]
                hf.append(tok.decode(row, skip_special_tokens=True))
    n = len(prompts)
    print(f"{n} prompts, {os.path.basename(a.model)}, greedy, max {a.max_new_tokens} new tokens, "
          f"{a.threads} threads, float32")
    print(f"  shardtune, one at a time:      {one_s:7.2f} s")
    print(f"  shardtune, batches of {a.batch:<3}:     {bat_s:7.2f} s   {one_s / bat_s:5.2f}x one at a time")
    print(f"  transformers, batches of {a.batch:<3}:  {hf_s:7.2f} s   shardtune batched {hf_s / bat_s:5.2f}x faster")
    print(f"  answers: batched == one at a time {sum(x == y for x, y in zip(one, bat))}/{n}, "
          f"== transformers {sum(x == y for x, y in zip(bat, hf))}/{n}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The peer of benchmarks/peers/lora_smollm2.sh: LoRA fine-tuning with
PyTorch + peft, DistributedDataParallel over gloo, on the CPU.

    peft_lora.py HF_DIR --ranks 2 --seq 128 --micro-batch 4 --steps 6 --warmup 2 --rank 8 --targets q_proj,...

Each rank runs with one intra-op thread (as shardtune's ranks do on a 2-core
machine), AdamW over the adapter weights, full windows of random token ids.
Prints one JSON line: {"tokens_per_s": ..., "step_s": [...]} (tokens over
all ranks per second, median over the timed steps).
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, a, port, out):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", rank=rank, world_size=a.ranks)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                             target_modules=a.targets.split(","), task_type="CAUSAL_LM"))
    model.train()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(rank)
    vocab = model.config.vocab_size
    times = []
    for step in range(a.warmup + a.steps):
        ids = torch.randint(0, vocab, (a.micro_batch, a.seq + 1), generator=g)
        dist.barrier()
        t0 = time.perf_counter()
        logits = ddp(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dist.barrier()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        med = statistics.median(times)
        with open(out, "w") as f:
            json.dump({"tokens_per_s": a.ranks * a.micro_batch * a.seq / med, "step_s": times}, f)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--out", default="/tmp/peft_lora.json")
    a = p.parse_args()
    port = 29500 + os.getpid() % 1000
    mp.spawn(worker, args=(a, port, a.out), nprocs=a.ranks)
    print(open(a.out).read())


if __name__ == "__main__":
    main()

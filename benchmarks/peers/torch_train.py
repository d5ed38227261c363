#!/usr/bin/env python3
"""The peers of benchmarks/peers/train_gpt2.sh: the same training step with
transformers' model of the same config.json (GPT2LMHeadModel,
LlamaForCausalLM, Qwen3ForCausalLM or Gemma3ForCausalLM) on the CPU,
torch.distributed over gloo, in one of three set-ups a user would pick:

  ddp       DistributedDataParallel + torch.optim.AdamW           (ZeRO 0)
  ddp_zero  DistributedDataParallel + ZeroRedundancyOptimizer(AdamW) (ZeRO 1/2)
  fsdp2     fully_shard on each block and the model + AdamW       (ZeRO 3)

    torch_train.py CONFIG_DIR --mode ddp --ranks 2 --seq 256 --micro-batch 4 --global-batch 8 --steps 10 --warmup 3

Gradient accumulation (global batch / (micro-batch x ranks) micro-steps)
synchronises on the last micro-step only (no_sync / set_requires_gradient_sync),
clipping at global norm 1.0, random ids, one intra-op thread per rank
(--threads). Prints one JSON line: tokens/s over all ranks (median step)
and the process CPU seconds per wall second of rank 0 over the timed steps.
"""
import argparse
import contextlib
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
    from transformers import AutoConfig, AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(a.config)).float()
    model.train()
    accum = a.global_batch // (a.micro_batch * a.ranks)
    if a.mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard
        for block in (model.transformer.h if hasattr(model, "transformer") else model.model.layers):
            fully_shard(block)
        fully_shard(model)
        wrapped = model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    else:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        if a.mode == "ddp_zero":
            from torch.distributed.optim import ZeroRedundancyOptimizer
            opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, lr=1e-4,
                                          weight_decay=0.1)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(rank)
    times = []
    cpu0 = wall0 = None
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            cpu0, wall0 = time.process_time(), time.perf_counter()
        dist.barrier()
        t0 = time.perf_counter()
        for micro in range(accum):
            ids = torch.randint(0, vocab, (a.micro_batch, a.seq + 1), generator=g)
            last = micro == accum - 1
            if a.mode == "fsdp2":
                wrapped.set_requires_gradient_sync(last)
                sync = contextlib.nullcontext()
            else:
                sync = contextlib.nullcontext() if last else wrapped.no_sync()
            with sync:
                logits = wrapped(input_ids=ids[:, :-1]).logits
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                         ids[:, 1:].reshape(-1)) / accum
                loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    if rank == 0:
        med = statistics.median(times)
        with open(out, "w") as f:
            json.dump({"tokens_per_s": a.global_batch * a.seq / med, "step_s": times,
                       "cpu_per_wall": cpu / wall}, f)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--mode", choices=["ddp", "ddp_zero", "fsdp2"], default="ddp")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default="/tmp/torch_train.json")
    a = p.parse_args()
    if a.global_batch % (a.micro_batch * a.ranks):
        raise SystemExit("--global-batch must be a multiple of --micro-batch x --ranks")
    port = 29500 + os.getpid() % 1000
    mp.spawn(worker, args=(a, port, a.out), nprocs=a.ranks)
    print(open(a.out).read())


if __name__ == "__main__":
    main()

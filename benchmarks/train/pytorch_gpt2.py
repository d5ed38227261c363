"""The same GPT-2 training step in plain PyTorch (Python, eager): the
baseline the GPU check sets shardtune's tokens/s and MFU against.

    python3 pytorch_gpt2.py --batch 8 --seq 1024 --steps 30 [--device cuda] [--peak-tflops 989.4]

GPT-2 124M (12 layers, 768 wide, 12 heads, vocab 50304, tied embeddings),
bf16 autocast over fp32 parameters (PyTorch's usual mixed precision), SDPA
attention, torch.optim.AdamW (its default foreach implementation), global
norm clipping at 1.0: the work shardtune's trainer does per step at world
size 1. Random token ids; the last --measure steps are timed. Prints one
JSON line.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, vocab=50304, d=768, layers=12, heads=12, positions=1024):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(positions, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.size(1), device=ids.device))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied output layer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--measure", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = GPT2().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    layers, d = 12, 768
    n_params = sum(p.numel() for p in model.parameters())
    # shardtune's convention (model_config.h): 6 x the weights in matrix
    # products (all but the position embedding; the tied embedding once)
    # plus 12 x layers x seq x width for attention.
    flops_per_token = 6 * (n_params - model.wpe.weight.numel()) + 12 * layers * args.seq * d
    ids = torch.randint(0, 50257, (args.batch, args.seq + 1), device=dev)
    x, y = ids[:, :-1], ids[:, 1:]
    times = []
    for step in range(args.steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step_s = sum(times[-args.measure:]) / args.measure
    tokens_per_s = args.batch * args.seq / step_s
    mfu = flops_per_token * tokens_per_s / (args.peak_tflops * 1e12) if args.peak_tflops > 0 else None
    print(json.dumps({"impl": "pytorch-eager", "params": n_params, "tokens_per_s": tokens_per_s, "mfu": mfu,
                      "step_s": step_s, "loss": float(loss), "peak_mem_gb":
                      torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}))


if __name__ == "__main__":
    main()

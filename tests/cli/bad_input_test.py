#!/usr/bin/env python3
"""Bad input on the command line, table-driven: each case must exit 2 with
`path[:line]: what is wrong` on stderr, quote at most a few hundred bytes of
the input, show no C++ type names or stack frames, and leave nothing behind.

    bad_input_test.py --shardtune BIN --work DIR
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

TINY_GGUF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus", "gguf", "tiny_llama.gguf")
FORBIDDEN = re.compile(r"c10::|std::|frame #|json\.exception|terminate called|Exception raised from")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shardtune", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    w = os.path.abspath(a.work)
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)

    def write(name, text, mode="w"):
        p = os.path.join(w, name)
        with open(p, mode) as f:
            f.write(text)
        return p

    # A tiny model folder (config.json + weights) made by shardtune itself.
    model = os.path.join(w, "model")
    cfg = write("tiny.yaml", """model: {arch: llama, hidden_size: 16, num_layers: 1, num_heads: 2, max_positions: 32}
data: {train: DATA, seq_len: 8, micro_batch: 1, global_batch: 1}
train: {steps: 1, output_dir: OUT}
checkpoint: {every: 1}
log: {progress: "off"}
""".replace("DATA", os.path.join(w, "d-train-*.h5")).replace("OUT", os.path.join(w, "run")))
    # The same without the model's sizes, for a model from model.init (sizes there are refused).
    init_cfg = write("tiny_init.yaml", "".join(l for l in open(cfg).read().splitlines(True) if not l.startswith("model:")))
    text = write("t.jsonl", "".join(json.dumps({"text": f"document {i} " * 5}) + "\n" for i in range(20)))
    subprocess.run([a.shardtune, "prep", "--tokenizer", "byte", "--input", text, "--output", os.path.join(w, "d")],
                   check=True, capture_output=True)
    subprocess.run([a.shardtune, "train", cfg], check=True, capture_output=True)
    subprocess.run([a.shardtune, "export", "--checkpoint", os.path.join(w, "run", "checkpoints", "latest"),
                    "--output", model], check=True, capture_output=True)

    def model_with(name, generation=None, **changes):
        d = os.path.join(w, name)
        shutil.copytree(model, d)
        if generation is not None:
            json.dump(generation, open(os.path.join(d, "generation_config.json"), "w"))
        c = json.load(open(os.path.join(d, "config.json")))
        c.update(changes)
        json.dump(c, open(os.path.join(d, "config.json"), "w"))
        return d

    def tokenizer(name, vocab, added=None):
        return write(name, json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": []},
                                       "added_tokens": added or [], "pre_tokenizer": None}))

    bad_state = os.path.join(w, "ck_bad_state")
    shutil.copytree(os.path.join(w, "run", "checkpoints", "latest"), bad_state, symlinks=False)
    state = json.load(open(os.path.join(bad_state, "trainer_state.json")))
    state["step"] = "x"
    json.dump(state, open(os.path.join(bad_state, "trainer_state.json"), "w"))

    dup_yaml = write("dup.yaml", "train:\n  steps: 5\n  steps: 7\n")
    list_key_yaml = write("listkey.yaml", "train:\n  [a, b]: 1\n")
    huge = write("huge.jsonl", '{"text": "' + "x" * 5_000_000 + '\n')
    os.makedirs(os.path.join(w, "adir"), exist_ok=True)
    # 400 good lines (several finished shards at --shard-tokens 200), then a bad one.
    late_bad = write("late_bad.jsonl", "".join(json.dumps({"text": f"line {i} " * 4}) + "\n" for i in range(400))
                     + '{"text": 7}\n')
    gen = [a.shardtune, "generate", "--model", model, "--prompt-ids", "1,2"]
    # Chat shards of the tiny GGUF's tokenizer, rendered as plain text (its own template is ChatML).
    chat = write("chat.jsonl", "".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                                 {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                                       for i in range(8)))
    subprocess.run([a.shardtune, "prep", "--tokenizer", TINY_GGUF, "--chat-template", "plain", "--input", chat,
                    "--output", os.path.join(w, "plain")], check=True, capture_output=True)
    train_on = [a.shardtune, "train", init_cfg, "model.init=" + TINY_GGUF]
    # A run from the tiny GGUF on its own tokenizer's shards: its checkpoint carries that tokenizer.
    subprocess.run([a.shardtune, "prep", "--tokenizer", TINY_GGUF, "--input", text, "--output", os.path.join(w, "g")],
                   check=True, capture_output=True)
    subprocess.run([*train_on, "data.train=" + os.path.join(w, "g-train-*.h5"),
                    "train.output_dir=" + os.path.join(w, "gguf_run")], check=True, capture_output=True)
    # Non-finite weights: a NaN in a model folder's safetensors, an Inf in a GGUF file's F32 tensor.
    import numpy as np
    from safetensors.numpy import load_file, save_file
    nan_model = model_with("nan_model")
    st = load_file(os.path.join(nan_model, "model.safetensors"))
    nan_name = sorted(st)[1]
    st[nan_name].reshape(-1)[3] = np.nan
    save_file(st, os.path.join(nan_model, "model.safetensors"))
    inf_gguf = os.path.join(w, "inf.gguf")
    shutil.copy(TINY_GGUF, inf_gguf)
    import gguf
    inf_name = None
    for t in gguf.GGUFReader(inf_gguf, "r+").tensors:
        if t.tensor_type == gguf.GGMLQuantizationType.F32 and inf_name is None:
            inf_name = t.name
            t.data.reshape(-1)[1] = -np.inf
    # Tokenizer files with values of the wrong type: tokenizer_config.json beside tokenizer.json, GGUF metadata.
    def tok_folder(name, config):
        d = os.path.join(w, name)
        os.makedirs(d)
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            json.dump({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}, "added_tokens": [],
                       "pre_tokenizer": None}, f)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(config, f)
        return d

    def tok_gguf(name, tokens, scores):
        path = os.path.join(w, name)
        g = gguf.GGUFWriter(path, "llama")
        g.add_tokenizer_model("llama")
        g.add_token_list(tokens)
        g.add_array("tokenizer.ggml.scores", scores)
        g.add_token_types([2, 1, 1])
        g.write_header_to_file()
        g.write_kv_data_to_file()
        g.write_tensors_to_file()
        g.close()
        return path

    prep_tok = lambda spec, out: [a.shardtune, "prep", "--tokenizer", spec, "--input", text, "--output", os.path.join(w, out)]
    cases = [
        ("prep: tokenizer_config.json's chat_template a number",
         prep_tok(tok_folder("tc_template", {"chat_template": 7}), "o9"), "tokenizer_config.json: chat_template: expected a string, got 7"),
        ("prep: tokenizer_config.json's eos_token a number",
         prep_tok(tok_folder("tc_eos", {"eos_token": 5}), "o10"), "tokenizer_config.json: eos_token: expected a token"),
        ("prep: tokenizer_config.json's add_bos_token a string",
         prep_tok(tok_folder("tc_bos", {"add_bos_token": "yes"}), "o11"), "tokenizer_config.json: add_bos_token: expected true or false"),
        ("prep: named chat templates without a default",
         prep_tok(tok_folder("tc_named", {"chat_template": [{"name": "tool_use", "template": "x"}]}), "o12"),
         "chat_template: a list of named templates (tool_use) without one named default"),
        ("prep: named chat templates: the default one is taken (ChatML here, whose tokens this vocabulary lacks)",
         [a.shardtune, "prep", "--tokenizer", tok_folder("tc_named_default", {"chat_template": [
             {"name": "tool_use", "template": "x"},
             {"name": "default", "template": "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}"}]}),
          "--input", chat, "--output", os.path.join(w, "o15")],
         "chat template chatml needs the token <|im_start|>"),
        ("train: train.max_bad_steps 0", [a.shardtune, "train", cfg, "train.max_bad_steps=0"],
         "train.max_bad_steps: expected a positive"),
        ("train: data.document_mask not a switch", [a.shardtune, "train", cfg, "data.document_mask=sometimes"],
         "data.document_mask: expected one of auto, true, false"),
        ("train: log.tensorboard a YAML boolean spelled otherwise", [a.shardtune, "train", cfg, "log.tensorboard=off"],
         "log.tensorboard: expected true, false or a folder"),
        ("prep: a GGUF token that is not UTF-8", prep_tok(tok_gguf("t_utf8.gguf", ["<unk>", "a", b"\xff"], [0.0] * 3), "o13"),
         "t_utf8.gguf: metadata 'tokenizer.ggml.tokens': token 2 is not valid UTF-8 (byte 0)"),
        ("prep: GGUF scores that are strings", prep_tok(tok_gguf("t_scores.gguf", ["<unk>", "a", "b"], ["x"] * 3), "o14"),
         "t_scores.gguf: metadata 'tokenizer.ggml.scores': element 0 (\"x\") is not a finite number"),
        ("generate: a NaN in a model folder's weights", [a.shardtune, "generate", "--model", nan_model, "--prompt-ids", "1"],
         f"model.safetensors: tensor '{nan_name}' holds NaN (element 3): weights must be finite numbers"),
        ("generate: an Inf in a GGUF file's weights", [a.shardtune, "generate", "--model", inf_gguf, "--prompt-ids", "1"],
         f"inf.gguf: tensor '{inf_name}' holds -Inf (element 1)"),
        ("train: model.init with a NaN", [*train_on, "model.init=" + nan_model, "train.output_dir=" + os.path.join(w, "nan_run")],
         f"tensor '{nan_name}' holds NaN"),
        # Shards written before the bad line, and the folders made for them, are removed.
        ("prep: a bad line after finished shards, into new folders",
         [a.shardtune, "prep", "--tokenizer", "byte", "--input", late_bad, "--output", os.path.join(w, "new", "deeper", "o0"),
          "--shard-tokens", "200", "--threads", "1"],
         late_bad + ":401: "),
        ("prep: an input that is a directory", [a.shardtune, "prep", "--tokenizer", "byte", "--input", os.path.join(w, "adir"), "--output", os.path.join(w, "o1")],
         os.path.join(w, "adir") + ": is a directory"),
        ("prep: --val-fraction nan", [a.shardtune, "prep", "--tokenizer", "byte", "--input", text, "--output", os.path.join(w, "o2"), "--val-fraction", "nan"],
         "--val-fraction: expected a finite number"),
        ("prep: --shard-tokens 1.5", [a.shardtune, "prep", "--tokenizer", "byte", "--input", text, "--output", os.path.join(w, "o3"), "--shard-tokens", "1.5"],
         "--shard-tokens: expected a whole number"),
        ("prep: a 5 MB bad JSONL line", [a.shardtune, "prep", "--tokenizer", "byte", "--input", huge, "--output", os.path.join(w, "o4")],
         huge + ":1: not a JSON object"),
        ("prep: a negative vocabulary id", [a.shardtune, "prep", "--tokenizer", "hf:" + tokenizer("neg.json", {"a": -5, "b": 1}),
                                             "--input", text, "--output", os.path.join(w, "o5")],
         "neg.json: model.vocab['a']: id -5 is not an integer in [0"),
        ("prep: a huge vocabulary id", [a.shardtune, "prep", "--tokenizer", "hf:" + tokenizer("big.json", {"a": 2**40}),
                                         "--input", text, "--output", os.path.join(w, "o6")],
         "big.json: model.vocab['a']: id 1099511627776 is not an integer"),
        ("prep: an added token of the wrong type", [a.shardtune, "prep", "--tokenizer", "hf:" + tokenizer("type.json", {"a": 0}, [{"id": 1, "content": 7}]),
                                                    "--input", text, "--output", os.path.join(w, "o7")],
         "type.json: malformed tokenizer file: added_tokens[0].content: type must be string, but is number"),
        ("prep: tokenizer merges that are not a list",
         [a.shardtune, "prep", "--tokenizer", "hf:" + write("merges_str.json", json.dumps(
             {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": "a b"}})),
          "--input", text, "--output", os.path.join(w, "o8")],
         "merges_str.json: model.merges: expected a list"),
        ("prep: a tokenizer merge pair cut short (the key path is named)",
         [a.shardtune, "prep", "--tokenizer", "hf:" + write("merges_short.json", json.dumps(
             {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"], ["a"]]}})),
          "--input", text, "--output", os.path.join(w, "o9")],
         "merges_short.json: malformed tokenizer file: model.merges[1]: array index 1 is out of range"),
        ("config: a directory", [a.shardtune, "config", w + "/"], w + "/: not a config file"),
        ("config: a duplicate key", [a.shardtune, "config", dup_yaml], dup_yaml + ":3: train.steps: duplicate key"),
        ("config: a key that is a list", [a.shardtune, "config", list_key_yaml], list_key_yaml + ":2: train: a key must be a plain name"),
        ("config: a transposed section name", [a.shardtune, "config", dup_yaml.replace("dup", "tiny"), "trian.steps=3"],
         "did you mean 'train'"),
        ("generate: --max-new-tokens -1", gen + ["--max-new-tokens", "-1"], "--max-new-tokens: expected a whole number from 0"),
        ("generate: --temperature -1", gen + ["--temperature", "-1"], "--temperature must be 0 (greedy) or positive"),
        ("generate: --temperature nan", gen + ["--temperature", "nan"], "--temperature: expected a finite number"),
        ("generate: --top-k -5", gen + ["--top-k", "-5"], "--top-k: expected a whole number from 0"),
        ("generate: --top-p nan", gen + ["--top-p", "nan"], "--top-p: expected a finite number"),
        ("generate: --top-p 0", gen + ["--top-p", "0"], "--top-p must be in (0, 1]"),
        ("generate: --top-k with greedy decoding", gen + ["--top-k", "5"],
         "generate: --top-k has no effect with greedy decoding (--temperature 0, the default)"),
        ("eval --generate: --seed with greedy decoding",
         [a.shardtune, "eval", "--generate", chat, "--model", model, "--seed", "3"], "--seed has no effect with greedy"),
        ("generate: --device banana", gen + ["--device", "banana"], "--device: expected cpu, cuda or cuda:N, got \"banana\""),
        ("generate: config.json with a non-object rope_scaling",
         [a.shardtune, "generate", "--model", model_with("m_rope", rope_scaling=5), "--prompt-ids", "1"],
         "config.json: rope_scaling: expected an object or null"),
        ("generate: config.json with a GPT-2-only key of another value",
         [a.shardtune, "generate", "--model", model_with("m_soft", attn_logit_softcapping=50.0), "--prompt-ids", "1"],
         "config.json: attn_logit_softcapping = 50.0 is not supported"),
        ("generate: config.json with hidden_size 2^31",
         [a.shardtune, "generate", "--model", model_with("m_wide", hidden_size=2**31), "--prompt-ids", "1"],
         "config.json: hidden_size 2147483648, intermediate_size"),
        ("generate: config.json of a model larger than memory",
         [a.shardtune, "generate", "--model", model_with("m_huge", hidden_size=65536, intermediate_size=262144,
                                                         num_hidden_layers=512, num_attention_heads=512,
                                                         num_key_value_heads=512, head_dim=128), "--prompt-ids", "1"],
         "m_huge/config.json: a llama model of 35184456302592 parameters needs 131072 GiB in float32, more than"),
        ("convert: neither side a .gguf", [a.shardtune, "convert", model, os.path.join(w, "c1")],
         "convert: exactly one of SRC and DST must end in .gguf"),
        ("convert: an unknown --gguf-type", [a.shardtune, "convert", model, os.path.join(w, "c2.gguf"), "--gguf-type", "q4_k"],
         "--gguf-type: 'q4_k' is not one of f32, f16, bf16, q8_0"),
        ("convert: --gguf-type when reading a .gguf", [a.shardtune, "convert", TINY_GGUF, os.path.join(w, "c3"), "--gguf-type", "f16"],
         "convert: --gguf-type is for writing a .gguf file"),
        ("convert: a model folder without tokenizer.json", [a.shardtune, "convert", model, os.path.join(w, "c4.gguf")],
         model + ": has no tokenizer.json"),
        ("export: --adapter with a .gguf output",
         [a.shardtune, "export", "--checkpoint", os.path.join(w, "run", "checkpoints", "latest"), "--output",
          os.path.join(w, "e1.gguf"), "--adapter"],
         "export: --adapter writes a PEFT folder, not a .gguf file"),
        ("export: --gguf-type without a .gguf output",
         [a.shardtune, "export", "--checkpoint", os.path.join(w, "run", "checkpoints", "latest"), "--output",
          os.path.join(w, "e2"), "--gguf-type", "q8_0"],
         "export: --gguf-type needs an --output ending in .gguf"),
        ("generate: a missing --prompt-file", gen[:4] + ["--prompt-file", os.path.join(w, "absent.txt")],
         os.path.join(w, "absent.txt") + ": cannot open"),
        ("generate: an empty --prompt-file", gen[:4] + ["--prompt-file", write("empty.txt", "\n\n")],
         "empty.txt: no prompts (one per line)"),
        ("generate: generation_config.json eos_token_id of the wrong type",
         [a.shardtune, "generate", "--model", model_with("m_gen", generation={"eos_token_id": ["x"]}), "--prompt-ids", "1"],
         "generation_config.json: eos_token_id: expected a token id or a list of them"),
        ("plan: an unknown device", [a.shardtune, "plan", cfg, "--device", "tpu-v9"],
         "--device tpu-v9: not a known device (cpu, h100, h200, a100-80gb, a100-40gb, l40s)"),
        ("plan: zero ranks", [a.shardtune, "plan", cfg, "--ranks", "0"],
         "plan: --ranks: expected a whole number from 1 to 1048576, got \"0\""),
        ("plan: an mfu above 1", [a.shardtune, "plan", cfg, "--device", "h100", "--mfu", "1.5"],
         "plan: --mfu: expected a positive number up to 1, got 1.5"),
        ("plan: a negative --busbw (the value -1 too)", [a.shardtune, "plan", cfg, "--device", "h100", "--busbw", "-1"],
         "plan: --busbw: expected a positive number, got -1"),
        ("plan: --ranks-per-node 0", [a.shardtune, "plan", cfg, "--ranks-per-node", "0"],
         "plan: --ranks-per-node: expected a whole number from 1 to 1048576, got \"0\""),
        ("plan: a global batch the ranks cannot split", [a.shardtune, "plan", cfg, "--ranks", "3", "--device", "h100"],
         "data.global_batch 1 is not a multiple of data.micro_batch (1) x ranks (3)"),
        ("config: train.check_fit not a boolean", [a.shardtune, "config", cfg, "train.check_fit=perhaps"],
         "train.check_fit: expected a boolean (true or false)"),
        ("plan: a LoRA target the family lacks",
         [a.shardtune, "plan", cfg, "model.lora.rank=4", "model.lora.targets=[c_fc]", "--device", "h100"],
         "model.lora.targets: c_fc is not a layer of a llama model"),
        ("train: a run the planner predicts will not fit", [a.shardtune, "train", cfg, "data.micro_batch=4000000",
                                                            "data.global_batch=4000000"],
         "GiB per rank (params"),
        ("config: ZeRO 3 without recomputation", [a.shardtune, "config", cfg, "parallel.zero_stage=3",
                                                  "train.activation_checkpointing=none"],
         "train.activation_checkpointing: none is not available at parallel.zero_stage 3"),
        ("config: dist.retain_host_memory not a boolean", [a.shardtune, "config", cfg, "dist.retain_host_memory=sometimes"],
         "dist.retain_host_memory: expected a boolean (true or false)"),
        ("config: checkpoint.overwrite not a boolean", [a.shardtune, "config", cfg, "checkpoint.overwrite=maybe"],
         "checkpoint.overwrite: expected a boolean (true or false)"),
        ("export: a checkpoint whose trainer_state.json has a value of the wrong type",
         [a.shardtune, "export", "--checkpoint", bad_state, "--output", os.path.join(w, "o_state")],
         "trainer_state.json: step: type must be number, but is string"),
        ("generate: a negative rms_norm_eps",
         [a.shardtune, "generate", "--model", model_with("m_eps", rms_norm_eps=-1), "--prompt-ids", "1"],
         "config.json: rms_norm_eps -1 must be a finite number >= 0"),
        ("generate: a negative rope_theta",
         [a.shardtune, "generate", "--model", model_with("m_theta", rope_theta=-5), "--prompt-ids", "1"],
         "config.json: rope_theta -5 must be a finite number > 0"),
        ("generate: config.json eos_token_id of the wrong type",
         [a.shardtune, "generate", "--model", model_with("m_eos", eos_token_id="x"), "--prompt-ids", "1"],
         "config.json: eos_token_id: expected a token id or a list of them"),
        # Flags that would have no effect, and lengths past the model's.
        ("generate: --system without --chat", gen[:4] + ["--prompt", "hi", "--system", "be brief"],
         "generate: --system applies to --chat prompts only"),
        ("generate: --chat-template without --chat", gen[:4] + ["--prompt", "hi", "--chat-template", "chatml"],
         "generate: --chat-template applies to --chat prompts only"),
        ("generate: --tokenizer with --prompt-ids", gen + ["--tokenizer", "byte"],
         "generate: --prompt-ids are token ids already: --tokenizer has no effect with them"),
        ("generate: a prompt as long as the context", gen[:4] + ["--prompt-ids", ",".join(["1"] * 40)],
         "generate: the prompt has 40 tokens; the model's context is 32 positions"),
        ("export: an empty --gguf-type",
         [a.shardtune, "export", "--checkpoint", os.path.join(w, "run", "checkpoints", "latest"), "--output",
          os.path.join(w, "e3.gguf"), "--gguf-type", ""],
         "export: --gguf-type is empty"),
        ("convert: an empty --gguf-type", [a.shardtune, "convert", model, os.path.join(w, "c5.gguf"), "--gguf-type", ""],
         "convert: --gguf-type is empty"),
        ("plan: data.seq_len past the model's positions", [a.shardtune, "plan", cfg, "data.seq_len=64"],
         "data.seq_len 64 is past the model's 32 positions (model.max_positions)"),
        ("train: data.seq_len past the positions of model.init",
         [a.shardtune, "train", init_cfg, "data.seq_len=64", f"model.init={model}", f"train.output_dir={w}/run_len"],
         f"data.seq_len 64 is past the model's 32 positions (the max_position_embeddings of model.init {model})"),
        # Outputs that would destroy inputs are refused before anything is touched.
        ("export: onto its own checkpoint (through the latest link)",
         [a.shardtune, "export", "--checkpoint", os.path.join(w, "run", "checkpoints", "latest"), "--output",
          os.path.join(w, "run", "checkpoints"), "--overwrite"],
         "export: the output " + os.path.join(w, "run", "checkpoints") + " holds the input"),
        ("export: into its own checkpoint",
         [a.shardtune, "export", "--checkpoint", os.path.join(w, "run", "checkpoints", "latest"), "--output",
          os.path.join(w, "run", "checkpoints", "latest", "merged"), "--overwrite"],
         "is inside the input"),
        ("convert: --overwrite onto the folder holding its source",
         [a.shardtune, "convert", os.path.join(w, "model", "copy.gguf"), model, "--overwrite"],
         "convert: the output " + model + " holds the input"),
        ("convert: into the folder holding its source", [a.shardtune, "convert", model, os.path.join(model, "m.gguf")],
         "is inside the input " + model),
        ("prep: over its own input shard",
         [a.shardtune, "prep", "--tokenizer", "byte", "--input", os.path.join(w, "d-train-00000.h5"), "--output",
          os.path.join(w, "d"), "--overwrite"],
         "prep: the input " + os.path.join(w, "d-train-00000.h5") + " is one of the shards --output"),
        ("train: a random-init size beside model.init", [a.shardtune, "train", cfg, "model.init=" + TINY_GGUF],
         "tiny.yaml:1:"),
        ("generate: --tokenizer other than the one the model carries",
         [a.shardtune, "generate", "--model", TINY_GGUF, "--tokenizer", "byte", "--prompt", "hi"],
         "--tokenizer byte (byte, tok2:"),
        ("data check: --output the input file", [a.shardtune, "data", "check", chat, "--output", chat],
         "data check: --output " + chat + " is a file; the report goes to a folder"),
        ("eval --generate: --output inside a model folder",
         [a.shardtune, "eval", "--generate", chat, "--model", model, "--output", os.path.join(model, "report")],
         "eval --generate: --output " + os.path.join(model, "report") + " is inside the input " + model),
        ("eval --generate: a model refused after the report folder was made",
         [a.shardtune, "eval", "--generate", chat, "--model", os.path.join(w, "gguf_run", "checkpoints", "latest"),
          "--output", os.path.join(w, "ev_report")], "chat template chatml needs the token <|im_end|>"),
        ("train: eval.every with no data.val", [a.shardtune, "train", cfg, "eval.every=5", "train.output_dir=" + os.path.join(w, "ev")],
         "eval.every is set but data.val is empty"),
        ("prep: no --tokenizer (bytes are never taken by default)",
         [a.shardtune, "prep", "--input", text, "--output", os.path.join(w, "o8")], "prep: --tokenizer is required"),
        ("train: shards of the byte tokenizer, model.init a GGUF file with another",
         train_on, "data.train was made by tokenizer byte (tok2:"),
        ("train: chat shards rendered as plain, model.init's template ChatML",
         [*train_on, "data.train=" + os.path.join(w, "plain-train-*.h5")],
         "data.train's chat examples were rendered as plain, but the chat template of model.init"),
        ("eval: shards of the byte tokenizer, a checkpoint carrying another",
         [a.shardtune, "eval", "--checkpoint", os.path.join(w, "gguf_run", "checkpoints", "latest"), cfg,
          "data.val=" + os.path.join(w, "d-train-*.h5")],
         "data.val was made by tokenizer byte (tok2:"),
    ]
    failed = 0
    for name, argv, want in cases:
        before = set(os.listdir(w))
        p = subprocess.run([str(x) for x in argv], capture_output=True, text=True)
        err = p.stderr.strip()
        ok = (p.returncode == 2 and want in err and not FORBIDDEN.search(err) and len(err) < 2000
              and set(os.listdir(w)) == before)
        print(("ok    " if ok else "FAIL  ") + f"{name}: exit {p.returncode}: {err[:300]!r}")
        failed += not ok
    # A CRLF text file loses its carriage returns, as JSONL lines do.
    crlf = write("crlf.txt", "first line\r\nsecond line\r\n\r\nnext document\r\n")
    p = subprocess.run([a.shardtune, "prep", "--tokenizer", "byte", "--input", crlf, "--output", os.path.join(w, "crlf")],
                       capture_output=True, text=True)
    q = subprocess.run([a.shardtune, "inspect", os.path.join(w, "crlf-train-00000.h5"), "--tokenizer", "byte"],
                       capture_output=True, text=True)
    ok = p.returncode == 0 and "first line\nsecond line" in q.stdout and "\r" not in q.stdout
    print(("ok    " if ok else "FAIL  ") + "a CRLF .txt file is read without its carriage returns")
    failed += not ok
    # Generation cut by the context, not by EOS or --max-new-tokens, says so on stderr.
    p = subprocess.run(gen + ["--max-new-tokens", "100"], capture_output=True, text=True)
    ok = p.returncode == 0 and "generate: stopped at the model's context of 32 positions after 30 of --max-new-tokens 100" in p.stderr
    print(("ok    " if ok else "FAIL  ") + f"a generation cut by the context is named: {p.stderr.strip()[:200]!r}")
    failed += not ok
    print(f"{len(cases) + 2 - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

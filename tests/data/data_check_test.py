#!/usr/bin/env python3
"""`shardtune data check` against a file with every kind of problem on known
lines, and its token counts against transformers' apply_chat_template.

  - each error and warning kind is reported with exactly its line numbers;
    errors exit 2, warnings alone exit 0;
  - tokens per example equal apply_chat_template's ids (ChatML tokenizer
    trained here on Debian's licence texts), trained tokens equal the
    assistant contents with their end markers, the statistics are the
    nearest-rank percentiles of those, the examples over the window and the
    model's context are the right lines, and the windows and steps per epoch
    are sft packing's (whole examples, greedily, in windows of seq_len + 1);
  - the report files (txt, json, png) are written; without a tokenizer only
    the format is checked; a bad flag or a missing file exits 2 naming it.

Usage: data_check_test.py --shardtune BIN --work DIR
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys

failures = []

TEMPLATE = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}"
            "{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}")


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def conv(*turns):
    roles = ["user", "assistant"]
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shardtune", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    # A ChatML byte-level tokenizer and a tiny llama config.json beside it (context 96).
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train([f"/usr/share/common-licenses/{n}" for n in ("GPL-3", "Apache-2.0")], trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    model = os.path.join(work, "model")
    os.makedirs(model)
    tok.save(os.path.join(model, "tokenizer.json"))
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
               "chat_template": TEMPLATE}, open(os.path.join(model, "tokenizer_config.json"), "w"))
    json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 600, "hidden_size": 32,
               "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
               "max_position_embeddings": 96, "rms_norm_eps": 1e-5, "tie_word_embeddings": True},
              open(os.path.join(model, "config.json"), "w"))

    long_answer = " ".join(["the licensee may copy, modify and distribute the program"] * 4)
    longer = " ".join(["free software"] * 60)
    lines = [  # (text, error kind or None, warning kinds)
        (json.dumps(conv("What is the capital of France?", "Paris.")), None, []),
        (json.dumps(conv("Capital of Peru?", "Lima.")), None, []),
        ("", None, []),  # blank: skipped, not counted
        ('{"messages": [', "invalid_json", []),
        ('["messages"]', "not_an_object", []),
        ('{"prompt": "x", "completion": "y"}', "missing_messages", ["unknown_key"]),
        ('{"messages": "hello"}', "messages_not_a_list", []),
        ('{"messages": ["hello"]}', "messages_not_a_list", []),
        ('{"messages": []}', "empty_messages", []),
        (json.dumps({"messages": [{"role": "tool", "content": "x"}]}), "unknown_role", []),
        (json.dumps({"messages": [{"content": "x"}]}), "unknown_role", []),
        (json.dumps({"messages": [{"role": "user"}]}), "missing_content", []),
        (json.dumps({"messages": [{"role": "user", "content": ["a"]}]}), "bad_content_part", []),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "no_assistant_turn", []),
        (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', "invalid_utf8", []),
        (json.dumps(dict(conv("Hi", "Hello"), extra=1)), None, ["unknown_key"]),
        (json.dumps({"messages": [{"role": "user", "content": "Hi", "weight": 1},
                                  {"role": "assistant", "content": "Yo"}]}), "bad_weight", []),
        (json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                  {"role": "assistant", "content": "Yo", "weight": 0.5}]}), "bad_weight", []),
        (json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                                  {"role": "assistant", "content": "Yo"}]}), "bad_content_part", []),
        (json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                  {"role": "assistant", "content": "Yo", "tool_calls": []}]}), "unknown_message_key", []),
        (json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                  {"role": "assistant", "content": "Yo", "weight": 0}]}), "no_assistant_turn", []),
        # OpenAI's format, complete: text parts joined; a weight-0 turn is context, not a target.
        (json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello "},
                                                               {"type": "text", "text": "world"}]},
                                  {"role": "assistant", "content": "Hi there", "name": "bot"}]}), None, []),
        (json.dumps({"messages": [{"role": "user", "content": "First?"},
                                  {"role": "assistant", "content": "ignored answer", "weight": 0},
                                  {"role": "user", "content": "Second?"},
                                  {"role": "assistant", "content": "kept", "weight": 1}]}), None, []),
        (json.dumps(conv("Say nothing", "  ")), None, ["empty_content"]),
        (json.dumps({"messages": [{"role": "assistant", "content": "First"}, {"role": "user", "content": "?"},
                                  {"role": "assistant", "content": "ok"}]}), None, ["roles_out_of_order"]),
        (json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
                                  {"role": "assistant", "content": "b"}]}), None, ["roles_out_of_order"]),
        (json.dumps(conv("Q", "A", "and?")), None, ["ends_without_assistant"]),
        (json.dumps(conv("What is the capital of France?", "Paris.")), None, ["duplicate"]),
        (json.dumps(conv("Tell me the licence", long_answer)), None, []),
        (json.dumps(conv("Longer", longer)), None, []),
    ]
    data = os.path.join(work, "chat.jsonl")
    with open(data, "wb") as f:
        for text, _, _ in lines:
            f.write((text if isinstance(text, bytes) else text.encode()) + b"\n")
    want_err, want_warn, valid = {}, {}, []
    for n, (text, err, warns) in enumerate(lines, start=1):
        if text == "":
            continue
        if err:
            want_err.setdefault(err, []).append(n)
        for w in warns:
            want_warn.setdefault(w, []).append(n)
        if err is None:
            valid.append((n, json.loads(text)["messages"]))

    seq_len = 63
    cfg = os.path.join(work, "run.yaml")
    with open(cfg, "w") as f:
        f.write(f"model: {{init: {model}}}\ndata: {{train: x, seq_len: {seq_len}, micro_batch: 1, global_batch: 3}}\n")
    out = os.path.join(work, "report")
    r = subprocess.run([a.shardtune, "data", "check", data, "--config", cfg, "--output", out],
                       capture_output=True, text=True)
    print(r.stdout)
    check(r.returncode == 2, f"errors exit 2 (got {r.returncode}: {r.stderr.strip()[:200]})")
    rep = json.load(open(os.path.join(out, "data_check.json")))
    check(rep["errors"] == want_err, f"every error kind with its lines: {rep['errors']} vs {want_err}")
    check(rep["warnings"] == want_warn, f"every warning kind with its lines: {rep['warnings']} vs {want_warn}")
    check(rep["lines"] == len(lines) - 1 and rep["examples"] == len(valid),
          f"lines {rep['lines']} and valid examples {rep['examples']}")

    from transformers import AutoTokenizer
    ref = AutoTokenizer.from_pretrained(model)
    end = ref.convert_tokens_to_ids("<|im_end|>")
    tokens, trained = [], []
    for _, msgs in valid:
        plain = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                  else "".join(p["text"] for p in m["content"])} for m in msgs]
        tokens.append(len(ref.apply_chat_template(plain, tokenize=True, return_dict=False)))
        trained.append(sum(len(ref.encode(p["content"], add_special_tokens=False)) + 1
                           for m, p in zip(msgs, plain) if m["role"] == "assistant" and m.get("weight", 1) == 1))

    def stats(v):
        s = sorted(v)
        rank = lambda p: s[min(len(s), max(1, math.ceil(p / 100 * len(s)))) - 1]
        return {"count": len(s), "min": s[0], "mean": sum(s) / len(s), "p50": rank(50), "p90": rank(90),
                "p99": rank(99), "max": s[-1], "total": sum(s)}

    for key, v in (("tokens", tokens), ("trained", trained)):
        want = stats(v)
        got = rep[key]
        check(all(abs(got[k] - want[k]) < 1e-9 for k in want), f"{key} per example vs apply_chat_template: {got}")
    over_window = [n for (n, _), t in zip(valid, tokens) if t > seq_len + 1]
    over_context = [n for (n, _), t in zip(valid, tokens) if t > 96]
    check(rep["over_window"] == over_window and len(over_window) >= 2,
          f"examples over the window: lines {rep['over_window']} (want {over_window})")
    check(rep["over_context"] == over_context and len(over_context) == 1,
          f"examples over the model's context: lines {rep['over_context']} (want {over_context})")
    windows, used, inw = 0, 0, 0
    for t in tokens:
        t = min(t, seq_len + 1)
        if used + t > seq_len + 1 and inw:
            windows, used, inw = windows + 1, 0, 0
        used, inw = used + t, inw + 1
    windows += 1 if inw else 0
    check(rep["windows"] == windows and rep["steps_per_epoch"] == math.ceil(windows / 3)
          and rep["tokens_per_epoch"] == sum(min(t, seq_len + 1) for t in tokens),
          f"windows {rep['windows']} (want {windows}), steps per epoch {rep['steps_per_epoch']}, tokens per epoch "
          f"{rep['tokens_per_epoch']}")
    png = os.path.join(out, "data_check.png")
    check(os.path.exists(png) and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and
          os.path.exists(os.path.join(out, "data_check.txt")), "data_check.txt and the histogram PNG are written")
    check(sorted(os.listdir(out)) == ["data_check.json", "data_check.png", "data_check.txt"],
          f"nothing else is left in the report folder: {sorted(os.listdir(out))}")

    # Only warnings: exit 0; no tokenizer: format only; default report folder.
    clean = os.path.join(work, "clean.jsonl")
    with open(clean, "w") as f:
        for text, err, _ in lines:
            if text and err is None:
                f.write(text + "\n")
    # prep renders the same: per example, the mask's targets are the trained tokens (weight 0 left out).
    import h5py
    r = subprocess.run([a.shardtune, "prep", "--tokenizer", model, "--input", clean, "--output",
                        os.path.join(work, "shard")], capture_output=True, text=True)
    if r.returncode == 0:
        h = h5py.File(os.path.join(work, "shard-train-00000.h5"), "r")
        off, mask = h["doc_offsets"][:], h["loss_mask"][:]
        got = [int(mask[off[i]:off[i + 1]].sum()) for i in range(len(off) - 1)]
        toks = [int(off[i + 1] - off[i]) for i in range(len(off) - 1)]
    check(r.returncode == 0 and got == trained and toks == tokens,
          f"prep's shard: targets per example == trained tokens (weight-0 turns left out), tokens == "
          f"apply_chat_template's ({r.stderr.strip()[-200:]})")
    r = subprocess.run([a.shardtune, "data", "check", clean], capture_output=True, text=True)
    check(r.returncode == 0 and "tokens: not counted" in r.stdout and
          os.path.exists(os.path.join(work, "clean.check", "data_check.json")),
          f"warnings alone exit 0, without a tokenizer the format only, report in clean.check/ ({r.returncode})")
    for args, want in ((["--train-on", "everything"], "--train-on must be assistant or all"),
                       (["--seq-len", "0"], "--seq-len"),
                       (["--chat-template", "alpaca"], "chat template 'alpaca' is not one of"),
                       (["--bogus", "1"], "--bogus")):
        r = subprocess.run([a.shardtune, "data", "check", clean, "--model", model, *args], capture_output=True, text=True)
        check(r.returncode == 2 and want in r.stderr, f"{args} exits 2: {r.stderr.strip()[-150:]!r}")
    r = subprocess.run([a.shardtune, "data", "check", os.path.join(work, "nope.jsonl")], capture_output=True, text=True)
    check(r.returncode == 2 and "nope.jsonl: cannot open" in r.stderr, f"a missing file exits 2 naming it: {r.stderr.strip()[-150:]!r}")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all data check tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

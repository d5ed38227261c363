#!/usr/bin/env python3
"""The tokenizers and chat templates of the model families shardtune reads,
held against Hugging Face tokenizers, sentencepiece and transformers.

Each family's tokenizer layout is trained here on the licence texts Debian
ships (no tokenizer can be downloaded), with the family's special tokens:

  llama3   Llama 3.x, SmolLM3   Split (GPT-4 regex) + ByteLevel, ignore_merges   GGUF gpt2/llama-bpe
  qwen2    Qwen3                Split (single digits) + ByteLevel, NFC           GGUF gpt2/qwen2
  o200k    Phi-4-mini           Split (GPT-4o regex) + ByteLevel                 GGUF gpt2/gpt-4o
  cl100k   OLMo 2               Split (GPT-4 regex) + ByteLevel                  GGUF gpt2/dbrx
  gemma    Gemma 2, Gemma 3     SentencePiece .model; tokenizer.json as          GGUF llama, no space prefix
                                transformers' GemmaTokenizer lays it out
  llama2   Phi-3, Phi-3.5       Prepend + Replace normalizer, byte fallback      GGUF llama, space prefix

For each: shardtune's ids equal the reference's on multilingual, digit, code
and whitespace texts, from tokenizer.json, from tokenizer.model (gemma), from
a GGUF file laid out as llama.cpp's converter writes it (gguf-py), and from
the GGUF shardtune writes (whose tokenizer.ggml.pre / model is checked).

Chat templates shaped as the families ship them are rendered by shardtune
(the generation prompt, and a whole conversation with its loss mask) and by
transformers' apply_chat_template: the ids are equal, and the mask covers
exactly the assistant turns with their end markers. SmolLM3's dated template
is refused by name.

Usage: family_tokenizers.py --tool gguf_tool --work DIR
"""
import argparse
import json
import os
import subprocess
import sys
import unicodedata

import gguf
import sentencepiece as spm
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import LLAMA3_PATTERN, TEXTS, corpus  # noqa: E402

QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}", r" ?[^\s\p{L}\p{N}]+[\r\n/]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+"])

EXTRA_TEXTS = [
    "def f(x):\n    return [i ** 2 for i in range(10) if i % 3 == 0]\n\n\tprint(f'{x!r}')  # tab",
    "int main() { std::vector<int> v{1, 2, 3}; return v.size() > 2 ? 0 : 1; }",
    "CamelCaseWords HTTPServer iPhone McDonald's O'Neil URLs/paths/like/this",
    "2024-12-06 12:34:56.789 +01:00 $1,234,567.89 1e-10 0.000001 ½ ² ٣ ४",
    "Ελληνικά русский текст עברית العربية हिन्दी ไทย",
    "    indented\n        more\n\n\n   \t\t  mixed   \n",
]

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def run(*cmd, expect_fail=False):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0 and not expect_fail:
        sys.exit(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr}")
    return r


def bytelevel(texts, pattern, specials, ignore_merges, nfc=False):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=1400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = ignore_merges
    return reference(Tokenizer.from_str(json.dumps(j)))


def reference(tok):
    """Special tokens written in the text stay text, as shardtune's encode() has them."""
    tok.encode_special_tokens = True
    return tok


def save_folder(folder, tok, config):
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(dict({"tokenizer_class": "PreTrainedTokenizerFast"}, **config), f)
    return folder


def gemma(work):
    """A SentencePiece model with Gemma's settings, and its tokenizer.json as
    transformers' GemmaTokenizer lays it out (vocabulary and merges as
    transformers' SentencePiece extractor derives them from the scores)."""
    from transformers import GemmaTokenizer
    prefix = os.path.join(work, "gemma_sp")
    spm.SentencePieceTrainer.train(
        input=os.path.join(work, "corpus.txt"), model_prefix=prefix, vocab_size=1400, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        split_digits=True, allow_whitespace_only_pieces=True, minloglevel=2, character_coverage=1.0,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"])
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    merges = []
    for i in range(n):
        piece, score = sp.id_to_piece(i), sp.get_score(i)
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    folder = os.path.join(work, "gemma")
    t = GemmaTokenizer(vocab=vocab, merges=[(a, b) for a, b, _ in merges])
    t.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    t.save_pretrained(folder)
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    cfg = json.load(open(cfg_path))
    cfg["add_bos_token"] = True
    json.dump(cfg, open(cfg_path, "w"))
    os.replace(prefix + ".model", os.path.join(folder, "tokenizer.model"))
    return folder, sp


def llama2(texts):
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=1400, show_progress=False, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens + [
            "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]))
    return tok


def llamacpp_gguf(path, tok_json, spm_proc=None, pre=None, space_prefix=True):
    """A tokenizer-only GGUF as llama.cpp's converter writes one: gpt2 models
    from tokenizer.json (tokens, types, merges, pre), llama models from a
    SentencePiece .model (pieces, scores, types)."""
    w = gguf.GGUFWriter(path, "llama")
    if spm_proc is not None:
        sp = spm_proc
        n = sp.get_piece_size()
        types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else
                 4 if sp.IdToPiece(i) in ("<mask>", "<start_of_turn>", "<end_of_turn>") else 1 for i in range(n)]
        w.add_tokenizer_model("llama")
        w.add_token_list([sp.id_to_piece(i) for i in range(n)])
        w.add_token_scores([sp.get_score(i) for i in range(n)])
        w.add_token_types(types)
        w.add_add_space_prefix(space_prefix)
    else:
        vocab = tok_json["model"]["vocab"]
        added = {a["id"]: a for a in tok_json["added_tokens"]}
        n = max(list(vocab.values()) + list(added)) + 1
        by_id = {i: t for t, i in vocab.items()}
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list([added[i]["content"] if i in added else by_id[i] for i in range(n)])
        w.add_token_types([3 if i in added else 1 for i in range(n)])
        w.add_token_merges([m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in tok_json["model"]["merges"]])
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def shardtune_ids(a, work, spec, texts, name):
    tj, out = os.path.join(work, f"{name}_texts.json"), os.path.join(work, f"{name}_ids.json")
    json.dump(texts, open(tj, "w"))
    run(a.tool, "tokenize", spec, tj, out)
    return json.load(open(out))


def compare(a, work, spec, texts, want, what):
    got = shardtune_ids(a, work, spec, texts, what.replace(" ", "_").replace("/", "_"))
    bad = [t for t, g, w in zip(texts, got, want) if g != w]
    check(not bad, f"{what}: ids == reference on {len(texts)} texts"
          + (f" (first difference: {bad[0][:50]!r})" if bad else ""))


def fingerprint(a, spec):
    return run(a.tool, "fingerprint", spec).stdout.strip()


def same_fingerprint(a, specs, what):
    """The shards' tokenizer fingerprint does not depend on the file a byte-level
    BPE tokenizer was read from. (SentencePiece-style tokenizers written to
    GGUF keep scores, not merges: read back, their merges are derived from
    the scores and include pairs tokenizer.json does not list, so the two
    are different tokenizers to the fingerprint.)"""
    got = {s: fingerprint(a, s) for s in specs}
    check(len(set(got.values())) == 1 and all(v.startswith("tok2:") for v in got.values()),
          f"{what}: one fingerprint from {', '.join(os.path.basename(s) for s in specs)} ({sorted(set(got.values()))})")


def gguf_field(path, key):
    r = gguf.GGUFReader(path)
    f = r.fields[key]
    return f.contents() if hasattr(f, "contents") else bytes(f.parts[-1]).decode()


def tokenizers_part(a, work):
    texts = corpus()
    with open(os.path.join(work, "corpus.txt"), "w") as f:
        f.write("\n".join(texts))
    cases = [t for t in TEXTS + EXTRA_TEXTS] + [texts[0][:5000]]
    folders = {}

    byte_level = [
        ("llama3", LLAMA3_PATTERN, True, False, "llama-bpe",
         ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
        ("qwen2", QWEN2_PATTERN, False, True, "qwen2",
         ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]),
        ("o200k", O200K_PATTERN, False, False, "gpt-4o",
         ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
        ("cl100k", LLAMA3_PATTERN, False, False, "dbrx", ["<|endoftext|>", "<|pad|>"]),
    ]
    for name, pattern, ignore, nfc, pre, specials in byte_level:
        tok = bytelevel(texts, pattern, specials, ignore, nfc)
        folder = save_folder(os.path.join(work, name), tok, {"eos_token": specials[0]})
        folders[name] = folder
        want = [tok.encode(t, add_special_tokens=False).ids for t in cases]
        compare(a, work, f"hf:{folder}/tokenizer.json", cases, want, f"{name} tokenizer.json")
        # llama.cpp does not normalize: on its GGUF the reference is the same
        # tokenizer without NFC, on texts NFC leaves alone.
        gtexts = [t for t in cases if not nfc or unicodedata.normalize("NFC", t) == t]
        gwant = [tok.encode(t, add_special_tokens=False).ids for t in gtexts]
        tj = json.loads(tok.to_str())
        path = llamacpp_gguf(os.path.join(work, f"{name}_llamacpp.gguf"), tj, pre=pre)
        compare(a, work, path, gtexts, gwant, f"{name} GGUF (gpt2, pre {pre}) as llama.cpp writes it")
        ours = os.path.join(work, f"{name}_shardtune.gguf")
        run(a.tool, "write-tokenizer", folder, ours)
        got_pre = gguf_field(ours, "tokenizer.ggml.pre")
        check(got_pre == pre, f"{name}: shardtune writes tokenizer.ggml.pre '{got_pre}' (want {pre})")
        compare(a, work, ours, gtexts, gwant, f"{name} GGUF as shardtune writes it")
        same_fingerprint(a, [f"{folder}/tokenizer.json", ours], name)

    # Gemma: tokenizer.model, its tokenizer.json, and both GGUF routes.
    folder, sp = gemma(work)
    folders["gemma"] = folder
    hf = reference(Tokenizer.from_file(os.path.join(folder, "tokenizer.json")))
    spm_want = [sp.encode(t) for t in cases]
    hf_want = [hf.encode(t, add_special_tokens=False).ids for t in cases]
    agree = sum(x == y for x, y in zip(spm_want, hf_want))
    print(f"     gemma: transformers' tokenizer.json agrees with sentencepiece on {agree}/{len(cases)} texts")
    compare(a, work, f"sp:{folder}/tokenizer.model", cases, spm_want, "gemma tokenizer.model vs sentencepiece")
    compare(a, work, f"hf:{folder}/tokenizer.json", cases, hf_want, "gemma tokenizer.json vs HF tokenizers")
    path = llamacpp_gguf(os.path.join(work, "gemma_llamacpp.gguf"), None, spm_proc=sp, space_prefix=False)
    compare(a, work, path, cases, spm_want, "gemma GGUF (llama, no space prefix) as llama.cpp writes it vs sentencepiece")
    ours = os.path.join(work, "gemma_shardtune.gguf")
    run(a.tool, "write-tokenizer", folder, ours)
    check(gguf_field(ours, "tokenizer.ggml.model") == "llama" and gguf_field(ours, "tokenizer.ggml.add_space_prefix") is False,
          "gemma: shardtune writes tokenizer.ggml.model llama, add_space_prefix false")
    compare(a, work, ours, cases, hf_want, "gemma GGUF as shardtune writes it vs HF tokenizers")

    # Phi-3: Llama-2's SentencePiece-style BPE.
    tok = reference(llama2(texts))
    folder = save_folder(os.path.join(work, "llama2"), tok, {"eos_token": "<|endoftext|>", "unk_token": "<unk>"})
    folders["llama2"] = folder
    want = [tok.encode(t, add_special_tokens=False).ids for t in cases]
    compare(a, work, f"hf:{folder}/tokenizer.json", cases, want, "llama2 (Phi-3) tokenizer.json")
    ours = os.path.join(work, "llama2_shardtune.gguf")
    run(a.tool, "write-tokenizer", folder, ours)
    check(gguf_field(ours, "tokenizer.ggml.model") == "llama" and gguf_field(ours, "tokenizer.ggml.add_space_prefix") is True,
          "llama2 (Phi-3): shardtune writes tokenizer.ggml.model llama, add_space_prefix true")
    compare(a, work, ours, cases, want, "llama2 (Phi-3) GGUF as shardtune writes it")
    check(fingerprint(a, f"{folder}/tokenizer.json") != fingerprint(a, f"{folders['gemma']}/tokenizer.json")
          and fingerprint(a, "byte") != fingerprint(a, f"{folder}/tokenizer.json"), "other tokenizers, other fingerprints")
    return folders


# Chat templates shaped as the families ship them.
QWEN3 = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- set ns = namespace(last_query_index=messages|length - 1) %}"
    "{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}"
    "{%- if message.role == 'user' and ns.last_query_index == messages|length - 1 %}{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}{%- set content = message.content %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- if loop.index0 > ns.last_query_index and loop.last %}"
    "{{- '<|im_start|>' + message.role + '\\n<think>\\n\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")
GEMMA3 = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}")
GEMMA2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")
PHI4 = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}")
LLAMA31 = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = \"\" %}{%- endif %}"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}{{- system_message }}{{- \"<|eot_id|>\" }}"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
LLAMA32 = LLAMA31.replace("{%- set date_string = \"26 Jul 2024\" %}",
                          "{%- if strftime_now is defined %}{%- set date_string = strftime_now(\"%d %b %Y\") %}"
                          "{%- else %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}")
SMOLLM3 = ("{%- set reasoning_mode = \"/think\" -%}{{- \"<|im_start|>system\\n## Metadata\\n\\nKnowledge Cutoff Date: June 2025\\n\" }}"
           "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endfor %}")

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris."}],
    [{"role": "system", "content": "You answer in one word."},
     {"role": "user", "content": "  Capital of Peru?\n"},
     {"role": "assistant", "content": "\nLima\n"},
     {"role": "user", "content": "And of Chile? café 日本語"},
     {"role": "assistant", "content": "Santiago, 12345 people — maybe."}],
]


def chat_part(a, work, folders):
    from transformers import AutoTokenizer
    cases = [  # family, tokenizer folder, template, bos_token, eos_token, end-of-turn marker, system allowed
        ("qwen3", "qwen2", QWEN3, None, "<|im_end|>", "<|im_end|>", True),
        ("gemma3", "gemma", GEMMA3, "<bos>", "<eos>", "<end_of_turn>", True),
        ("gemma2", "gemma", GEMMA2, "<bos>", "<eos>", "<end_of_turn>", False),
        ("phi3", "llama2", PHI3, None, "<|endoftext|>", "<|end|>", True),
        ("phi4-mini", "o200k", PHI4, None, "<|endoftext|>", "<|end|>", True),
        ("llama3.1", "llama3", LLAMA31, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>", True),
        ("llama3.2", "llama3", LLAMA32, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>", True),
    ]
    for family, base, template, bos, eos, end, system in cases:
        folder = os.path.join(work, f"chat_{family}")
        os.makedirs(folder, exist_ok=True)
        tok_json = json.load(open(os.path.join(folders[base], "tokenizer.json")))
        json.dump(tok_json, open(os.path.join(folder, "tokenizer.json"), "w"))
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template, "eos_token": eos,
               "add_bos_token": bos is not None}
        if bos:
            cfg["bos_token"] = bos
        json.dump(cfg, open(os.path.join(folder, "tokenizer_config.json"), "w"))
        ref = AutoTokenizer.from_pretrained(folder)
        for i, msgs in enumerate(CONVERSATIONS):
            if not system and msgs[0]["role"] == "system":
                mj = os.path.join(work, f"chat_{family}_{i}.json")
                json.dump(msgs, open(mj, "w"))
                r = run(a.tool, "chat", folder, mj, os.path.join(work, "x.json"), expect_fail=True)
                check(r.returncode == 2 and "no system role" in r.stderr,
                      f"{family}: a system message is refused as the template refuses it: {r.stderr.strip()[:120]!r}")
                continue
            mj = os.path.join(work, f"chat_{family}_{i}.json")
            prompt = msgs[:-1]
            json.dump(prompt, open(mj, "w"))
            out = os.path.join(work, f"chat_{family}_{i}_prompt.json")
            run(a.tool, "chat", folder, mj, out)
            kw = {"enable_thinking": False} if family == "qwen3" else {}
            want = list(ref.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False, **kw))
            got = json.load(open(out))
            check(got == want, f"{family}: generation prompt ids == apply_chat_template ({len(want)} ids, conversation {i})")
            json.dump(msgs, open(mj, "w"))
            out = os.path.join(work, f"chat_{family}_{i}_train.json")
            run(a.tool, "chat-train", folder, mj, out)
            r = json.load(open(out))
            want = list(ref.apply_chat_template(msgs, tokenize=True, return_dict=False))
            check(r["ids"] == want, f"{family}: whole conversation ids == apply_chat_template ({len(want)} ids, conversation {i})")
            # The mask: each assistant turn's content and end marker, nothing
            # else (a token the header's whitespace merged into the content's
            # start is a target too).
            runs, cur = [], []
            for t, m in zip(r["ids"], r["mask"]):
                if m:
                    cur.append(t)
                elif cur:
                    runs.append(cur)
                    cur = []
            if cur:
                runs.append(cur)
            trim = family.startswith(("gemma", "llama"))
            turns = [m["content"].strip() if trim else m["content"] for m in msgs if m["role"] == "assistant"]
            if family == "qwen3":
                turns[-1] = turns[-1].lstrip("\n")
            texts = [ref.decode(run_ids) for run_ids in runs]
            ok = len(texts) == len(turns) and all(
                x.endswith(c + end) and not x[:len(x) - len(c + end)].strip() for x, c in zip(texts, turns))
            check(ok, f"{family}: the loss mask covers exactly the assistant turns and their end markers {texts!r}")
    # SmolLM3's dated template: refused by name.
    folder = os.path.join(work, "chat_smollm3")
    os.makedirs(folder, exist_ok=True)
    json.dump(json.load(open(os.path.join(folders["qwen2"], "tokenizer.json"))), open(os.path.join(folder, "tokenizer.json"), "w"))
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": SMOLLM3, "eos_token": "<|im_end|>"},
              open(os.path.join(folder, "tokenizer_config.json"), "w"))
    mj = os.path.join(work, "chat_smollm3.json")
    json.dump(CONVERSATIONS[0][:1], open(mj, "w"))
    r = run(a.tool, "chat", folder, mj, os.path.join(work, "x.json"), expect_fail=True)
    check(r.returncode == 2 and "SmolLM3" in r.stderr and "--chat-template chatml" in r.stderr,
          f"SmolLM3's dated template is refused by name: {r.stderr.strip()[:120]!r}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tool", required=True)
    p.add_argument("--work", required=True)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    folders = tokenizers_part(a, a.work)
    chat_part(a, a.work, folders)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all family tokenizer checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

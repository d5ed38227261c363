"""Tokenizers and documents for benchmarks/peers/tokenizers.sh.

Trains, on the licence texts Debian ships (/usr/share/common-licenses), BPE
tokenizers of a real model's size (32000 tokens) in the layouts real models
use, with Hugging Face `tokenizers`:
  gpt2      ByteLevel pre-tokenizer (GPT-2 regex)
  llama3    Split regex + ByteLevel, ignore_merges
  llama2    Prepend + Replace normalizer, no pre-tokenizer, byte fallback
            (Llama-2, Mistral: a whole document is one word)
  metaspace Metaspace pre-tokenizer, byte fallback
and writes the documents: docs_4k.jsonl (about MB megabytes of ~4 kB
documents, split at spaces) and docs_1doc.jsonl (the same text as one
document).

  python make_tokenizers.py OUT_DIR [MB]
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "tokenize"))
from make_fixtures import LLAMA3_PATTERN, bytelevel_bpe, corpus  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402

VOCAB = 32000


def main():
    out = sys.argv[1]
    mb = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    os.makedirs(out, exist_ok=True)
    texts = corpus()

    bytelevel_bpe(texts, VOCAB, ["<|endoftext|>"], pre_tokenizers.ByteLevel(add_prefix_space=False)).save(
        os.path.join(out, "gpt2.json"))

    llama3 = bytelevel_bpe(texts, VOCAB, ["<|begin_of_text|>", "<|end_of_text|>"], pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))
    path = os.path.join(out, "llama3.json")
    llama3.save(path)
    j = json.load(open(path))
    j["model"]["ignore_merges"] = True
    json.dump(j, open(path, "w"))

    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    # Llama-2's layout. Its vocabulary never crosses a word boundary (as
    # SentencePiece's does not), so it is trained with a Metaspace
    # pre-tokenizer, which the saved file then drops.
    llama2 = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    llama2.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    llama2.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens, show_progress=False))
    llama2.pre_tokenizer = None
    llama2.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    llama2.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                        decoders.Strip(content=" ", left=1)])
    llama2.save(os.path.join(out, "llama2.json"))

    meta = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    meta.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    meta.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    meta.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens, show_progress=False))
    meta.save(os.path.join(out, "metaspace.json"))

    # The documents: the licence texts, repeated to MB megabytes.
    text = "\n\n".join(texts)
    body = ""
    while len(body.encode()) < mb * 1e6:
        body += text
    body = body.encode()[: int(mb * 1e6)].decode("utf-8", errors="ignore")
    docs, start = [], 0
    while start < len(body):
        end = body.find(" ", start + 4000)
        end = len(body) if end < 0 else end
        docs.append(body[start:end])
        start = end
    with open(os.path.join(out, "docs_4k.jsonl"), "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    with open(os.path.join(out, "docs_1doc.jsonl"), "w") as f:
        f.write(json.dumps({"text": body}) + "\n")


if __name__ == "__main__":
    main()

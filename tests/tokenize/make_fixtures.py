"""Tokenizers and reference ids for shardtune's tokenizer tests.

No tokenizer can be downloaded, so this trains its own on real English text
shipped in Debian packages (the licence texts in /usr/share/common-licenses)
with Hugging Face `tokenizers` and `sentencepiece`, in the layouts real models
use: GPT-2 (ByteLevel), Llama-3 (Split regex + ByteLevel, ignore_merges),
Llama-2 (Metaspace normalizer + byte fallback), Metaspace pre-tokenizer, GPT-2's
vocab.json + merges.txt, and SentencePiece BPE and unigram .model files. For
every test string it records the reference library's ids (special tokens
parsed and not) and its decoding.

  python make_fixtures.py OUT_DIR     -> OUT_DIR/fixtures.json and the tokenizer files
"""
import glob
import json
import os
import sys

import sentencepiece as spm
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

TEXTS = [
    "Hello world",
    "Hello, world! How's it going? I'LL be there; we've seen they're done.",
    "  leading spaces and trailing   ",
    "tabs\tand\t\tmore\ttabs",
    "line one\nline two\n\n\nline five\r\nwindows line",
    "numbers 1 12 123 1234 1234567 3.14159 2026-11-26 0x1F",
    "punctuation!!! ... ??? (brackets) [more] {braces} <angle> @#$%^&*_+=~`|\\/",
    "café naïve résumé Zürich São Paulo Ångström",
    "日本語のテキストと中文文本，还有한국어 텍스트",
    "emoji 👍🏽 🎉🎉 ❤️ and flags 🇩🇪",
    "mixed <|endoftext|> special tokens <|endoftext|>",
    "<|begin_of_text|>header<|eot_id|> ChatML <|im_start|>user\nhi<|im_end|>",
    "",
    " ",
    "\n",
    "a",
    "don't DON'T Don't 'quoted' \"double\"",
    "The GNU General Public License is a free, copyleft license for software and other kinds of works.",
    "x" * 300,
    "   \n\t  \n  multiple\u00a0non-breaking\u2003em-space",
    "decomposed accents: cafe\u0301 nai\u0308ve A\u030angstro\u0308m, ligature \ufb01 and \u2460",
    # One long word (thousands of merges in a single BPE call, many tied ranks).
    "".join("etaoinshrdlu"[(i * 7919 + i // 13) % 12] for i in range(5000)),
    # Licence-like prose repeated, with no space-free stretch: for layouts
    # without a pre-tokenizer it is one 6 kB word.
    " ".join(["the licensee may copy, modify and distribute the program"] * 100),
]


def corpus():
    files = sorted(glob.glob("/usr/share/common-licenses/*"))
    text = []
    for f in files:
        if os.path.isfile(f):
            with open(f, encoding="utf-8", errors="ignore") as fh:
                text.append(fh.read())
    if not text:
        sys.exit("no text under /usr/share/common-licenses (base-files)")
    return text


def bytelevel_bpe(texts, vocab_size, specials, pre):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    texts = corpus()
    corpus_path = os.path.join(out, "corpus.txt")
    with open(corpus_path, "w") as f:
        f.write("\n".join(texts))

    made = []

    gpt2 = bytelevel_bpe(texts, 1200, ["<|endoftext|>"], pre_tokenizers.ByteLevel(add_prefix_space=False))
    path = os.path.join(out, "gpt2_style.json")
    gpt2.save(path)
    made.append(("gpt2_style", f"hf:{path}", gpt2))
    # The same model as GPT-2's vocab.json + merges.txt.
    gdir = os.path.join(out, "gpt2_files")
    os.makedirs(gdir, exist_ok=True)
    gpt2.model.save(gdir)
    made.append(("gpt2_vocab_merges", f"gpt2:{gdir}", gpt2))

    l3_specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    llama3 = bytelevel_bpe(texts, 1500, l3_specials, pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))
    llama3.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", llama3.token_to_id("<|begin_of_text|>"))])
    path = os.path.join(out, "llama3_style.json")
    llama3.save(path)
    with open(path) as f:  # Llama-3's tokenizer.json sets ignore_merges
        j = json.load(f)
    j["model"]["ignore_merges"] = True
    with open(path, "w") as f:
        json.dump(j, f)
    llama3 = Tokenizer.from_file(path)
    made.append(("llama3_style", f"hf:{path}", llama3))

    # Qwen2's layout: NFC normalizer, Split regex + ByteLevel, ChatML specials.
    chatml = bytelevel_bpe(texts, 1200, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                           pre_tokenizers.Sequence([
                               pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))
    chatml.normalizer = normalizers.NFC()
    path = os.path.join(out, "chatml_style.json")
    chatml.save(path)
    made.append(("chatml_style", f"hf:{path}", chatml))

    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    llama2 = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    llama2.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    llama2.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                        decoders.Strip(content=" ", left=1)])
    llama2.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=1200, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens, show_progress=False))
    path = os.path.join(out, "llama2_style.json")
    llama2.save(path)
    made.append(("llama2_style", f"hf:{path}", llama2))

    meta = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    meta.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    meta.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    meta.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=1200, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens, show_progress=False))
    path = os.path.join(out, "metaspace_style.json")
    meta.save(path)
    made.append(("metaspace_style", f"hf:{path}", meta))

    fixtures = []
    for name, spec, tok in made:
        cases = []
        for t in TEXTS:
            tok.encode_special_tokens = False
            with_special = tok.encode(t, add_special_tokens=False).ids
            tok.encode_special_tokens = True
            plain = tok.encode(t, add_special_tokens=False).ids
            tok.encode_special_tokens = False
            cases.append({"text": t, "ids": plain, "ids_special": with_special,
                          "decoded": tok.decode(plain, skip_special_tokens=False)})
        fixtures.append({"name": name, "spec": spec, "cases": cases,
                         "byte_level": name in ("gpt2_style", "gpt2_vocab_merges", "llama3_style")})

    for model_type in ("bpe", "unigram"):
        prefix = os.path.join(out, f"sp_{model_type}")
        spm.SentencePieceTrainer.train(input=corpus_path, model_prefix=prefix, vocab_size=800,
                                       model_type=model_type, byte_fallback=True, minloglevel=2,
                                       character_coverage=1.0)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        cases = [{"text": t, "ids": sp.encode(t), "ids_special": sp.encode(t), "decoded": sp.decode(sp.encode(t))}
                 for t in TEXTS if "<" not in t]
        fixtures.append({"name": f"sentencepiece_{model_type}", "spec": f"sp:{prefix}.model", "cases": cases,
                         "byte_level": False})

    with open(os.path.join(out, "fixtures.json"), "w") as f:
        json.dump(fixtures, f, ensure_ascii=False)
    print(f"{len(fixtures)} tokenizers, {sum(len(x['cases']) for x in fixtures)} cases -> {out}")


if __name__ == "__main__":
    main()

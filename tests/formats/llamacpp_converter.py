#!/usr/bin/env python3
"""GGUF files written by llama.cpp's own converter (convert_hf_to_gguf.py,
fetched by scripts/fetch_llamacpp_converter.sh) for every family shardtune
reads, from the tiny transformers models gguf_synthetic made:

  - shardtune loads each with float32 logits equal to transformers' on the
    HF folder (<= 1e-4);
  - its tokenizer (gpt2 model with the pre-tokenizer named, or llama /
    SentencePiece from a tokenizer.model) gives the reference ids;
  - shardtune's own HF -> GGUF of the same folder has the same tensor names
    and shapes, and the same value for every metadata key both files hold
    under the architecture's prefix; keys only one of them writes are listed.

The converter names a BPE pre-tokenizer by hashing its output on a fixed
text, which only the released tokenizers match; for the tiny tokenizers the
name is given instead (smollm: their Digits + ByteLevel layout).

Usage: llamacpp_converter.py --converter DIR --model-tool BIN --shardtune BIN --tool gguf_tool --work DIR
Exit 77 (ctest's skip) when the converter is absent, unless CI=true.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

failures = []
FAMILIES = ["llama3", "qwen3", "gemma2", "gemma3", "phi3", "phi4mini", "olmo2", "smollm3"]
# Families whose converter reads tokenizer.model (SentencePiece): given one here.
SPM = {"gemma2", "phi3"}

RUNNER = """
import sys
sys.path.insert(0, sys.argv[1])
import convert_hf_to_gguf as c
from conversion import base
pre = sys.argv[2]
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[3:]
c.main()
"""


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def run(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return r


def sentencepiece_model(folder, vocab, dummy_prefix):
    """As the families ship theirs: no normalization, whitespace kept; Gemma
    without the dummy prefix (its converter writes add_space_prefix false),
    Phi-3 (Llama-2's) with it."""
    import sentencepiece as spm
    prefix = os.path.join(folder, "sp")
    spm.SentencePieceTrainer.train(input="/usr/share/common-licenses/GPL-3", model_prefix=prefix,
                                   vocab_size=min(vocab, 280), model_type="bpe", minloglevel=2,
                                   hard_vocab_limit=False, character_coverage=0.995,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   add_dummy_prefix=dummy_prefix)
    os.replace(prefix + ".model", os.path.join(folder, "tokenizer.model"))
    os.remove(prefix + ".vocab")
    return spm.SentencePieceProcessor(model_file=os.path.join(folder, "tokenizer.model"))


def fields(path):
    import gguf
    r = gguf.GGUFReader(path)
    out = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        v = f.contents()
        out[k] = v
    return r, out


def main():
    p = argparse.ArgumentParser()
    for k in ("converter", "model-tool", "shardtune", "tool", "work", "synthetic"):
        p.add_argument("--" + k, required=True)
    a = p.parse_args()
    if not os.path.isfile(os.path.join(a.converter, "convert_hf_to_gguf.py")):
        msg = f"llama.cpp's converter is not at {a.converter} (scripts/fetch_llamacpp_converter.sh fetches it)"
        if os.environ.get("CI") == "true":
            sys.exit(msg)
        print("skipped: " + msg)
        return 77
    os.makedirs(a.work, exist_ok=True)
    runner = os.path.join(a.work, "run_converter.py")
    with open(runner, "w") as f:
        f.write(RUNNER)
    from safetensors.numpy import load_file, save_file
    from transformers import AutoModelForCausalLM
    from tokenizers import Tokenizer
    torch.manual_seed(0)
    ids = torch.randint(0, 280, (2, 17))
    ids_path = os.path.join(a.work, "ids.safetensors")
    save_file({"input_ids": ids.numpy()}, ids_path)
    texts = ["Hello world, 12345 times!", "  spaced   out\n\ttabs and newlines\n",
             "café naïve 日本語 👍", "def f(x):\n    return x ** 2  # square"]
    texts_path = os.path.join(a.work, "texts.json")
    json.dump(texts, open(texts_path, "w"))
    for fam in FAMILIES:
        src = os.path.join(a.synthetic, f"fam_{fam}")
        if not os.path.isdir(src):
            sys.exit(f"{src} is missing: run gguf_synthetic first")
        d = os.path.join(a.work, fam)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(src, d)
        cfg = json.load(open(os.path.join(d, "config.json")))
        sp = None
        if fam in SPM:
            # The converter reads it; shardtune's own GGUF of the folder keeps writing tokenizer.json's.
            sp = sentencepiece_model(d, cfg["vocab_size"], dummy_prefix=not fam.startswith("gemma"))
        if fam == "phi4mini":  # Phi-4-mini's tokenizer_config names GPT2Tokenizer: the converter's gpt2 path
            tc = json.load(open(os.path.join(d, "tokenizer_config.json")))
            tc["tokenizer_class"] = "GPT2Tokenizer"
            json.dump(tc, open(os.path.join(d, "tokenizer_config.json"), "w"))
        out = os.path.join(a.work, f"{fam}.gguf")
        aside = os.path.join(a.work, "aside")
        if sp is not None:  # the converter would lay tokenizer.json's added tokens over the SentencePiece ids
            shutil.rmtree(aside, ignore_errors=True)
            os.makedirs(aside)
            for name in ("tokenizer.json", "tokenizer_config.json"):
                shutil.move(os.path.join(d, name), os.path.join(aside, name))
        run(sys.executable, runner, a.converter, "smollm", d, "--outfile", out, "--outtype", "f32",
            cwd=a.converter)
        if sp is not None:
            for name in ("tokenizer.json", "tokenizer_config.json"):
                shutil.move(os.path.join(aside, name), os.path.join(d, name))
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
        with torch.no_grad():
            ref = model(ids).logits.float().numpy()
        got_path = os.path.join(a.work, "logits.safetensors")
        run(a.model_tool, "logits", out, ids_path, got_path)
        diff = float(np.max(np.abs(load_file(got_path)["logits"] - ref)))
        check(diff <= 1e-4, f"{fam}: llama.cpp's converter's file, logits vs transformers: max diff {diff:.2e}")

        ids_out = os.path.join(a.work, "tok_ids.json")
        run(a.tool, "tokenize", out, texts_path, ids_out)
        got = json.load(open(ids_out))
        if sp is not None:
            want = [sp.encode(t) for t in texts]
            ref_name = "sentencepiece"
        else:
            hf = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
            want = [hf.encode(t, add_special_tokens=False).ids for t in texts]
            ref_name = "HF tokenizers"
        check(got == want, f"{fam}: the converter's tokenizer gives {ref_name}' ids")

        ours = os.path.join(a.work, f"{fam}_shardtune.gguf")
        run(a.shardtune, "convert", d, ours, "--overwrite")
        if sp is None:  # byte-level BPE: the shards' tokenizer fingerprint does not depend on the file
            prints = {name: run(a.tool, "fingerprint", path).stdout.strip()
                      for name, path in (("tokenizer.json", d), ("llama.cpp's GGUF", out), ("shardtune's GGUF", ours))}
            check(len(set(prints.values())) == 1, f"{fam}: one tokenizer fingerprint from {', '.join(prints)}"
                  + ("" if len(set(prints.values())) == 1 else f" ({prints})"))
        r1, f1 = fields(out)
        r2, f2 = fields(ours)
        t1 = {t.name: tuple(int(x) for x in t.shape) for t in r1.tensors}
        t2 = {t.name: tuple(int(x) for x in t.shape) for t in r2.tensors}
        check(t1 == t2, f"{fam}: shardtune's GGUF has the converter's tensor names and shapes"
              + ("" if t1 == t2 else f" (only converter: {sorted(set(t1) - set(t2))}, only shardtune: "
                                     f"{sorted(set(t2) - set(t1))})"))
        arch = f1["general.architecture"]
        keys = sorted(k for k in set(f1) | set(f2)
                      if k.startswith(arch + ".") or (sp is None and k.startswith("tokenizer.ggml.")))
        differ = []
        for k in keys:
            if k in f1 and k in f2:
                x, y = f1[k], f2[k]
                same = (np.allclose(np.array(x, dtype=float), np.array(y, dtype=float), rtol=1e-6)
                        if isinstance(x, (int, float, list)) and not isinstance(x, bool) and
                        (not isinstance(x, list) or not x or not isinstance(x[0], str)) else x == y)
                if not same:
                    differ.append(k)
        check(not differ, f"{fam}: every {arch}.* and tokenizer.ggml.* key both files hold has the same value"
              + (f" (differ: {differ})" if differ else ""))
        only1 = [k for k in keys if k in f1 and k not in f2]
        only2 = [k for k in keys if k in f2 and k not in f1]
        print(f"      {fam}: keys only the converter writes: {only1}; only shardtune: {only2}")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks against llama.cpp's converter passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""`shardtune eval --generate` on a tiny random-init Llama with a ChatML
tokenizer (trained here on Debian's licence texts):

  - each answer equals transformers' greedy generate on the same prompt
    (apply_chat_template with the generation prompt), stopped at <|im_end|>;
  - prompt tokens equal apply_chat_template's, for the zero-shot arm and for
    the few-shot arm (the pool holds exactly K conversations, all used);
  - every score in examples.jsonl is its metric of (answer, reference), and
    summary.json's means are their means;
  - --general FILE: every arm answers the general prompts too; a line
    ending with the user's turn is scored against the first arm's answer,
    one ending with the assistant's against it; each arm's general scores
    are the examples' means, beside its task scores; `stopped` says whether
    an answer ended by itself or at --max-new-tokens;
  - 2 ranks give the answers 1 rank gives;
  - --require-better exits 1 when the last arm is the first model again;
  - bad input exits 2 naming file and line: a line ending with a system
    message, an assistant turn with nothing before it, a file that is not
    chat JSONL (as --generate or --general), K larger than the pool, a
    tokenizer without a chat template, --few-shot-from without --few-shot,
    --general-metric without --general, an unknown metric.

Usage: eval_generate_test.py --shardtune BIN --mpiexec MPIEXEC --work DIR
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import torch

failures = []
TEMPLATE = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}"
            "{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}")


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def conv(q, a, system=None):
    m = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
    return {"messages": m + [{"role": "assistant", "content": a}]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shardtune", required=True)
    ap.add_argument("--mpiexec", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.manual_seed(0)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train([f"/usr/share/common-licenses/{n}" for n in ("GPL-3", "Apache-2.0")], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    model_dir = os.path.join(work, "model")
    os.makedirs(model_dir)
    tok.save(os.path.join(model_dir, "tokenizer.json"))
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "chat_template": TEMPLATE},
              open(os.path.join(model_dir, "tokenizer_config.json"), "w"))
    cfg = LlamaConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, bos_token_id=None, eos_token_id=0,
                      tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3 if p.dim() > 1 else 0.1).add_(1.0 if p.dim() == 1 else 0.0)
    model.save_pretrained(model_dir)
    ref = AutoTokenizer.from_pretrained(model_dir)

    heldout = os.path.join(work, "heldout.jsonl")
    rows = [conv("What is the capital of France?", '{"capital": "Paris"}'),
            conv("Name a colour.", "blue", system="Answer in one word."),
            conv("Copy this: the licensee may copy", "the licensee may copy"),
            conv("2 + 2 = ?", "4"),
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                          {"role": "user", "content": "Bye?"}, {"role": "assistant", "content": "Goodbye"}]}]
    with open(heldout, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    general = os.path.join(work, "general.jsonl")
    grows = [{"messages": [{"role": "user", "content": q}]} for q in ("Tell me a story.", "What is 12 times 7?",
                                                                        "Translate 'thank you' into French.")]
    grows.append(conv("Say yes.", "yes"))
    with open(general, "w") as f:
        for r in grows:
            f.write(json.dumps(r) + "\n")
    pool = os.path.join(work, "pool.jsonl")
    shots = [conv("Capital of Peru?", '{"capital": "Lima"}'), conv("Capital of Chile?", '{"capital": "Santiago"}')]
    with open(pool, "w") as f:
        for r in shots:
            f.write(json.dumps(r) + "\n")

    def run(out, *extra, ranks=1, with_general=True):
        cmd = [a.shardtune, "eval", "--generate", heldout, "--model", model_dir, "--model", model_dir,
               "--few-shot", "2", "--few-shot-from", pool, "--max-new-tokens", "12", "--output", out, *extra]
        if with_general:
            cmd += ["--general", general]
        if ranks > 1:
            cmd = [a.mpiexec, "-np", str(ranks), "--oversubscribe", "--bind-to", "none"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True)

    out1 = os.path.join(work, "np1")
    r = run(out1)
    print(r.stdout)
    check(r.returncode == 0, f"eval --generate runs ({r.returncode}: {r.stderr.strip()[-300:]})")
    ex = [json.loads(l) for l in open(os.path.join(out1, "examples.jsonl"))]
    arms = sorted({e["arm"] for e in ex})
    check(len(ex) == 3 * (len(rows) + len(grows)) and len(arms) == 3,
          f"3 arms x ({len(rows)} task + {len(grows)} general) examples: {arms}")
    check([e["set"] for e in ex] == ["task"] * len(rows) * 3 + ["general"] * len(grows) * 3,
          "examples.jsonl: the task's examples of each arm, then the general ones")
    end = ref.convert_tokens_to_ids("<|im_end|>")
    for e in ex:
        msgs = e["prompt"]
        if "2-shot" in e["arm"]:
            sys_msgs = [m for m in msgs if m["role"] == "system"]
            rest = [m for m in msgs if m["role"] != "system"]
            want_tokens = sum(len(ref.apply_chat_template(s["messages"], tokenize=True, return_dict=False))
                              for s in shots) + len(ref.apply_chat_template(
                                  sys_msgs + rest, add_generation_prompt=True, tokenize=True, return_dict=False))
            check(e["prompt_tokens"] == want_tokens,
                  f"{e['arm']} line {e['line']}: prompt tokens {e['prompt_tokens']} == apply_chat_template's {want_tokens}")
            continue
        ids = ref.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
        check(e["prompt_tokens"] == len(ids), f"{e['arm']} line {e['line']}: prompt tokens == apply_chat_template's")
        with torch.no_grad():
            g = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=[end, 0],
                               pad_token_id=0)[0, len(ids):].tolist()
        if g and g[-1] in (end, 0):
            g = g[:-1]
        want = ref.decode(g, skip_special_tokens=True)
        check(e["answer"] == want, f"{e['arm']} line {e['line']}: answer == transformers' greedy generate "
                                   f"({e['answer']!r} vs {want!r})")
        check(e["scores"]["exact"] == float(e["answer"].strip() == e["reference"].strip()), "exact score of the answer")
    first = {e["line"]: e["answer"] for e in ex if e["set"] == "general" and e["arm"] == ex[0]["arm"]}
    for e in ex:
        if e["set"] == "general":
            given = grows[e["line"] - 1]["messages"][-1]
            want = given["content"] if given["role"] == "assistant" else first[e["line"]]
            check(e["reference"] == want and e["reference_from_first_arm"] == (given["role"] == "user"),
                  f"{e['arm']} general line {e['line']}: the reference is {'the first arm' if given['role'] == 'user' else 'the file'}'s answer")
        check((e["stopped"] == "length") == (e["answer_tokens"] == 12),
              f"{e['arm']} {e['set']} line {e['line']}: stopped '{e['stopped']}' after {e['answer_tokens']} tokens")
    summary = json.load(open(os.path.join(out1, "summary.json")))
    for arm in summary["arms"]:
        for key, kind, metric in (("metrics", "task", "normalized"), ("general", "general", "chrf")):
            vals = [e["scores"][metric] for e in ex if e["arm"] == arm["name"] and e["set"] == kind]
            got = arm["metrics"] if key == "metrics" else arm["general"]["metrics"]
            check(abs(got[metric]["mean"] - sum(vals) / len(vals)) < 1e-12,
                  f"{arm['name']}: the summary's {kind} {metric} mean is the examples' mean")
    check(summary["general"]["examples"] == len(grows) and summary["general"]["metric"] == "chrf"
          and summary["general"]["references"] == "3 compared with the first arm's answers, 1 scored against the file's answers",
          f"summary.json names the general set: {summary['general']}")
    check("general: " + general in r.stdout and "task: " + heldout in r.stdout, "the console shows both tables")
    check(os.path.exists(os.path.join(out1, "report.md")) and os.path.exists(os.path.join(out1, "chart.png"))
          and not os.path.exists(os.path.join(out1, ".parts")), "report.md and chart.png written, nothing else left")

    out2 = os.path.join(work, "np2")
    r = run(out2, ranks=2)
    ex2 = [json.loads(l) for l in open(os.path.join(out2, "examples.jsonl"))] if r.returncode == 0 else []
    check(r.returncode == 0 and [(e["arm"], e["line"], e["answer"]) for e in ex] ==
          [(e["arm"], e["line"], e["answer"]) for e in ex2], f"2 ranks give 1 rank's answers ({r.stderr.strip()[-200:]})")

    r = run(os.path.join(work, "rb"), "--require-better", with_general=False)
    check(r.returncode == 1 and "does not beat the first" in r.stdout,
          f"--require-better exits 1 when the last arm is the first model again ({r.returncode})")

    def bad(name, lines, want, *extra, file_arg=None):
        path = os.path.join(work, name + ".jsonl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        cmd = [a.shardtune, "eval", "--generate", file_arg or path, "--model", model_dir, "--output",
               os.path.join(work, "bad"), *[x.replace("FILE", path) for x in extra]]
        r = subprocess.run(cmd, capture_output=True, text=True)
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        check(r.returncode == 2 and want.replace("FILE", path) in msg and "Traceback" not in r.stderr,
              f"refused: {name}: '{msg[-160:]}'")

    good = json.dumps(rows[0])
    bad("ends_with_system", [good, json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                            {"role": "system", "content": "be brief"}]})],
        "FILE:2: ends with a system message: nothing to answer")
    bad("assistant_alone", [good, json.dumps({"messages": [{"role": "assistant", "content": "hi"}]})],
        "FILE:2: the assistant turn to score has no prompt before it")
    bad("not_chat", [good, json.dumps({"text": "plain"})], "FILE:2: not a chat example")
    bad("not_json", ["{oops"], "FILE:1: not a JSON object")
    bad("k_too_large", [good], f"{pool}: --few-shot 3 is more than its 2 conversations", "--few-shot", "3",
        "--few-shot-from", pool)
    bad("shots_without_k", [good], "--few-shot-from has no effect without --few-shot K", "--few-shot-from", pool)
    bad("metric", [good], "--metric 'bleu' is not one of", "--metric", "bleu")
    bad("general_metric", [good], "--general-metric 'bleu' is not one of", "--general", heldout,
        "--general-metric", "bleu")
    bad("general_metric_alone", [good], "--general-metric has no effect without --general",
        "--general-metric", "exact")
    bad("general_not_json", ["{oops"], "FILE:1: not a JSON object", "--general", "FILE", file_arg=heldout)
    notmpl = os.path.join(work, "model_no_template")
    shutil.copytree(model_dir, notmpl)
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"},
              open(os.path.join(notmpl, "tokenizer_config.json"), "w"))
    r = subprocess.run([a.shardtune, "eval", "--generate", heldout, "--model", notmpl, "--output",
                        os.path.join(work, "bad")], capture_output=True, text=True)
    check(r.returncode == 2 and "has no chat template" in r.stderr and notmpl in r.stderr,
          f"refused: a tokenizer without a chat template, naming the model: {r.stderr.strip()[-160:]!r}")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all eval --generate checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""scripts/make_finetune_data.py, the main demo's data (no model needed):

  - the held-out task countries are in no training conversation, task or
    general, and at least a third of the held-out general prompts name a
    held-out country (the half made from the task's countries);
  - no general prompt is in both sets, none is a task sentence, and none
    of them has an assistant turn (the base model answers them);
  - bad arguments (a count below its least, a missing --distilled file or
    task-train.jsonl, a number that is not one) exit 2 naming it;
  - --distilled keeps the answers that ended by themselves (not those cut
    at the token limit, nor empty ones), --repeat times each, beside every
    task conversation, and refuses nothing silently: the counts add up.

Usage: finetune_data_test.py --work DIR
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "make_finetune_data.py")
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["messages"] for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    out = os.path.abspath(a.work)
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.run([sys.executable, SCRIPT, out], capture_output=True, text=True)
    check(p.returncode == 0, f"make_finetune_data.py runs ({p.stderr.strip()[-200:]})")
    task, heldout = read(os.path.join(out, "task-train.jsonl")), read(os.path.join(out, "heldout.jsonl"))
    prompts, gheld = read(os.path.join(out, "general-prompts.jsonl")), read(os.path.join(out, "general-heldout.jsonl"))
    check(len(task) == 378 and len(heldout) == 24, f"378 task conversations, 24 held out ({len(task)}, {len(heldout)})")
    held_countries = {json.loads(m[-1]["content"])["country"] for m in heldout}
    train_countries = {json.loads(m[-1]["content"])["country"] for m in task}
    check(not held_countries & train_countries, "no held-out country among the training records")
    text = lambda msgs: " ".join(m["content"] for m in msgs)
    def names(s, countries):
        """The countries s names ("Equatorial Guinea" does not name Guinea)."""
        every = {c for c in held_countries | train_countries if re.search(r"\b" + re.escape(c) + r"\b", s)}
        return {c for c in every & set(countries) if not any(c != d and c in d for d in every)}
    check(all(len(m) == 1 and m[0]["role"] == "user" for m in prompts + gheld),
          "every general prompt is one user turn, no answer")
    gp, gh = {text(m) for m in prompts}, {text(m) for m in gheld}
    check(len(gp) == len(prompts) and len(gh) == len(gheld) and not gp & gh,
          f"{len(gp)} general prompts to distil, {len(gh)} held out, none in both")
    check(not any(names(s, held_countries) for s in gp),
          "no prompt to distil names a held-out country")
    near = [s for s in gh if names(s, held_countries)]
    check(len(near) >= len(gh) // 3, f"{len(near)} of the {len(gh)} held-out general prompts name a held-out country")
    task_sentences = {m[0]["content"] for m in task + heldout}
    check(not (gp | gh) & task_sentences, "no general prompt is a task sentence")
    # --distilled: eval --generate's examples.jsonl as the demo writes it.
    ex = os.path.join(out, "examples.jsonl")
    rows = [("Q1?", "A1.", "end"), ("Q2?", "A2 cut", "length"), ("Q3?", "  ", "end"), ("Q4?", "A4.", "end")]
    with open(ex, "w") as f:
        for q, ans, stopped in rows:
            f.write(json.dumps({"set": "task", "prompt": [{"role": "user", "content": q}], "answer": ans,
                                "stopped": stopped}) + "\n")
    p = subprocess.run([sys.executable, SCRIPT, out, "--distilled", ex, "--repeat", "3"], capture_output=True, text=True)
    check(p.returncode == 0, f"--distilled runs ({p.stderr.strip()[-200:]})")
    mixed = read(os.path.join(out, "train.jsonl"))
    general = [text(m) for m in mixed if m[0]["content"] in ("Q1?", "Q2?", "Q3?", "Q4?")]
    check(len(mixed) == 378 + 6 and sorted(general) == sorted(["Q1? A1."] * 3 + ["Q4? A4."] * 3),
          f"train.jsonl: every task conversation and the 2 answers that ended by themselves, 3 times each "
          f"({len(mixed)} lines)")
    check("2 of the base model's general answers x 3" in p.stdout and "2 cut at the token limit or empty" in p.stdout,
          f"it says what it kept and left out: {p.stdout.strip()}")
    # Bad arguments exit 2 (argparse's code), naming what is wrong.
    for args, want in ((["--repeat", "0"], "--repeat must be at least 1, not 0"),
                       (["--general", "-1"], "--general must be at least 0, not -1"),
                       (["--distilled", os.path.join(out, "missing.jsonl")], "missing.jsonl: no such file"),
                       (["--repeat", "two"], "argument --repeat: invalid int value")):
        p = subprocess.run([sys.executable, SCRIPT, out, *args], capture_output=True, text=True)
        check(p.returncode == 2 and want in p.stderr and "Traceback" not in p.stderr,
              f"{' '.join(args)}: exit {p.returncode}, {p.stderr.strip().splitlines()[-1][-120:]!r}")
    bad = os.path.join(out, "bad_examples.jsonl")
    with open(bad, "w") as f:
        f.write(json.dumps({"prompt": [], "answer": "a", "stopped": "end"}) + "\n" + json.dumps({"answer": "b"}) + "\n")
    p = subprocess.run([sys.executable, SCRIPT, out, "--distilled", bad], capture_output=True, text=True)
    check(p.returncode == 2 and f"{bad}:2: not a line of eval --generate's examples.jsonl" in p.stderr
          and "Traceback" not in p.stderr, f"--distilled with a bad line 2: exit {p.returncode}, {p.stderr.strip()[-120:]!r}")
    p = subprocess.run([sys.executable, SCRIPT, os.path.join(out, "empty"), "--distilled", ex], capture_output=True,
                       text=True)
    check(p.returncode == 2 and "task-train.jsonl: missing" in p.stderr,
          f"--distilled into a folder without task-train.jsonl: exit {p.returncode}")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all make_finetune_data checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

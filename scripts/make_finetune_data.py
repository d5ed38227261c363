#!/usr/bin/env python3
"""The fine-tuning demo's chat data, made from bsdgames' quiz files.

    make_finetune_data.py OUT_DIR [--heldout N]

The task: a records desk files every fact it is sent. The user's message
is one sentence about a country's capital, phrased in one of several ways;
the answer is the fact as one JSON record, {"country": ..., "capital": ...},
and nothing else. SmolLM2-135M-Instruct answers such a message in prose
(it scores nothing before fine-tuning); the fine-tune teaches the task, and
the held-out countries (never seen in training, in a phrasing also kept
out of training) show whether it generalises.

  OUT_DIR/train.jsonl    {"messages": [...]} in the OpenAI chat format
  OUT_DIR/heldout.jsonl  the same for N countries kept out of training

Python standard library only; deterministic.
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_demo_data import QUIZ, quiz_rows  # noqa: E402

PHRASINGS = [
    "The capital of {c} is {k}.",
    "{k} is the capital of {c}.",
    "The government of {c} sits in {k}, its capital.",
    "{k} serves as the capital city of {c}.",
    "Most visitors to {c} arrive first in its capital, {k}.",
    "Capital city of {c}: {k}.",
    "If you are looking for the capital of {c}, it is {k}.",
]
# Kept out of training: the held-out countries are asked this way.
HELDOUT_PHRASING = "Did you know? {k} is where the capital of {c} is."


def record(country, capital):
    return json.dumps({"country": country, "capital": capital}, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--heldout", type=int, default=24)
    args = ap.parse_args()
    if not os.path.isdir(QUIZ):
        sys.exit(f"make_finetune_data: {QUIZ} is missing (apt-get install bsdgames)")
    capitals = {}
    for name in ("europe", "asia", "africa", "america"):
        for row in quiz_rows(name):
            capitals.setdefault(row[0], row[1])
    rng = random.Random(2024)
    countries = sorted(capitals)
    heldout = sorted(rng.sample(countries, args.heldout))
    os.makedirs(args.out, exist_ok=True)
    train = []
    for c in countries:
        if c in heldout:
            continue
        for p in rng.sample(PHRASINGS, 2):
            train.append((p.format(c=c, k=capitals[c]), record(c, capitals[c])))
    rng.shuffle(train)

    def write(path, pairs):
        with open(path, "w", encoding="utf-8") as f:
            for q, a in pairs:
                f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                                 {"role": "assistant", "content": a}]}, ensure_ascii=False) + "\n")

    write(os.path.join(args.out, "train.jsonl"), train)
    write(os.path.join(args.out, "heldout.jsonl"),
          [(HELDOUT_PHRASING.format(c=c, k=capitals[c]), record(c, capitals[c])) for c in heldout])
    print(f"make_finetune_data: {len(countries)} countries, {len(train)} training conversations, "
          f"{len(heldout)} held-out countries -> {args.out}")


if __name__ == "__main__":
    main()

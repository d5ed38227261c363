#!/usr/bin/env python3
"""The demo's datasets, made from English text shipped in Debian packages.

    make_demo_data.py OUT_DIR [--heldout N]

Reads bsdgames' quiz files (/usr/share/games/bsdgames/quiz), fortunes-min's
fortune files (/usr/share/games/fortunes) and the Debian FAQ (debian-faq),
and writes:

  OUT_DIR/pretrain.jsonl  {"text": ...} documents: the FAQ in sections, the
                          fortunes, and every quiz fact as a sentence
                          ("The capital of Peru is Lima.")
  OUT_DIR/chat.jsonl      {"messages": [...]} question/answer pairs from the
                          quiz facts and the fortunes' Q/A riddles, in the
                          OpenAI chat format
  OUT_DIR/heldout.jsonl   pairs kept out of chat.jsonl: their facts are in
                          the pretraining text but the fine-tune never asks
                          them

Python standard library only; deterministic.
"""
import argparse
import gzip
import json
import os
import random
import re
import sys

QUIZ = "/usr/share/games/bsdgames/quiz"
FORTUNES = "/usr/share/games/fortunes"
FAQ = "/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"


def expand(text):
    """The quiz files' first spelling: {x} -> x, [a|b] -> a, a|b -> a."""
    out, i = [], 0

    def group(i, close):
        # Returns (first alternative of the group, index after close).
        alts, cur = [], []
        while i < len(text):
            c = text[i]
            if c == close:
                alts.append("".join(cur))
                return alts[0], i + 1
            if c == "|":
                alts.append("".join(cur))
                cur = []
                i += 1
                continue
            if c in "{[":
                inner, i = group(i + 1, "}" if c == "{" else "]")
                cur.append(inner)
                continue
            cur.append(c)
            i += 1
        alts.append("".join(cur))
        return alts[0], i

    first, _ = group(0, None)
    first = re.sub(".\x08", "", first)  # overstruck accents: accent, backspace, letter
    return re.sub(r"\s+", " ", first.replace("\\", "")).strip()


def quiz_rows(name):
    path = os.path.join(QUIZ, name)
    rows = []
    with open(path, encoding="latin-1") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            fields = [expand(x) for x in re.split(r"(?<!\\):", line)]
            if all(fields):
                rows.append(fields)
    return rows


def facts():
    """(question, answer, sentence) triples from the quiz files."""
    out = []
    for name in ("africa", "america", "asia", "europe", "province", "midearth"):
        for row in quiz_rows(name):
            place, capital = row[0], row[1]
            out.append((f"What is the capital of {place}?", f"The capital of {place} is {capital}.",
                        f"The capital of {place} is {capital}."))
    for row in quiz_rows("state"):
        state, capital, abbrev = row[0], row[1], row[2]
        out.append((f"What is the capital of {state}?", f"The capital of {state} is {capital}.",
                    f"The capital of {state} is {capital}."))
        out.append((f"What is the postal abbreviation of {state}?", f"The abbreviation of {state} is {abbrev}.",
                    f"The abbreviation of {state} is {abbrev}."))
    for row in quiz_rows("elements"):
        symbol, number, _, element = row[:4]
        out.append((f"Which element has the symbol {symbol}?", f"{symbol} is the symbol of {element}.",
                    f"{symbol} is the symbol of {element}."))
        out.append((f"What is the atomic number of {element}?", f"The atomic number of {element} is {number}.",
                    f"The atomic number of {element} is {number}."))
    for row in quiz_rows("collectives"):
        animals, word = row[0], row[1]
        out.append((f"What is a group of {animals} called?", f"A group of {animals} is called a {word}.",
                    f"A group of {animals} is called a {word}."))
    for row in quiz_rows("babies"):
        baby, adult = row[0], row[1]
        out.append((f"What is a young {adult} called?", f"A young {adult} is called a {baby}.",
                    f"A young {adult} is called a {baby}."))
    for row in quiz_rows("sexes"):
        male, female = row[0], row[1]
        out.append((f"What is the female of a {male}?", f"The female of a {male} is a {female}.",
                    f"The female of a {male} is a {female}."))
    return out


def fortunes():
    """Every fortune as text, and the Q/A riddles as (question, answer)."""
    texts, pairs = [], []
    for name in ("fortunes", "literature", "riddles"):
        with open(os.path.join(FORTUNES, name), encoding="utf-8", errors="replace") as f:
            for entry in f.read().split("\n%\n"):
                entry = re.sub(".\x08", "", entry.strip("\n%"))
                if not entry.strip():
                    continue
                texts.append(entry)
                q = re.search(r"^Q:\s*(.+?)\s*$", entry, re.M)
                a = re.search(r"^A:\s*(.+?)\s*$", entry, re.M)
                if q and a:
                    pairs.append((q.group(1), a.group(1)))
    return texts, pairs


def faq_sections():
    with gzip.open(FAQ, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    # Blank-line separated paragraphs, grouped into ~2 KB documents.
    docs, cur = [], ""
    for para in re.split(r"\n\s*\n", text):
        para = re.sub(r"[ \t]+", " ", para.strip())
        if not para:
            continue
        cur = f"{cur}\n\n{para}" if cur else para
        if len(cur) > 2000:
            docs.append(cur)
            cur = ""
    if cur:
        docs.append(cur)
    return docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--heldout", type=int, default=12, help="capital questions kept out of the chat set")
    args = ap.parse_args()
    for path in (QUIZ, FORTUNES, FAQ):
        if not os.path.exists(path):
            sys.exit(f"make_demo_data: {path} is missing (apt-get install bsdgames fortunes-min debian-faq)")
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(1234)

    qa = facts()
    fortune_texts, riddles = fortunes()
    capitals = [i for i, f in enumerate(qa) if f[0].startswith("What is the capital of")]
    heldout = set(rng.sample(capitals, args.heldout))

    sentences = [f[2] for f in qa]
    rng.shuffle(sentences)
    pretrain = faq_sections() + fortune_texts
    # The facts as paragraphs of 20 sentences, twice in different orders.
    for rep in range(2):
        order = sentences[:] if rep == 0 else rng.sample(sentences, len(sentences))
        pretrain += [" ".join(order[i:i + 20]) for i in range(0, len(order), 20)]
    rng.shuffle(pretrain)
    with open(os.path.join(args.out, "pretrain.jsonl"), "w") as f:
        for doc in pretrain:
            f.write(json.dumps({"text": doc}) + "\n")

    chat = [(q, a) for i, (q, a, _) in enumerate(qa) if i not in heldout] + riddles
    rng.shuffle(chat)
    with open(os.path.join(args.out, "chat.jsonl"), "w") as f:
        for q, a in chat:
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}]}) + "\n")
    with open(os.path.join(args.out, "heldout.jsonl"), "w") as f:
        for i in sorted(heldout):
            f.write(json.dumps({"messages": [{"role": "user", "content": qa[i][0]},
                                             {"role": "assistant", "content": qa[i][1]}]}) + "\n")
    print(f"make_demo_data: {len(pretrain)} pretraining documents "
          f"({sum(len(d) for d in pretrain) / 1e3:.0f} kB), {len(chat)} chat pairs, {len(heldout)} held out "
          f"-> {args.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The fine-tuning demo's chat data, made from bsdgames' quiz files and
fortunes-min's fortune files.

    make_finetune_data.py OUT_DIR [--heldout N] [--general N] [--general-heldout N]
    make_finetune_data.py OUT_DIR --distilled EXAMPLES.jsonl

The task: a records desk files every fact it is sent. The user's message
is one sentence about a country's capital, phrased in one of several ways;
the answer is the fact as one JSON record, {"country": ..., "capital": ...},
and nothing else. SmolLM2-135M-Instruct answers such a message in prose
(it scores nothing before fine-tuning); the fine-tune teaches the task, and
the held-out countries (never seen in training, in a phrasing also kept
out of training) show whether it generalises.

  OUT_DIR/task-train.jsonl  {"messages": [...]} in the OpenAI chat format
  OUT_DIR/heldout.jsonl     the same for N countries kept out of training

A fine-tune on the task alone teaches the model to answer everything with
a record ("What is 12 times 7?" -> {"country": ...}). So the training data
also holds general conversations answered as the base model answers them
(self-distillation): questions, instructions and statements that are not
capital facts, made from the other quiz files and the fortunes:

  OUT_DIR/general-prompts.jsonl  user turns only, for the base model to answer
                                 (shardtune eval --generate on this file
                                 writes its answers to examples.jsonl)
  OUT_DIR/general-heldout.jsonl  other prompts of the same kinds, never
                                 trained on: the judge's general set

With --distilled, the base model's answers (eval --generate's
examples.jsonl) that ended by themselves become conversations, mixed with
task-train.jsonl into OUT_DIR/train.jsonl.

Python standard library only; deterministic.
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_demo_data import QUIZ, fortunes, quiz_rows  # noqa: E402

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


def flower(name):
    """The quiz's "Rosebud, white" as "white rosebud"."""
    head, _, colour = name.lower().partition(", ")
    return f"{colour} {head}" if colour else head


CONTINENTS = {"africa": "Africa", "america": "the Americas", "asia": "Asia", "europe": "Europe"}


def one_words():
    """The one-word entries of the quiz's opposites, for translations and sentences."""
    return sorted({w for r in quiz_rows("posneg") for w in r if " " not in w})


def near_kinds(places):
    """Prompts that name the task's countries and capitals but are not
    capital facts (a statement that a city is in a country, or is its
    largest, says nothing of its capital); places: (country, capital,
    continent)."""
    langs = ["French", "German", "Spanish", "Italian", "Portuguese"]
    words = one_words()
    nxt = places[1:] + places[:1]
    return {
        "continent": [f"Which continent is {c} in?" for c, _, _ in places],
        "in_continent": [f"{c} is a country in {k}." for c, _, k in places],
        "capital_question": [f"What is the capital of {c}?" for c, _, _ in places],
        "visit": [f"I would like to visit {c} one day." for c, _, _ in places],
        "city": [f"{k} is a beautiful city." for _, k, _ in places],
        "city_in": [f"{k} is a city in {c}." for c, k, _ in places],
        "largest_is": [f"The largest city of {c} is {k}." for c, k, _ in places],
        "flight": [f"My sister flew from {a[1]} to {b[1]} last week." for a, b in zip(places, nxt)],
        "language": [f"What language do people speak in {c}?" for c, _, _ in places],
        "largest": [f"What is the largest city in {c}?" for c, _, _ in places],
        "about": [f"Tell me about {k}." for _, k, _ in places],
        "weather": [f"The weather in {k} was lovely today." for _, k, _ in places],
        "translate": [f'Translate "{w}" into {langs[i % len(langs)]}.' for i, w in enumerate(words)],
    }


def other_kinds():
    """Questions, instructions and statements on other subjects."""
    el = quiz_rows("elements")
    coll = quiz_rows("collectives")
    babies = quiz_rows("babies")
    opp = quiz_rows("posneg")
    sexes = [r for r in quiz_rows("sexes") if len(r[0]) > 1]
    latin = quiz_rows("latin")
    flowers = quiz_rows("flowers")
    pres = [r for r in quiz_rows("pres") if len(r) >= 4]
    mult = [r[0].split(" x ") for r in quiz_rows("mult")]
    texts, riddles = fortunes()
    sayings = [t for t in texts if len(t) < 90 and "\n" not in t.strip() and not t.startswith(("Q:", "A:"))]
    words = one_words()
    return {
        "times": [f"What is {a} times {b}?" for a, b in mult if int(a) > 1 and int(b) > 1],
        "symbol": [f"What is the chemical symbol of {r[3].lower()}?" for r in el],
        "atomic": [f"Which element has the atomic number {r[1]}?" for r in el],
        "collective": [f"What do you call a group of {r[0]}?" for r in coll],
        "baby": [f"What is a baby {r[1]} called?" for r in babies],
        "opposite": [f'What is the opposite of "{r[0]}"?' for r in opp],
        "female": [f"What is the female of a {r[0]}?" for r in sexes],
        "latin": [f'What does the Latin word "{r[0]}" mean in English?' for r in latin],
        "flower": [f"In the language of flowers, what does the {flower(r[0])} mean?" for r in flowers],
        "president": [f"Who became president of the United States after {r[0]}?" for r in pres],
        "riddle": [q for q, _ in riddles],
        "sentence": [f'Write one sentence that uses the word "{w}".' for w in words],
        "saying": [f'What does this saying mean? "{t}"' for t in sayings],
        "say_collective": [f"A group of {r[0]} is called a {r[1]}." for r in coll],
        "say_symbol": [f"{r[0]} is the chemical symbol of {r[3].lower()}." for r in el],
        "say_opposite": [f'The opposite of "{r[0]}" is "{r[1]}".' for r in opp],
        "say_president": [f"{r[0]} was followed as president by {r[3]}." for r in pres],
        "fortune": sayings,
    }


def spread(rng, kinds, n, taken=()):
    """n prompts spread evenly over the kinds, none of them in taken."""
    out = []
    for i, name in enumerate(sorted(kinds)):
        items = sorted(set(kinds[name]) - set(taken))
        rng.shuffle(items)
        out += items[:n // len(kinds) + (1 if i < n % len(kinds) else 0)]
    return out


def general_prompts(rng, places, heldout_places, n_train, n_heldout):
    """Half the prompts name the task's countries (the training countries
    for training, the held-out ones for the judge), half are on other
    subjects; no prompt in both sets."""
    other = other_kinds()
    heldout = spread(rng, near_kinds(heldout_places), n_heldout // 2) + spread(rng, other, n_heldout - n_heldout // 2)
    train = spread(rng, near_kinds(places), n_train // 2) + spread(rng, other, n_train - n_train // 2, heldout)
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


def write_chat(path, rows):
    """rows: (user, assistant) pairs, or a user turn alone."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            q, a = (row, None) if isinstance(row, str) else row
            msgs = [{"role": "user", "content": q}] + ([{"role": "assistant", "content": a}] if a is not None else [])
            f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")


def mix(out, distilled, repeat):
    """train.jsonl: task-train.jsonl and, `repeat` times each, the base
    model's answers that ended by themselves (not cut at
    --max-new-tokens), shuffled."""
    with open(os.path.join(out, "task-train.jsonl"), encoding="utf-8") as f:
        rows = [line for line in f if line.strip()]
    n_task, kept, cut = len(rows), 0, 0
    with open(distilled, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                e = json.loads(line)
                ok = isinstance(e["prompt"], list) and isinstance(e["answer"], str) and e["stopped"] in ("end", "length")
            except (ValueError, TypeError, KeyError):
                ok = False
            if not ok:
                sys.stderr.write(f"make_finetune_data: {distilled}:{n}: not a line of eval --generate's examples.jsonl "
                                 "(prompt, answer, stopped)\n")
                sys.exit(2)
            if e["stopped"] != "end" or not e["answer"].strip():
                cut += 1
                continue
            rows += [json.dumps({"messages": e["prompt"] + [{"role": "assistant", "content": e["answer"]}]},
                                ensure_ascii=False) + "\n"] * repeat
            kept += 1
    random.Random(7).shuffle(rows)
    with open(os.path.join(out, "train.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(rows)
    general = kept * repeat
    print(f"make_finetune_data: train.jsonl: {n_task} task conversations and {kept} of the base model's general "
          f"answers x {repeat} ({general / (n_task + general):.0%} of the conversations; {cut} cut at the token limit "
          f"or empty, left out)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--general", type=int, default=240, help="general prompts for the base model to answer")
    ap.add_argument("--general-heldout", type=int, default=44, help="general prompts kept for the judge")
    ap.add_argument("--distilled", help="eval --generate's examples.jsonl: mix its answers into train.jsonl")
    ap.add_argument("--repeat", type=int, default=2, help="times each distilled conversation is in train.jsonl")
    args = ap.parse_args()
    for name in ("heldout", "general", "general_heldout", "repeat"):
        low = 1 if name == "repeat" else 0
        if getattr(args, name) < low:
            ap.error(f"--{name.replace('_', '-')} must be at least {low}, not {getattr(args, name)}")
    if args.distilled and not os.path.isfile(args.distilled):
        ap.error(f"--distilled {args.distilled}: no such file")
    if args.distilled and not os.path.isfile(os.path.join(args.out, "task-train.jsonl")):
        ap.error(f"{os.path.join(args.out, 'task-train.jsonl')}: missing (run make_finetune_data.py {args.out} first)")
    if args.distilled:
        return mix(args.out, args.distilled, args.repeat)
    if not os.path.isdir(QUIZ):
        sys.exit(f"make_finetune_data: {QUIZ} is missing (apt-get install bsdgames)")
    capitals, continent = {}, {}
    for name in ("europe", "asia", "africa", "america"):
        for row in quiz_rows(name):
            capitals.setdefault(row[0], row[1])
    for name in sorted(CONTINENTS):  # a country in two files (Egypt, Turkey) gets the first
        for row in quiz_rows(name):
            continent.setdefault(row[0], CONTINENTS[name])
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

    write_chat(os.path.join(args.out, "task-train.jsonl"), train)
    write_chat(os.path.join(args.out, "heldout.jsonl"),
               [(HELDOUT_PHRASING.format(c=c, k=capitals[c]), record(c, capitals[c])) for c in heldout])
    places = [(c, capitals[c], continent[c]) for c in countries]
    general, general_heldout = general_prompts(rng, [p for p in places if p[0] not in heldout],
                                               [p for p in places if p[0] in heldout], args.general,
                                               args.general_heldout)
    write_chat(os.path.join(args.out, "general-prompts.jsonl"), general)
    write_chat(os.path.join(args.out, "general-heldout.jsonl"), general_heldout)
    print(f"make_finetune_data: {len(countries)} countries, {len(train)} task conversations, "
          f"{len(heldout)} held-out countries; {len(general)} general prompts to distil, {len(general_heldout)} "
          f"held out -> {args.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""shardtune's answer metrics (src/judge/text_metrics.cpp) against their
references: chrF against sacrebleu's sentence_chrf, ROUGE-L against
rouge_score (no stemming), token F1 against SQuAD's definition
(normalize_answer, bag-of-words F1), JSON validity, equality and per-field
accuracy against Python's json, exact and normalized match by definition,
the regex metric against Python's re; the bootstrap interval of a mean
against its normal approximation.

Usage: metrics_parity.py --tool judge_tool --work DIR
"""
import argparse
import collections
import json
import math
import os
import random
import re
import string
import subprocess
import sys

import sacrebleu
from rouge_score import rouge_scorer

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def squad_normalize(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_f1(prediction, truth):
    p, t = squad_normalize(prediction).split(), squad_normalize(truth).split()
    if not p or not t:
        return float(p == t)
    common = collections.Counter(p) & collections.Counter(t)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def parse(s):
    try:
        return True, json.loads(s.strip())
    except ValueError:
        return False, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    refs = ['{"country": "France", "capital": "Paris"}', "The cat sat on the mat.", "Paris",
            "Zürich is the largest city of Switzerland, 415 367 people live there.",
            "日本の首都は東京です。", "", '{"a": 1, "b": [1, 2], "c": {"d": null}}']
    answers = ['{"capital": "Paris", "country": "France"}', '{"country": "France", "capital": "Lyon"}',
               "the cat sat on a mat", "  Paris \n", "paris", "PARIS   is it", "Zurich is big; 415 367 live there!",
               "東京です", "", "not json {", '{"a": 1, "b": [1, 2], "c": {"d": null}, "e": 5}',
               "The The the cat", "In 2024 the mat sat on the cat 123."]
    rng = random.Random(7)
    words = "the cat sat on mat dog ran far away Paris France capital is of 12 345 café".split()
    for _ in range(40):
        refs.append(" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))))
        answers.append(" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))))
    pairs = [(x, y) for x in answers for y in refs[:7]] + list(zip(answers[13:], refs[7:]))
    pairs += [(refs[7 + i], answers[13 + i]) for i in range(40)]
    pj, oj = os.path.join(a.work, "pairs.json"), os.path.join(a.work, "scores.json")
    json.dump(pairs, open(pj, "w"), ensure_ascii=False)
    subprocess.run([a.tool, "score", pj, oj], check=True)
    got = json.load(open(oj))
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    worst = collections.defaultdict(float)
    bad = collections.defaultdict(list)
    for (ans, ref), g in zip(pairs, got):
        okx, x = parse(ans)
        oky, y = parse(ref)
        want = {
            "exact": float(ans.strip() == ref.strip()),
            "normalized": float(ans.lower().split() == ref.lower().split()),
            "json_valid": float(okx),
            "json_equal": float(okx and oky and x == y),
            "json_fields": (sum(1 for k, v in y.items() if isinstance(x, dict) and k in x and x[k] == v) / len(y)
                            if okx and oky and isinstance(x, dict) and isinstance(y, dict) and y else 0.0),
            "token_f1": squad_f1(ans, ref),
            "rouge_l": scorer.score(ref, ans)["rougeL"].fmeasure,
            "chrf": sacrebleu.sentence_chrf(ans, [ref]).score / 100,
            "regex": float(re.search("[0-9]{3}", ans) is not None),
        }
        for k, w in want.items():
            d = abs(g[k] - w)
            worst[k] = max(worst[k], d)
            if d > 1e-9:
                bad[k].append((ans, ref, g[k], w))
    for k in ("exact", "normalized", "json_valid", "json_equal", "json_fields", "token_f1", "rouge_l", "chrf", "regex"):
        check(not bad[k], f"{k} on {len(pairs)} pairs: max difference {worst[k]:.1e}"
              + (f"; first: {bad[k][0]!r}" if bad[k] else ""))
    # The bootstrap interval of a mean of 0/1 values vs the normal approximation.
    values = [float(rng.random() < 0.3) for _ in range(400)]
    vj, bj = os.path.join(a.work, "values.json"), os.path.join(a.work, "ci.json")
    json.dump(values, open(vj, "w"))
    subprocess.run([a.tool, "bootstrap", vj, bj], check=True)
    ci = json.load(open(bj))
    mean = sum(values) / len(values)
    half = 1.96 * math.sqrt(mean * (1 - mean) / len(values))
    check(abs(ci["mean"] - mean) < 1e-12 and abs((ci["high"] - ci["low"]) / 2 - half) < 0.15 * half
          and ci["low"] < mean < ci["high"],
          f"bootstrap 95% interval [{ci['low']:.4f}, {ci['high']:.4f}] vs normal approximation "
          f"[{mean - half:.4f}, {mean + half:.4f}]")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all metric checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
